#include "channel_selection.hpp"

#include <algorithm>

namespace unioncam::detail {

double channel_variance(const float* values, std::size_t n) {
  if (n == 0) return 0.0;
  double mean = 0.0;
  for (std::size_t i = 0; i < n; ++i) mean += values[i];
  mean /= double(n);
  double total = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = values[i] - mean;
    total += d * d;
  }
  return total / double(n);
}

ChannelSelection select_channels(const ChannelMaps& activations, int budget) {
  ChannelSelection selection;
  for (int k = 0; k < activations.channels; ++k) {
    if (!is_constant(activations.channel(k), activations.plane())) selection.scored.push_back(k);
  }
  if (budget <= 0 || static_cast<std::size_t>(budget) >= selection.scored.size()) return selection;

  // Budget rule: the `budget` largest variances, ties to the lower channel index.
  std::vector<std::pair<double, int>> ranked;
  ranked.reserve(selection.scored.size());
  for (int k : selection.scored) {
    ranked.emplace_back(channel_variance(activations.channel(k), activations.plane()), k);
  }
  std::partial_sort(ranked.begin(), ranked.begin() + budget, ranked.end(),
                    [](const auto& a, const auto& b) {
                      return a.first != b.first ? a.first > b.first : a.second < b.second;
                    });
  selection.scored.clear();
  for (int i = 0; i < budget; ++i) selection.scored.push_back(ranked[i].second);
  std::sort(selection.scored.begin(), selection.scored.end());
  selection.fill_weight = 0.0;
  return selection;
}

}  // namespace unioncam::detail
