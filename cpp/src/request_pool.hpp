// A pool of OpenVINO infer requests of one compiled model, so that concurrent `explain`
// calls never share a request. A lease returns its request to the pool when destroyed.
#pragma once

#include <mutex>
#include <openvino/runtime/compiled_model.hpp>
#include <openvino/runtime/infer_request.hpp>
#include <vector>

namespace unioncam::detail {

class RequestPool {
 public:
  explicit RequestPool(ov::CompiledModel& model) : model_(model) {}
  RequestPool(const RequestPool&) = delete;
  RequestPool& operator=(const RequestPool&) = delete;

  class Lease {
   public:
    Lease(RequestPool& pool, ov::InferRequest request)
        : pool_(&pool), request_(std::move(request)) {}
    Lease(Lease&& other) noexcept = default;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (pool_ != nullptr && request_) pool_->give_back(std::move(request_));
    }
    ov::InferRequest& operator*() { return request_; }
    ov::InferRequest* operator->() { return &request_; }

   private:
    RequestPool* pool_;
    ov::InferRequest request_;
  };

  /// An idle request, or a new one when all are in use.
  Lease acquire() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!idle_.empty()) {
        ov::InferRequest request = std::move(idle_.back());
        idle_.pop_back();
        return Lease(*this, std::move(request));
      }
    }
    return Lease(*this, model_.create_infer_request());
  }

 private:
  void give_back(ov::InferRequest request) {
    std::lock_guard<std::mutex> lock(mutex_);
    idle_.push_back(std::move(request));
  }

  ov::CompiledModel& model_;
  std::mutex mutex_;
  std::vector<ov::InferRequest> idle_;
};

}  // namespace unioncam::detail
