// read_image: checks the path, recognises PNG and JPEG by their first bytes, decodes.
#include <array>
#include <filesystem>
#include <fstream>

#include "image_decoders.hpp"
#include "unioncam/unioncam.hpp"

namespace unioncam {
namespace fs = std::filesystem;

RgbImage read_image(const std::string& path) {
  std::error_code error;
  if (!fs::exists(path, error)) throw ImageError(path + ": no such file");
  if (fs::is_directory(path, error)) throw ImageError(path + ": is a directory, not an image");
  if (fs::file_size(path, error) == 0 && !error) throw ImageError(path + ": empty file (0 bytes)");

  std::array<unsigned char, 8> head{};
  {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw ImageError(path + ": cannot be opened");
    file.read(reinterpret_cast<char*>(head.data()), head.size());
  }
  static constexpr std::array<unsigned char, 8> kPng = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (head == kPng) return detail::decode_png(path);
  if (head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF) return detail::decode_jpeg(path);
  throw ImageError(path + ": not a PNG or JPEG image (the C++ runtime reads those two formats)");
}

}  // namespace unioncam
