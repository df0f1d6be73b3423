// PNG (libpng) and JPEG (libjpeg) decoders producing upright 8-bit RGB by the Python
// runtime's rules (see pixel_rules.hpp). Each throws `ImageError` with the path in it.
#pragma once

#include <string>

#include "unioncam/unioncam.hpp"

namespace unioncam::detail {

RgbImage decode_png(const std::string& path);
RgbImage decode_jpeg(const std::string& path);

/// Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`); bigger images are refused.
inline constexpr long long kMaxImagePixels = 89478485;

}  // namespace unioncam::detail
