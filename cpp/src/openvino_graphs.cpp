#include "openvino_graphs.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <openvino/core/model.hpp>
#include <openvino/runtime/properties.hpp>
#include <set>

namespace unioncam::detail {
namespace fs = std::filesystem;

namespace {

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

std::string shape_text(const ov::PartialShape& shape) { return shape.to_string(); }

// Inputs and outputs each graph must have (names from the README's engine contract).
const std::map<std::string, std::set<std::string>> kInputs = {
    {kFeaturesFile, {"image", "class_index"}},
    {kScoresFile, {"image", "masks", "image_index", "class_index"}},
};
const std::map<std::string, std::set<std::string>> kOutputs = {
    {kFeaturesFile, {"logits", "activations", "gradients", "resolved_class_index"}},
    {kScoresFile, {"probs"}},
};

// Checks port names and makes every input's batch axis dynamic (the contract says it is;
// a graph exported with a fixed batch is reshaped rather than refused).
void prepare_model(ov::Model& model, const std::string& name, const std::string& path) {
  std::set<std::string> inputs, outputs;
  std::map<std::string, ov::PartialShape> reshape;
  for (const auto& port : model.inputs()) {
    inputs.insert(port.get_any_name());
    ov::PartialShape shape = port.get_partial_shape();
    if (shape.rank().is_static() && shape.rank().get_length() >= 1 && shape[0].is_static()) {
      shape[0] = ov::Dimension::dynamic();
      reshape[port.get_any_name()] = shape;
    }
  }
  for (const auto& port : model.outputs()) {
    for (const auto& n : port.get_names()) outputs.insert(n);
  }
  for (const auto& wanted : kInputs.at(name)) {
    if (!inputs.count(wanted)) throw EngineDirError(path + ": no input named '" + wanted + "'; re-export");
  }
  for (const auto& wanted : kOutputs.at(name)) {
    if (!outputs.count(wanted)) throw EngineDirError(path + ": no output named '" + wanted + "'; re-export");
  }
  if (!reshape.empty()) model.reshape(reshape);
}

void check_image_input(const ov::Model& model, const std::string& path, const std::array<int, 2>& size) {
  const ov::PartialShape shape = model.input("image").get_partial_shape();
  const ov::PartialShape wanted{ov::Dimension::dynamic(), 3, size[0], size[1]};
  if (!shape.compatible(wanted)) {
    throw EngineDirError(path + ": input 'image' is " + shape_text(shape) + ", the manifest says [?,3," +
                         std::to_string(size[0]) + "," + std::to_string(size[1]) + "]");
  }
}

ov::CompiledModel compile(ov::Core& core, const std::string& directory, const std::string& name,
                          const Manifest& manifest, const EngineOptions& options, Precision precision) {
  const std::string path = (fs::path(directory) / name).string();
  if (!manifest.files.count(name)) {
    throw EngineDirError(path + ": not listed in the manifest's files; re-export");
  }
  std::shared_ptr<ov::Model> model;
  try {
    model = core.read_model(path);  // by path: ONNX external data resolves beside the file
  } catch (const ov::Exception& exc) {
    throw EngineDirError(path + ": OpenVINO cannot read it (" + first_line(exc.what()) + ")");
  }
  prepare_model(*model, name, path);
  check_image_input(*model, path, manifest.input_size);
  ov::AnyMap config{
      ov::hint::inference_precision(precision == Precision::bf16 ? ov::element::bf16 : ov::element::f32),
      ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY),
  };
  if (options.threads > 0) config.emplace(ov::inference_num_threads(options.threads));
  try {
    return core.compile_model(model, "CPU", config);
  } catch (const ov::Exception& exc) {
    throw InferenceError(path + ": OpenVINO cannot compile it for the CPU (" + first_line(exc.what()) + ")");
  }
}

template <typename T>
ov::Tensor wrap(const T* data, const ov::Shape& shape) {
  return ov::Tensor(ov::element::from<T>(), shape, const_cast<T*>(data));
}

template <typename T>
std::vector<T> copy_out(const ov::Tensor& tensor) {
  const T* data = tensor.data<const T>();
  return std::vector<T>(data, data + tensor.get_size());
}

}  // namespace

/// scores.onnx through one request pool (the fp32 decision scorer of a bf16 engine).
class OpenVinoGraphs::PoolScorer : public MaskScorer {
 public:
  PoolScorer(const OpenVinoGraphs& graphs, RequestPool& pool) : graphs_(graphs), pool_(pool) {}
  std::vector<float> masked_probs(const float* images, int image_count, const float* masks, int mask_count,
                                  const std::int64_t* image_index, const std::int64_t* class_index) const override {
    return graphs_.run_scores(pool_, images, image_count, masks, mask_count, image_index, class_index);
  }

