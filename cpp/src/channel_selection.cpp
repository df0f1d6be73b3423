#include "channel_selection.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

namespace unioncam::detail {

namespace {

double channel_sum(const float* values, std::size_t n) {
  double total = 0.0;
  for (std::size_t i = 0; i < n; ++i) total += values[i];
  return total;
}

// Live channels ordered by `key`, largest first, ties to the lower channel index.
std::vector<int> ranked(const std::vector<char>& live, const std::vector<double>& key) {
  std::vector<int> order;
  for (std::size_t k = 0; k < live.size(); ++k) {
    if (live[k]) order.push_back(static_cast<int>(k));
  }
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return key[a] > key[b]; });
  return order;
}

}  // namespace

double channel_variance(const float* values, std::size_t n) {
  if (n == 0) return 0.0;
  const double mean = channel_sum(values, n) / double(n);
  double total = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = values[i] - mean;
    total += d * d;
  }
  return total / double(n);
}

std::vector<char> live_channels(const ChannelMaps& activations) {
  std::vector<char> live(activations.channels);
  for (int k = 0; k < activations.channels; ++k) live[k] = !is_constant(activations.channel(k), activations.plane());
  return live;
}

std::vector<double> channel_statistic(BudgetRule rule, const ChannelMaps& activations, const ChannelMaps& gradients) {
  const std::size_t n = activations.plane();
  std::vector<double> out(activations.channels, 0.0);
  for (int k = 0; k < activations.channels; ++k) {
    const float* a = activations.channel(k);
    switch (rule) {
      case BudgetRule::variance:
        out[k] = channel_variance(a, n);
        break;
      case BudgetRule::energy:
        for (std::size_t i = 0; i < n; ++i) out[k] += double(a[i]) * double(a[i]);
        break;
      case BudgetRule::mass:
        for (std::size_t i = 0; i < n; ++i) out[k] += std::fabs(double(a[i]));
        break;
      case BudgetRule::gradcam:
        out[k] = (channel_sum(gradients.channel(k), n) / double(n)) * (channel_sum(a, n) / double(n));
        break;
    }
  }
  return out;
}

std::vector<int> select_channels(const Budget& budget, const std::vector<char>& live, const ChannelMaps& activations,
                                 const ChannelMaps& gradients) {
  std::vector<int> chosen;
  if (budget.exact()) {
    for (std::size_t k = 0; k < live.size(); ++k) {
      if (live[k]) chosen.push_back(static_cast<int>(k));
    }
    return chosen;
  }
  const std::vector<double> statistic = channel_statistic(budget.rule, activations, gradients);
  const std::vector<int> order = ranked(live, statistic);
  std::size_t count = order.size();
  if (budget.cover) {
    // The fewest channels, by the coverage statistic, whose cumulative sum reaches
    // cover x total (numpy: searchsorted(cumsum, cover * total) + 1).
    const std::vector<double> coverage = budget.rule == BudgetRule::gradcam
                                             ? channel_statistic(BudgetRule::variance, activations, gradients)
                                             : statistic;
    const std::vector<int> by_coverage = ranked(live, coverage);
    std::vector<double> cumulative;
    double running = 0.0;
    for (int k : by_coverage) cumulative.push_back(running += coverage[k]);
    const double total = cumulative.empty() ? 0.0 : cumulative.back();
    if (total > 0) {
      const double target = *budget.cover * total;
      count = std::lower_bound(cumulative.begin(), cumulative.end(), target) - cumulative.begin() + 1;
    }
  }
  if (budget.channels > 0) count = std::min<std::size_t>(count, budget.channels);
  count = std::min(count, order.size());
  chosen.assign(order.begin(), order.begin() + count);
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

std::vector<int> peak_groups(const ChannelMaps& activations, const std::vector<char>& members, int grid) {
  const int h = activations.height, w = activations.width;
  const int grid_h = std::min(grid, h), grid_w = std::min(grid, w);
  std::vector<int> groups(activations.channels, -1);
  for (int k = 0; k < activations.channels; ++k) {
    if (!members[k]) continue;
    const float* a = activations.channel(k);
    const std::size_t flat = std::max_element(a, a + activations.plane()) - a;  // first maximum
    const int row = static_cast<int>(flat / w), col = static_cast<int>(flat % w);
    groups[k] = (row * grid_h / h) * grid_w + col * grid_w / w;
  }
  return groups;
}

std::vector<ChannelGroup> group_masks(const ChannelMaps& activations, const std::vector<int>& groups) {
  std::map<int, std::vector<int>> by_id;
  for (std::size_t k = 0; k < groups.size(); ++k) {
    if (groups[k] >= 0) by_id[groups[k]].push_back(static_cast<int>(k));
  }
  const std::size_t plane = activations.plane();
  std::vector<ChannelGroup> out;
  std::vector<float> mask(plane);
  for (auto& [id, members] : by_id) {
    ChannelGroup group;
    group.id = id;
    group.mask.assign(plane, 0.0f);
    // numpy: minmax(float32 masks).mean(axis=0): a float32 running sum, member by member,
    // then one division by the count.
    for (std::size_t m = 0; m < members.size(); ++m) {
      minmax_f32(activations.channel(members[m]), plane, mask.data());
      if (m == 0) {
        group.mask = mask;
      } else {
        for (std::size_t i = 0; i < plane; ++i) group.mask[i] = group.mask[i] + mask[i];
      }
    }
    const float count = static_cast<float>(members.size());
    for (float& v : group.mask) v = v / count;
    group.members = std::move(members);
    out.push_back(std::move(group));
  }
  return out;
}

void fill_weights(const Budget& budget, std::vector<double>& weights, const std::vector<char>& scored,
                  const std::vector<char>& live, const std::vector<double>& statistic) {
  if (budget.exact() || budget.fill == BudgetFill::zero || budget.fill == BudgetFill::group) return;
  std::vector<int> have, missing;
  for (std::size_t k = 0; k < weights.size(); ++k) {
    if (scored[k]) have.push_back(static_cast<int>(k));
    else if (live[k]) missing.push_back(static_cast<int>(k));
  }
  if (have.empty() || missing.empty()) return;
  double mean_y = 0.0;
  for (int k : have) mean_y += weights[k];
  mean_y /= double(have.size());
  if (budget.fill == BudgetFill::mean) {
    for (int k : missing) weights[k] = mean_y;
    return;
  }
  // estimate: least-squares line (numpy.polyfit degree 1) from the statistic to the score,
  // fitted on the scored channels; flat at the mean score without two distinct x values.
  double slope = 0.0, intercept = mean_y;
  double lo = statistic[have.front()], hi = lo;
  for (int k : have) {
    lo = std::min(lo, statistic[k]);
    hi = std::max(hi, statistic[k]);
  }
  if (have.size() > 1 && hi - lo > 0) {
    double mean_x = 0.0;
    for (int k : have) mean_x += statistic[k];
    mean_x /= double(have.size());
    double sxy = 0.0, sxx = 0.0;
    for (int k : have) {
      const double dx = statistic[k] - mean_x;
      sxy += dx * (weights[k] - mean_y);
      sxx += dx * dx;
    }
    slope = sxy / sxx;
    intercept = mean_y - slope * mean_x;
  }
  for (int k : missing) weights[k] = std::clamp(slope * statistic[k] + intercept, 0.0, 1.0);
}

}  // namespace unioncam::detail
