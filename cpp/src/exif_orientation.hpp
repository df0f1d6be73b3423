// EXIF orientation (tag 0x0112) and the transposition Pillow's `ImageOps.exif_transpose`
// applies for it, so that a portrait phone photo is explained upright as in Python.
#pragma once

#include <cstddef>
#include <cstdint>

#include "unioncam/unioncam.hpp"

namespace unioncam::detail {

/// The orientation (1..8) in an EXIF block: TIFF data, optionally after "Exif\0\0".
/// Returns 1 (upright) when the block is absent, malformed or has no valid orientation.
int exif_orientation(const std::uint8_t* data, std::size_t size);

/// The image turned upright for `orientation` (Pillow's mapping: 2 mirror, 3 rotate 180,
/// 4 flip, 5 transpose, 6 rotate 270 ccw, 7 transverse, 8 rotate 90 ccw); 1 or unknown
/// values return it unchanged.
RgbImage apply_orientation(RgbImage image, int orientation);

}  // namespace unioncam::detail
