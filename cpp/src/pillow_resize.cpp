#include "pillow_resize.hpp"

#include <algorithm>
#include <cmath>

#include "unioncam/unioncam.hpp"

namespace unioncam::detail {
namespace {

constexpr int kFractionBits = 22;  // 32 bits - 8 for the pixel - 2 for overflow headroom

double triangle(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

std::int32_t to_fixed(double weight) {
  const double scaled = weight * double(1 << kFractionBits);
  return static_cast<std::int32_t>(scaled < 0 ? scaled - 0.5 : scaled + 0.5);
}

std::uint8_t from_fixed(std::int32_t sum) {
  const std::int32_t value = sum >> kFractionBits;
  return static_cast<std::uint8_t>(std::clamp(value, 0, 255));
}

}  // namespace

ResampleAxis bilinear_axis(int in_size, int out_size) {
  const double scale = double(float(in_size)) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = 1.0 * filter_scale;
  const double inverse_filter_scale = 1.0 / filter_scale;  // Pillow multiplies by it
  ResampleAxis axis;
  axis.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  axis.first.resize(out_size);
  axis.count.resize(out_size);
  axis.weights.assign(std::size_t(out_size) * axis.taps, 0);

  std::vector<double> raw(axis.taps);
  for (int i = 0; i < out_size; ++i) {
    const double centre = (i + 0.5) * scale;
    const int lo = std::max(static_cast<int>(centre - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(centre + support + 0.5), in_size);
    const int n = hi - lo;
    double total = 0.0;
    for (int j = 0; j < n; ++j) {
      raw[j] = triangle((j + lo - centre + 0.5) * inverse_filter_scale);
      total += raw[j];
    }
    for (int j = 0; j < n; ++j) {
      const double w = total != 0.0 ? raw[j] / total : raw[j];
      axis.weights[std::size_t(i) * axis.taps + j] = to_fixed(w);
    }
    axis.first[i] = lo;
    axis.count[i] = n;
  }
  return axis;
}

namespace {

// One pass along rows (horizontal) or columns (vertical) of an interleaved image.
std::vector<std::uint8_t> resize_horizontal(const std::uint8_t* in, int width, int height,
                                            int channels, int out_width) {
  const ResampleAxis axis = bilinear_axis(width, out_width);
  std::vector<std::uint8_t> out(std::size_t(height) * out_width * channels);
  for (int y = 0; y < height; ++y) {
    const std::uint8_t* row = in + std::size_t(y) * width * channels;
    std::uint8_t* dst = out.data() + std::size_t(y) * out_width * channels;
    for (int x = 0; x < out_width; ++x) {
      const std::int32_t* w = axis.weights.data() + std::size_t(x) * axis.taps;
      const std::uint8_t* src = row + std::size_t(axis.first[x]) * channels;
      for (int c = 0; c < channels; ++c) {
        std::int32_t sum = 1 << (kFractionBits - 1);
        for (int j = 0; j < axis.count[x]; ++j) sum += src[j * channels + c] * w[j];
        dst[x * channels + c] = from_fixed(sum);
      }
    }
  }
  return out;
}

std::vector<std::uint8_t> resize_vertical(const std::uint8_t* in, int width, int height,
                                          int channels, int out_height) {
  const ResampleAxis axis = bilinear_axis(height, out_height);
  const std::size_t stride = std::size_t(width) * channels;
  std::vector<std::uint8_t> out(std::size_t(out_height) * stride);
  for (int y = 0; y < out_height; ++y) {
    const std::int32_t* w = axis.weights.data() + std::size_t(y) * axis.taps;
    const std::uint8_t* top = in + std::size_t(axis.first[y]) * stride;
    std::uint8_t* dst = out.data() + std::size_t(y) * stride;
    for (std::size_t i = 0; i < stride; ++i) {
      std::int32_t sum = 1 << (kFractionBits - 1);
      for (int j = 0; j < axis.count[y]; ++j) sum += top[j * stride + i] * w[j];
      dst[i] = from_fixed(sum);
    }
  }
  return out;
}

}  // namespace

std::vector<std::uint8_t> resize_bilinear_u8(const std::uint8_t* pixels, int width, int height,
                                             int channels, int out_width, int out_height) {
  if (width <= 0 || height <= 0 || out_width <= 0 || out_height <= 0 || channels <= 0) {
    throw ImageError("cannot resize a " + std::to_string(width) + "x" + std::to_string(height) +
                     " image to " + std::to_string(out_width) + "x" +
                     std::to_string(out_height));
  }
  const bool horizontal = out_width != width;
  const bool vertical = out_height != height;
  if (!horizontal && !vertical) {
    return std::vector<std::uint8_t>(pixels, pixels + std::size_t(width) * height * channels);
  }
  if (!vertical) return resize_horizontal(pixels, width, height, channels, out_width);
  if (!horizontal) return resize_vertical(pixels, width, height, channels, out_height);
  if (vertical_pass_first(width, height, out_width, out_height)) {
    const auto tall = resize_vertical(pixels, width, height, channels, out_height);
    return resize_horizontal(tall.data(), width, out_height, channels, out_width);
  }
  const auto wide = resize_horizontal(pixels, width, height, channels, out_width);
  return resize_vertical(wide.data(), out_width, height, channels, out_height);
}

bool vertical_pass_first(int width, int height, int out_width, int out_height) {
  return out_height < height && (height - out_height) > 2 * (width - out_width);
}

}  // namespace unioncam::detail
