// Engine: opening a directory, what it holds, classes, image preparation.
#include <algorithm>
#include <cctype>

#include "engine_impl.hpp"
#include "pillow_resize.hpp"

namespace unioncam {

Engine::Engine(const std::string& directory, const EngineOptions& options)
    : impl_(std::make_unique<Impl>(directory, options)) {}
Engine::~Engine() = default;
Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;

const std::string& Engine::model() const { return impl_->manifest.model; }
int Engine::schema_version() const { return impl_->manifest.schema_version; }
std::array<int, 2> Engine::input_size() const { return impl_->manifest.input_size; }
std::array<int, 3> Engine::feature_shape() const { return impl_->manifest.feature_shape; }
const std::vector<std::string>& Engine::class_names() const { return impl_->manifest.class_names; }
Precision Engine::precision() const { return impl_->options.precision; }

namespace {

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

std::string trim(const std::string& text) {
  const auto first = text.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

}  // namespace

int Engine::resolve_class(const std::string& index_or_name) const {
  const std::vector<std::string>& names = class_names();
  const std::string key = trim(index_or_name);
  const std::string range = "this model has classes 0.." + std::to_string(names.size() - 1);
  const bool numeric = !key.empty() && std::all_of(key.begin() + (key[0] == '-' ? 1 : 0), key.end(),
                                                   [](unsigned char c) { return std::isdigit(c); }) &&
                       key != "-";
  if (numeric) {
    long long value = 0;
    try {
      value = std::stoll(key);
    } catch (const std::out_of_range&) {
      throw OptionError("class index " + key + " out of range; " + range);
    }
    if (value == -1) return -1;
    if (value < 0 || value >= static_cast<long long>(names.size())) {
      throw OptionError("class index " + key + " out of range; " + range);
    }
    return static_cast<int>(value);
  }
  const std::string wanted = lower(key);
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (lower(names[i]) == wanted) return static_cast<int>(i);
  }
  throw OptionError("unknown class name '" + index_or_name + "'; give an index (" + range + ") or an exact name");
}

RgbImage resize_bilinear_pillow(const RgbImage& image, int width, int height) {
  if (image.pixels.size() != std::size_t(image.width) * image.height * 3) {
    throw ImageError("RGB image of " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                     " needs " + std::to_string(std::size_t(image.width) * image.height * 3) + " bytes, got " +
                     std::to_string(image.pixels.size()));
  }
  RgbImage out;
  out.width = width;
  out.height = height;
  out.pixels = detail::resize_bilinear_u8(image.pixels.data(), image.width, image.height, 3, width, height);
  return out;
}

FloatImage to_float_chw(const RgbImage& image) {
  FloatImage out;
  out.width = image.width;
  out.height = image.height;
  const std::size_t plane = std::size_t(image.width) * image.height;
  out.chw.resize(3 * plane);
  for (std::size_t i = 0; i < plane; ++i) {
    for (int c = 0; c < 3; ++c) out.chw[c * plane + i] = static_cast<float>(image.pixels[3 * i + c]) / 255.0f;
  }
  return out;
}

FloatImage Engine::prepare(const RgbImage& image) const {
  const auto [height, width] = input_size();
  return to_float_chw(resize_bilinear_pillow(image, width, height));
}

}  // namespace unioncam
