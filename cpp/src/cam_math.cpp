#include "cam_math.hpp"

#include <algorithm>
#include <cmath>

namespace unioncam::detail {

double percentile_linear(std::vector<double>& values, double q) {
  const std::size_t n = values.size();
  if (n == 0) return 0.0;
  // numpy: virtual index (n - 1) * (q / 100), neighbours floor and floor + 1 clipped to the
  // ends, gamma = index - floor, then lerp a + (b - a) * g, or b - (b - a) * (1 - g) when
  // g >= 0.5.
  const double index = double(n - 1) * (q / 100.0);
  std::size_t below, above;
  if (index >= double(n - 1)) {
    below = above = n - 1;
  } else if (index < 0) {
    below = above = 0;
  } else {
    below = static_cast<std::size_t>(std::floor(index));
    above = below + 1;
  }
  const double gamma = index - std::floor(index);
  std::nth_element(values.begin(), values.begin() + below, values.end());
  const double a = values[below];
  double b = a;
  if (above != below) b = *std::min_element(values.begin() + below + 1, values.end());
  const double diff = b - a;
  return gamma >= 0.5 ? b - diff * (1.0 - gamma) : a + diff * gamma;
}

template <typename T>
static bool constant_impl(const T* map, std::size_t n) {
  if (n == 0) return true;
  const auto [lo, hi] = std::minmax_element(map, map + n);
  return *lo == *hi;
}

bool is_constant(const double* map, std::size_t n) { return constant_impl(map, n); }
bool is_constant(const float* map, std::size_t n) { return constant_impl(map, n); }

std::vector<double> minmax(const std::vector<double>& map) {
  std::vector<double> out(map.size(), 0.0);
  if (map.empty()) return out;
  const auto [lo_it, hi_it] = std::minmax_element(map.begin(), map.end());
  const double lo = *lo_it, span = *hi_it - *lo_it;
  if (span > 0) {
    for (std::size_t i = 0; i < map.size(); ++i) out[i] = (map[i] - lo) / span;
  }
  return out;
}

void minmax_f32(const float* map, std::size_t n, float* out) {
  if (n == 0) return;
  const auto [lo_it, hi_it] = std::minmax_element(map, map + n);
  const float lo = *lo_it, span = *hi_it - *lo_it;
  for (std::size_t i = 0; i < n; ++i) out[i] = span > 0 ? (map[i] - lo) / span : 0.0f;
}

namespace {

// One axis of half-pixel bilinear interpolation: for each output index, the two source
// indices and the weight of the second.
struct LinearTaps {
  std::vector<int> low, high;
  std::vector<double> frac;
};

LinearTaps linear_taps(int src, int dst) {
  LinearTaps taps;
  taps.low.resize(dst);
  taps.high.resize(dst);
  taps.frac.resize(dst);
  const double scale = double(src) / double(dst);
  for (int i = 0; i < dst; ++i) {
    const double coord = std::max((i + 0.5) * scale - 0.5, 0.0);
    const int low = std::min(static_cast<int>(std::floor(coord)), src - 1);
    taps.low[i] = low;
    taps.high[i] = std::min(low + 1, src - 1);
    taps.frac[i] = coord - low;
  }
  return taps;
}

}  // namespace

std::vector<double> resize_bilinear(const std::vector<double>& map, int height, int width,
                                    int out_height, int out_width) {
  const LinearTaps rows = linear_taps(height, out_height);
  const LinearTaps cols = linear_taps(width, out_width);
  // Rows first: [out_height, width], then columns.
  std::vector<double> tall(std::size_t(out_height) * width);
  for (int i = 0; i < out_height; ++i) {
    const double* lo = map.data() + std::size_t(rows.low[i]) * width;
    const double* hi = map.data() + std::size_t(rows.high[i]) * width;
    const double f = rows.frac[i];
    for (int x = 0; x < width; ++x) tall[std::size_t(i) * width + x] = (1.0 - f) * lo[x] + f * hi[x];
  }
  std::vector<double> out(std::size_t(out_height) * out_width);
  for (int i = 0; i < out_height; ++i) {
    const double* row = tall.data() + std::size_t(i) * width;
    double* dst = out.data() + std::size_t(i) * out_width;
    for (int j = 0; j < out_width; ++j) {
      const double f = cols.frac[j];
      dst[j] = (1.0 - f) * row[cols.low[j]] + f * row[cols.high[j]];
    }
  }
  return out;
}

std::vector<double> weighted_sum_relu(const ChannelMaps& activations,
                                      const std::vector<double>& weights) {
  const std::size_t plane = activations.plane();
  std::vector<double> sum(plane, 0.0);
  for (int k = 0; k < activations.channels; ++k) {
    const double w = weights[k];
    if (w == 0.0) continue;
    const float* a = activations.channel(k);
    for (std::size_t i = 0; i < plane; ++i) sum[i] += w * double(a[i]);
  }
  for (double& v : sum) v = std::max(v, 0.0);
  return sum;
}

std::vector<double> gradcam_map(const ChannelMaps& activations, const ChannelMaps& gradients) {
  const std::size_t plane = gradients.plane();
  std::vector<double> weights(gradients.channels);
  for (int k = 0; k < gradients.channels; ++k) {
    const float* g = gradients.channel(k);
    double total = 0.0;
    for (std::size_t i = 0; i < plane; ++i) total += g[i];
    weights[k] = total / double(plane);
  }
  return weighted_sum_relu(activations, weights);
}

std::vector<double> denoised_map(const ChannelMaps& activations, const ChannelMaps& gradients,
                                 double theta) {
  const std::size_t plane = gradients.plane();
  std::vector<double> sum(plane, 0.0);
  std::vector<double> scratch(plane);
  std::vector<double> alpha(plane);
  for (int k = 0; k < gradients.channels; ++k) {
    const float* g = gradients.channel(k);
    for (std::size_t i = 0; i < plane; ++i) scratch[i] = g[i];
    const double threshold = percentile_linear(scratch, theta);
    int positive = 0;
    for (std::size_t i = 0; i < plane; ++i) {
      const double kept = double(g[i]) >= threshold ? double(g[i]) : 0.0;
      alpha[i] = std::max(kept, 0.0);
      if (kept > 0) ++positive;
    }
    const double norm = double(std::max(positive, 1));
    const float* a = activations.channel(k);
    for (std::size_t i = 0; i < plane; ++i) sum[i] += alpha[i] / norm * double(a[i]);
  }
  for (double& v : sum) v = std::max(v, 0.0);
  return sum;
}

std::vector<double> softmax(const float* logits, std::size_t n) {
  std::vector<double> out(n);
  if (n == 0) return out;
  const double top = *std::max_element(logits, logits + n);
  double total = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    out[i] = std::exp(double(logits[i]) - top);
    total += out[i];
  }
  for (double& v : out) v /= total;
  return out;
}

}  // namespace unioncam::detail
