#include "union_steps.hpp"

#include <algorithm>

#include "cam_math.hpp"

namespace unioncam::detail {

std::pair<double, double> fusion_weights(double beta_denoise, double beta_region) {
  const double b_d = std::max(beta_denoise, 0.0);
  const double b_r = std::max(beta_region, 0.0);
  if (b_d == 0.0 && b_r == 0.0) return {1.0, 1.0};
  return {b_d, b_r};
}

std::vector<double> fuse(const std::vector<double>& denoise, const std::vector<double>& region,
                         double beta_denoise, double beta_region) {
  const auto [b_d, b_r] = fusion_weights(beta_denoise, beta_region);
  const std::vector<double> d = minmax(denoise);
  const std::vector<double> r = minmax(region);
  std::vector<double> combined(d.size());
  for (std::size_t i = 0; i < d.size(); ++i) combined[i] = b_d * d[i] + b_r * r[i];
  return minmax(combined);
}

bool choose_fused(double beta_fused, double beta_region) { return beta_fused > beta_region; }

}  // namespace unioncam::detail
