// The Python runtime's rules for turning decoded pixels into 8-bit RGB
// (unioncam_rt/images.py `to_rgb`), for the pixel layouts the PNG and JPEG readers produce.
#pragma once

#include <cstdint>

namespace unioncam::detail {

/// One channel of `value` with `alpha` composited onto white, exactly as Pillow's
/// `Image.alpha_composite(white, rgba)` computes it (integer arithmetic, 7 extra bits).
std::uint8_t composite_on_white(std::uint8_t value, std::uint8_t alpha);

/// 16-bit greyscale to 8 bits: round(v / 65535 * 255), as `to_rgb` does for mode I;16.
std::uint8_t grey16_to_8(std::uint16_t value);

/// Pillow's CMYK -> RGB conversion of one channel (`convert("RGB")` on a CMYK image).
std::uint8_t cmyk_channel_to_rgb(std::uint8_t ink, std::uint8_t black);

}  // namespace unioncam::detail
