#include "exif_orientation.hpp"

#include <cstring>
#include <utility>

namespace unioncam::detail {
namespace {

constexpr std::uint16_t kOrientationTag = 0x0112;
constexpr std::uint16_t kTypeShort = 3;

struct TiffReader {
  const std::uint8_t* data;
  std::size_t size;
  bool little_endian;

  bool has(std::size_t offset, std::size_t n) const { return offset <= size && n <= size - offset; }
  std::uint16_t u16(std::size_t at) const {
    return little_endian ? std::uint16_t(data[at] | (data[at + 1] << 8))
                         : std::uint16_t((data[at] << 8) | data[at + 1]);
  }
  std::uint32_t u32(std::size_t at) const {
    const std::uint32_t b0 = data[at], b1 = data[at + 1], b2 = data[at + 2], b3 = data[at + 3];
    return little_endian ? (b0 | (b1 << 8) | (b2 << 16) | (b3 << 24))
                         : ((b0 << 24) | (b1 << 16) | (b2 << 8) | b3);
  }
};

}  // namespace

int exif_orientation(const std::uint8_t* data, std::size_t size) {
  if (data == nullptr) return 1;
  if (size >= 6 && std::memcmp(data, "Exif\0\0", 6) == 0) {
    data += 6;
    size -= 6;
  }
  if (size < 8) return 1;
  TiffReader tiff{data, size, false};
  if (data[0] == 'I' && data[1] == 'I') {
    tiff.little_endian = true;
  } else if (!(data[0] == 'M' && data[1] == 'M')) {
    return 1;
  }
  if (tiff.u16(2) != 42) return 1;
  const std::size_t ifd = tiff.u32(4);
  if (!tiff.has(ifd, 2)) return 1;
  const std::size_t entries = tiff.u16(ifd);
  for (std::size_t i = 0; i < entries; ++i) {
    const std::size_t entry = ifd + 2 + 12 * i;
    if (!tiff.has(entry, 12)) return 1;
    if (tiff.u16(entry) != kOrientationTag) continue;
    if (tiff.u16(entry + 2) != kTypeShort || tiff.u32(entry + 4) < 1) return 1;
    const int value = tiff.u16(entry + 8);
    return value >= 1 && value <= 8 ? value : 1;
  }
  return 1;
}

RgbImage apply_orientation(RgbImage image, int orientation) {
  if (orientation < 2 || orientation > 8) return image;
  const int w = image.width, h = image.height;
  const bool swaps = orientation >= 5;  // 5..8 exchange width and height
  RgbImage out;
  out.width = swaps ? h : w;
  out.height = swaps ? w : h;
  out.pixels.resize(image.pixels.size());
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      int sx = x, sy = y;  // the source pixel of output (x, y)
      switch (orientation) {
        case 2: sx = w - 1 - x; break;                       // mirror left-right
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;       // rotate 180
        case 4: sy = h - 1 - y; break;                       // flip top-bottom
        case 5: sx = y; sy = x; break;                       // transpose
        case 6: sx = y; sy = h - 1 - x; break;               // rotate 270 ccw
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;       // transverse
        case 8: sx = w - 1 - y; sy = x; break;               // rotate 90 ccw
        default: break;
      }
      const std::size_t from = (std::size_t(sy) * w + sx) * 3;
      const std::size_t to = (std::size_t(y) * out.width + x) * 3;
      std::memcpy(out.pixels.data() + to, image.pixels.data() + from, 3);
    }
  }
  return out;
}

}  // namespace unioncam::detail
