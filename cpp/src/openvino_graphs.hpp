// The engine directory's two graphs compiled on OpenVINO's CPU plugin:
// features.onnx (logits, activations, gradients) and scores.onnx (masked scoring).
#pragma once

#include <memory>
#include <openvino/runtime/core.hpp>
#include <string>

#include "manifest.hpp"
#include "methods.hpp"
#include "request_pool.hpp"
#include "scoring.hpp"
#include "unioncam/unioncam.hpp"

namespace unioncam::detail {

inline constexpr const char* kFeaturesFile = "features.onnx";
inline constexpr const char* kScoresFile = "scores.onnx";

class OpenVinoGraphs : public MaskScorer {
 public:
  /// Reads both graphs by path (so external weight files resolve beside them) with one
  /// ov::Core, checks their inputs against the manifest, makes the batch axes dynamic if
  /// they are not, and compiles them for the CPU with the requested precision.
  OpenVinoGraphs(const std::string& directory, const Manifest& manifest, const EngineOptions& options);

  /// Runs features.onnx on `batch` images [batch, 3, H, W] with class_index [batch].
  FeatureBatch features(const float* images, int batch, const std::int64_t* class_index) const;

  /// Per-channel masked scoring, in the engine's precision.
  std::vector<float> masked_probs(const float* images, int image_count, const float* masks,
                                  int mask_count, const std::int64_t* image_index,
                                  const std::int64_t* class_index) const override;

  /// The fp32 scorer of UnionCAM's three map scores under bf16 (null under fp32: the
  /// engine's own scorer is fp32). As in the Python runtime, bf16 engines run only the
  /// per-channel passes in bf16; the features pass and the scores that pick the branch stay fp32.
  const MaskScorer* decision_scorer() const { return decision_scorer_.get(); }

 private:
  class PoolScorer;
  std::vector<float> run_scores(RequestPool& pool, const float* images, int image_count, const float* masks,
                                int mask_count, const std::int64_t* image_index,
                                const std::int64_t* class_index) const;

  std::array<int, 2> input_size_;
  std::array<int, 3> feature_shape_;
  int num_classes_;
  ov::Core core_;
  ov::CompiledModel features_model_;
  ov::CompiledModel scores_model_;
  // Pools hand out requests from const methods: they are the engine's mutable state.
  std::unique_ptr<RequestPool> features_pool_;
  std::unique_ptr<RequestPool> scores_pool_;
  ov::CompiledModel decision_model_;             // fp32 scores.onnx, under bf16 only
  std::unique_ptr<RequestPool> decision_pool_;
  std::unique_ptr<MaskScorer> decision_scorer_;
};

}  // namespace unioncam::detail
