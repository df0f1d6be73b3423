// The CAM methods over one batch of images and its features pass (the C++ side of
// unioncam_rt/method/cams.py). Each returns feature-resolution maps; `finalize` in
// explainer.cpp upsamples and normalises them.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "cam_math.hpp"
#include "scoring.hpp"
#include "unioncam/unioncam.hpp"

namespace unioncam::detail {

/// Outputs of the features graph for a batch of B images.
struct FeatureBatch {
  int batch = 0;
  int num_classes = 0;
  std::array<int, 3> shape{};          // K, h, w
  std::vector<float> logits;           // B * C
  std::vector<float> activations;      // B * K * h * w
  std::vector<float> gradients;        // B * K * h * w
  std::vector<std::int64_t> classes;   // resolved class per image

  std::size_t plane() const { return std::size_t(shape[1]) * shape[2]; }
  ChannelMaps activations_of(int b) const;
  ChannelMaps gradients_of(int b) const;
};

struct MethodContext {
  const FeatureBatch& features;
  ScoringBatch scoring;
  double theta;
  Budget budget;
};

struct MethodResult {
  std::vector<std::vector<double>> maps;       // B maps of h*w
  std::vector<std::optional<UnionParts>> parts;  // UnionCAM's, per image
};

/// Score-CAM region maps ReLU(sum_k w_k A_k), w_k = `region_weights`.
std::vector<std::vector<double>> region_maps(MethodContext& ctx);

/// Channel weights of every image's region map under `ctx.budget` (Python's
/// `region_weights`): s_k = p_c(I * up(minmax(A_k))) for the channels `select_channels`
/// picks (all images' masks scored in one call), 0 for constant channels (no pass), the
/// budget's fill for the live channels left out (the `group` fill's masks scored in a
/// second call).
std::vector<std::vector<double>> region_weights(MethodContext& ctx);

/// score(L) = p_c(I * up(minmax(L))) - black_probs[c]; `maps[i]` belongs to image
/// `image_of[i]`. All maps are scored in one `score_masks` call.
std::vector<double> map_scores(MethodContext& ctx, const std::vector<std::vector<double>>& maps,
                               const std::vector<int>& image_of);

MethodResult gradcam(MethodContext& ctx);
MethodResult scorecam(MethodContext& ctx);
/// UnionCAM: denoise, region, beta-weighted union, selection.
MethodResult unioncam(MethodContext& ctx);

MethodResult run_method(Method method, MethodContext& ctx);

}  // namespace unioncam::detail
