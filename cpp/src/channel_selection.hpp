// The channel budget of the region map: which channels get a masked forward pass and what
// the others weigh (the C++ side of unioncam_rt/method/budget.py; every function here
// mirrors the Python function of the same name, for one image).
//
// Constant channels never cost a pass and weigh 0. Under an exact budget every other
// ("live") channel is scored. Otherwise `select_channels` picks the live channels to score
// by the budget's rule and size, and the live channels left out weigh per the budget's fill:
// `fill_weights` (zero, mean, estimate) or, for `group`, the scores of the group masks from
// `peak_groups` and `group_masks` (scored by the caller, methods.cpp).
#pragma once

#include <vector>

#include "cam_math.hpp"
#include "unioncam/unioncam.hpp"

namespace unioncam::detail {

/// Largest grid (per side) the `group` fill's peak cells are taken on.
inline constexpr int kGroupGrid = 7;

/// 1 for each channel that is not constant over h*w (max != min), else 0.
std::vector<char> live_channels(const ChannelMaps& activations);

/// [K] ranking statistic of each channel, in double: population variance, sum of squares,
/// sum of absolute values, or mean(gradient) * mean(activation).
std::vector<double> channel_statistic(BudgetRule rule, const ChannelMaps& activations,
                                      const ChannelMaps& gradients);

/// The live channels to score, ascending (all of them when the budget is exact).
std::vector<int> select_channels(const Budget& budget, const std::vector<char>& live,
                                 const ChannelMaps& activations, const ChannelMaps& gradients);

/// Per channel: -1 outside `members`, else the cell of the grid of at most `grid` x `grid`
/// holding its activation peak (first maximum in row-major order):
/// `(row * min(grid, h) / h) * min(grid, w) + col * min(grid, w) / w` (integer division).
std::vector<int> peak_groups(const ChannelMaps& activations, const std::vector<char>& members,
                             int grid = kGroupGrid);

/// A non-empty group of channels and the mask scored for it.
struct ChannelGroup {
  int id = 0;
  std::vector<int> members;  // ascending
  std::vector<float> mask;   // mean of the members' min-max masks, float32 like numpy
};

/// The non-empty groups of `groups` (from `peak_groups`), by ascending id.
std::vector<ChannelGroup> group_masks(const ChannelMaps& activations, const std::vector<int>& groups);

/// Weights of the live channels left unscored, for the `mean` and `estimate` fills (`zero`
/// and `group` leave `weights` as they are). `weights` holds the scores of the `scored`
/// channels; `statistic` (the rule's) is read by `estimate` only.
void fill_weights(const Budget& budget, std::vector<double>& weights, const std::vector<char>& scored,
                  const std::vector<char>& live, const std::vector<double>& statistic);

/// Population variance of a channel over its h*w values, in double.
double channel_variance(const float* values, std::size_t n);

}  // namespace unioncam::detail
