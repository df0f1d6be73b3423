// Pillow's BILINEAR resize of 8-bit images, reimplemented so that C++ and the Python runtime
// (`Image.resize((W, H), Image.BILINEAR)`) feed the network the same pixels.
//
// What Pillow does (libImaging/Resample.c), restated:
// * separable: one pass per axis with an 8-bit intermediate image; a pass whose size does
//   not change is skipped. The horizontal pass runs first, except (Pillow >= 13,
//   python-pillow/Pillow#9549) when the height shrinks by more than twice as many pixels
//   as the width: then the vertical pass runs first (see `vertical_pass_first`). Pillow
//   12 and older always run the horizontal pass first; the two orders differ by at most
//   one level on some pixels;
// * per output index i, the source centre is (i + 0.5) * scale with scale = in / out; the
//   triangle filter's support is 1 * max(scale, 1), so shrinking is antialiased; taps are
//   the source indices [int(centre - support + 0.5), int(centre + support + 0.5)) clipped
//   to the image, weighted by filter((j - centre + 0.5) * (1 / max(scale, 1))) and normalised to
//   sum 1 in double;
// * for 8-bit data the weights become fixed point with 22 fractional bits (rounded half away
//   from zero), each output is (2^21 + sum weight * pixel) >> 22 clamped to [0, 255].
#pragma once

#include <cstdint>
#include <vector>

namespace unioncam::detail {

/// Fixed-point taps of one resampling axis.
struct ResampleAxis {
  int taps = 0;                   // coefficients per output index (fixed stride)
  std::vector<int> first;         // first source index of each output index
  std::vector<int> count;         // number of source indices used
  std::vector<std::int32_t> weights;  // out_size * taps, 22 fractional bits
};

/// Taps for resizing an axis of `in_size` samples to `out_size` with the bilinear filter.
ResampleAxis bilinear_axis(int in_size, int out_size);

/// Pillow 13's pass order: vertical first iff the height shrinks and
/// (height - out_height) > 2 * (width - out_width).
bool vertical_pass_first(int width, int height, int out_width, int out_height);

/// Resizes interleaved 8-bit pixels (`channels` per pixel, row-major) like Pillow's
/// BILINEAR. Returns out_height * out_width * channels bytes.
std::vector<std::uint8_t> resize_bilinear_u8(const std::uint8_t* pixels, int width, int height,
                                             int channels, int out_width, int out_height);

}  // namespace unioncam::detail
