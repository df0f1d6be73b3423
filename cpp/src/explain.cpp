// Engine::explain: one features pass for the batch, the method (masked passes shared by all
// images), then the final upsample and normalisation of each map.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "cam_math.hpp"
#include "engine_impl.hpp"
#include "methods.hpp"

namespace unioncam {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void check_options(const ExplainOptions& options, std::size_t num_classes) {
  if (!(options.theta >= 0.0 && options.theta <= 100.0)) {
    throw OptionError("theta " + std::to_string(options.theta) + " must be a percentile in [0, 100]");
  }
  if (options.batch_size < 1) throw OptionError("batch size must be at least 1, got " + std::to_string(options.batch_size));
  check_budget(options.budget);
  if (options.class_index < -1 || options.class_index >= static_cast<long long>(num_classes)) {
    throw OptionError("class index " + std::to_string(options.class_index) + " out of range; this model has classes 0.." +
                      std::to_string(num_classes - 1));
  }
}

// The chosen map upsampled to the input size and min-max normalised once; constant -> zeros.
void finalize(const std::vector<double>& map, const std::array<int, 3>& shape, int height, int width,
              Explanation& out) {
  const std::vector<double> up = detail::resize_bilinear(map, shape[1], shape[2], height, width);
  out.constant_map = detail::is_constant(up.data(), up.size());
  const std::vector<double> normalised = detail::minmax(up);
  out.cam.resize(normalised.size());
  std::transform(normalised.begin(), normalised.end(), out.cam.begin(), [](double v) { return static_cast<float>(v); });
  out.height = height;
  out.width = width;
}

std::vector<ClassScore> top5(const std::vector<double>& probs, const std::vector<std::string>& names) {
  std::vector<int> order(probs.size());
  std::iota(order.begin(), order.end(), 0);
  const std::size_t n = std::min<std::size_t>(5, order.size());
  std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int a, int b) {
    return probs[a] != probs[b] ? probs[a] > probs[b] : a < b;
  });
  std::vector<ClassScore> out;
  for (std::size_t i = 0; i < n; ++i) out.push_back({order[i], names[order[i]], probs[order[i]]});
  return out;
}

}  // namespace

std::vector<Explanation> Engine::explain(const std::vector<RgbImage>& images, const ExplainOptions& options) const {
  std::vector<FloatImage> prepared;
  prepared.reserve(images.size());
  for (const RgbImage& image : images) prepared.push_back(prepare(image));
  return explain(prepared, options);
}

std::vector<Explanation> Engine::explain(const std::vector<FloatImage>& images, const ExplainOptions& options) const {
  const detail::Manifest& manifest = impl_->manifest;
  check_options(options, manifest.class_names.size());
  if (images.empty()) return {};
  const auto [height, width] = manifest.input_size;
  const std::size_t image_floats = 3 * std::size_t(height) * width;
  std::vector<float> batch;
  batch.reserve(images.size() * image_floats);
  for (std::size_t i = 0; i < images.size(); ++i) {
    const FloatImage& image = images[i];
    if (image.height != height || image.width != width || image.chw.size() != image_floats) {
      throw ImageError("image " + std::to_string(i) + " is " + std::to_string(image.width) + "x" +
                       std::to_string(image.height) + " with " + std::to_string(image.chw.size()) +
                       " floats; this engine takes 3x" + std::to_string(height) + "x" + std::to_string(width) +
                       " CHW floats (use Engine::prepare for other sizes)");
    }
    batch.insert(batch.end(), image.chw.begin(), image.chw.end());
  }
  const int count = static_cast<int>(images.size());
  const std::vector<std::int64_t> classes(count, options.class_index);

  auto started = Clock::now();
  const detail::FeatureBatch features = impl_->graphs.features(batch.data(), count, classes.data());
  const double features_s = seconds_since(started);

  started = Clock::now();
  std::vector<int> passes(count, 0);
  detail::MethodContext ctx{features,
                            {impl_->graphs, batch.data(), image_floats, manifest.black_probs, options.batch_size, passes,
                             impl_->graphs.decision_scorer()},
                            options.theta,
                            options.budget};
  detail::MethodResult result = detail::run_method(options.method, ctx);
  std::vector<Explanation> out(count);
  for (int b = 0; b < count; ++b) {
    finalize(result.maps[b], manifest.feature_shape, height, width, out[b]);
  }
  const double method_s = seconds_since(started);

  for (int b = 0; b < count; ++b) {
    Explanation& e = out[b];
    const std::vector<double> probs =
        detail::softmax(features.logits.data() + std::size_t(b) * features.num_classes, features.num_classes);
    e.method = options.method;
    e.class_index = static_cast<int>(features.classes[b]);
    e.class_name = manifest.class_names[e.class_index];
    e.probability = probs[e.class_index];
    e.top5 = top5(probs, manifest.class_names);
    e.masked_passes = passes[b];
    e.union_parts = std::move(result.parts[b]);
    e.timings = {features_s / count, method_s / count};
  }
  return out;
}

}  // namespace unioncam
