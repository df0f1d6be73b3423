#include "pixel_rules.hpp"

#include <cmath>

namespace unioncam::detail {
namespace {

// x / 255 rounded, for x < 2^16 * 255, with shifts (Pillow's trick).
inline std::uint32_t shift_div255(std::uint32_t x) { return ((x >> 8) + x) >> 8; }

}  // namespace

std::uint8_t composite_on_white(std::uint8_t value, std::uint8_t alpha) {
  if (alpha == 0) return 255;
  constexpr std::uint32_t kBits = 7;
  constexpr std::uint32_t kWhite = 255;
  // Destination is opaque white: blend = 255 * (255 - a), out_alpha*255 = a*255 + blend.
  const std::uint32_t blend = kWhite * (255u - alpha);
  const std::uint32_t out_alpha_255 = alpha * 255u + blend;
  const std::uint32_t coef_src = alpha * 255u * 255u * (1u << kBits) / out_alpha_255;
  const std::uint32_t coef_dst = 255u * (1u << kBits) - coef_src;
  const std::uint32_t mixed = value * coef_src + kWhite * coef_dst;
  return static_cast<std::uint8_t>(shift_div255(mixed + (0x80u << kBits)) >> kBits);
}

std::uint8_t grey16_to_8(std::uint16_t value) {
  const double grey = double(value) / 65535.0;
  return static_cast<std::uint8_t>(std::nearbyint(grey * 255.0));
}

std::uint8_t cmyk_channel_to_rgb(std::uint8_t ink, std::uint8_t black) {
  const int not_black = 255 - black;
  const std::uint32_t product = std::uint32_t(ink) * std::uint32_t(not_black) + 128u;
  const int scaled = static_cast<int>(shift_div255(product));
  const int value = not_black - scaled;
  return static_cast<std::uint8_t>(value < 0 ? 0 : (value > 255 ? 255 : value));
}

}  // namespace unioncam::detail