 private:
  const OpenVinoGraphs& graphs_;
  RequestPool& pool_;
};

OpenVinoGraphs::OpenVinoGraphs(const std::string& directory, const Manifest& manifest,
                               const EngineOptions& options)
    : input_size_(manifest.input_size),
      feature_shape_(manifest.feature_shape),
      num_classes_(static_cast<int>(manifest.class_names.size())) {
  if (options.threads < 0) throw OptionError("threads must be 0 (OpenVINO's choice) or positive");
  features_model_ = compile(core_, directory, kFeaturesFile, manifest, options, Precision::fp32);
  scores_model_ = compile(core_, directory, kScoresFile, manifest, options, options.precision);
  features_pool_ = std::make_unique<RequestPool>(features_model_);
  scores_pool_ = std::make_unique<RequestPool>(scores_model_);
  if (options.precision != Precision::fp32) {
    decision_model_ = compile(core_, directory, kScoresFile, manifest, options, Precision::fp32);
    decision_pool_ = std::make_unique<RequestPool>(decision_model_);
    decision_scorer_ = std::make_unique<PoolScorer>(*this, *decision_pool_);
  }
}



FeatureBatch OpenVinoGraphs::features(const float* images, int batch, const std::int64_t* class_index) const {
  const auto [height, width] = input_size_;
  FeatureBatch out;
  out.batch = batch;
  out.num_classes = num_classes_;
  out.shape = feature_shape_;
  try {
    auto request = features_pool_->acquire();
    request->set_tensor("image", wrap(images, {std::size_t(batch), 3, std::size_t(height), std::size_t(width)}));
    request->set_tensor("class_index", wrap(class_index, {std::size_t(batch)}));
    request->infer();
    out.logits = copy_out<float>(request->get_tensor("logits"));
    out.activations = copy_out<float>(request->get_tensor("activations"));
    out.gradients = copy_out<float>(request->get_tensor("gradients"));
    out.classes = copy_out<std::int64_t>(request->get_tensor("resolved_class_index"));
  } catch (const ov::Exception& exc) {
    throw InferenceError(std::string("features graph failed: ") + first_line(exc.what()));
  }
  const std::size_t per_image = std::size_t(feature_shape_[0]) * feature_shape_[1] * feature_shape_[2];
  if (out.logits.size() != std::size_t(batch) * num_classes_ ||
      out.activations.size() != std::size_t(batch) * per_image ||
      out.gradients.size() != out.activations.size() || out.classes.size() != std::size_t(batch)) {
    throw EngineDirError("features.onnx outputs do not match the manifest's class count and feature_shape; re-export");
  }
  for (std::int64_t c : out.classes) {
    if (c < 0 || c >= num_classes_) throw InferenceError("features graph resolved class " + std::to_string(c) + " out of range");
  }
  return out;
}

std::vector<float> OpenVinoGraphs::masked_probs(const float* images, int image_count, const float* masks,
                                                int mask_count, const std::int64_t* image_index,
                                                const std::int64_t* class_index) const {
  return run_scores(*scores_pool_, images, image_count, masks, mask_count, image_index, class_index);
}

std::vector<float> OpenVinoGraphs::run_scores(RequestPool& pool, const float* images, int image_count,
                                              const float* masks, int mask_count, const std::int64_t* image_index,
                                              const std::int64_t* class_index) const {
  const auto [height, width] = input_size_;
  std::vector<float> probs;
  try {
    auto request = pool.acquire();
    request->set_tensor("image", wrap(images, {std::size_t(image_count), 3, std::size_t(height), std::size_t(width)}));
    request->set_tensor("masks", wrap(masks, {std::size_t(mask_count), 1, std::size_t(feature_shape_[1]),
                                              std::size_t(feature_shape_[2])}));
    request->set_tensor("image_index", wrap(image_index, {std::size_t(mask_count)}));
    request->set_tensor("class_index", wrap(class_index, {std::size_t(mask_count)}));
    request->infer();
    probs = copy_out<float>(request->get_tensor("probs"));
  } catch (const ov::Exception& exc) {
    throw InferenceError(std::string("scores graph failed: ") + first_line(exc.what()));
  }
  if (probs.size() != std::size_t(mask_count)) {
    throw EngineDirError("scores.onnx returned " + std::to_string(probs.size()) + " probabilities for " +
                         std::to_string(mask_count) + " masks; re-export");
  }
  return probs;
}

}  // namespace unioncam::detail
