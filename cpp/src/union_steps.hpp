// UnionCAM's fusion and selection as plain functions (method statement, sections 2-3;
// unioncam_rt/method/union.py). Maps are h*w at feature resolution.
#pragma once

#include <utility>
#include <vector>

namespace unioncam::detail {

inline constexpr const char* kFused = "fused";
inline constexpr const char* kRegion = "region";

/// b = max(beta, 0); where both are 0, equal weights (1, 1). [choice] A negative beta
/// would invert its map.
std::pair<double, double> fusion_weights(double beta_denoise, double beta_region);

/// L_fused = minmax(b_d * minmax(L_denoise) + b_r * minmax(L_region)).
std::vector<double> fuse(const std::vector<double>& denoise, const std::vector<double>& region,
                         double beta_denoise, double beta_region);

/// Activation Map Selection: the fused map wins only if beta_fused > beta_region.
bool choose_fused(double beta_fused, double beta_region);

}  // namespace unioncam::detail
