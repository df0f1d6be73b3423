// Which channels of the region map (Score-CAM) get a masked forward pass.
//
// This is the one place the rule lives. Today: with budget 0 (exact, the default) every
// non-constant channel is scored; with a budget K > 0, the K non-constant channels with the
// largest activation variance are scored. Constant channels never cost a pass and weigh 0;
// non-constant channels left out by the budget weigh `fill_weight`.
#pragma once

#include <vector>

#include "cam_math.hpp"

namespace unioncam::detail {

struct ChannelSelection {
  std::vector<int> scored;   // channel indices to score, ascending
  double fill_weight = 0.0;  // weight of non-constant channels that are not scored
};

/// The channels of one image's activations to score (see the file comment).
ChannelSelection select_channels(const ChannelMaps& activations, int budget);

/// Population variance of a channel over its h*w values, in double.
double channel_variance(const float* values, std::size_t n);

}  // namespace unioncam::detail
