// PNG decoding with libpng's classic API. libpng reports errors by longjmp, so all libpng
// calls live in `run_libpng`, whose only locals are trivially destructible; every buffer
// it fills belongs to the caller's `PngState`.
#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "exif_orientation.hpp"
#include "image_decoders.hpp"
#include "pixel_rules.hpp"

namespace unioncam::detail {
namespace {

struct PngState {
  std::FILE* file = nullptr;
  int width = 0;
  int height = 0;
  int channels = 0;     // after libpng's transforms: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
  int bit_depth = 0;    // 8, or 16 for 16-bit greyscale kept as is
  std::vector<std::uint8_t> pixels;
  std::vector<png_bytep> rows;
  std::vector<std::uint8_t> exif;
  char error[200] = {0};
};

void on_error(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(state->error, sizeof(state->error), "%s", message);
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}

// Returns false with `state.error` set when libpng fails.
bool run_libpng(PngState& state) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, on_error, on_warning);
  if (png == nullptr) {
    std::snprintf(state.error, sizeof(state.error), "libpng could not start");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (info == nullptr || setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
    return false;
  }
  png_init_io(png, state.file);
  png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
  png_read_info(png, info);

  const png_uint_32 width = png_get_image_width(png, info);
  const png_uint_32 height = png_get_image_height(png, info);
  const int color_type = png_get_color_type(png, info);
  const int depth = png_get_bit_depth(png, info);
  if (static_cast<long long>(width) * height > kMaxImagePixels) {
    std::snprintf(state.error, sizeof(state.error),
                  "image too large (%u x %u pixels, limit %lld); refused like Pillow's "
                  "decompression-bomb guard", width, height, kMaxImagePixels);
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  // Pillow's PNG modes: palette -> P (tRNS -> alpha), 16-bit grey -> I;16 (kept at 16 bits
  // and scaled later), other 16-bit data -> its high byte; grey/RGB tRNS keys are ignored.
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    png_set_palette_to_rgb(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  }
  if (color_type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  const bool grey16 = color_type == PNG_COLOR_TYPE_GRAY && depth == 16;
  if (depth == 16 && !grey16) png_set_strip_16(png);
  if (grey16) png_set_swap(png);  // native little-endian uint16 in memory
  png_set_interlace_handling(png);
  png_read_update_info(png, info);

  state.width = static_cast<int>(width);
  state.height = static_cast<int>(height);
  state.channels = png_get_channels(png, info);
  state.bit_depth = png_get_bit_depth(png, info);
  const std::size_t row_bytes = png_get_rowbytes(png, info);
  state.pixels.resize(row_bytes * height);
  state.rows.resize(height);
  for (png_uint_32 y = 0; y < height; ++y) state.rows[y] = state.pixels.data() + y * row_bytes;
  png_read_image(png, state.rows.data());
  png_read_end(png, info);  // an eXIf chunk may follow the image data

  png_uint_32 exif_size = 0;
  png_bytep exif = nullptr;
  if (png_get_eXIf_1(png, info, &exif_size, &exif) != 0 && exif != nullptr) {
    state.exif.assign(exif, exif + exif_size);
  }
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};

RgbImage to_rgb(const PngState& state) {
  RgbImage image;
  image.width = state.width;
  image.height = state.height;
  image.pixels.resize(std::size_t(state.width) * state.height * 3);
  const std::size_t count = std::size_t(state.width) * state.height;
  std::uint8_t* out = image.pixels.data();
  const std::uint8_t* in = state.pixels.data();
  if (state.bit_depth == 16) {  // greyscale only
    const auto* grey = reinterpret_cast<const std::uint16_t*>(in);
    for (std::size_t i = 0; i < count; ++i) {
      const std::uint8_t v = grey16_to_8(grey[i]);
      out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = v;
    }
    return image;
  }
  for (std::size_t i = 0; i < count; ++i) {
    switch (state.channels) {
      case 1:
        out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = in[i];
        break;
      case 2: {
        const std::uint8_t v = composite_on_white(in[2 * i], in[2 * i + 1]);
        out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = v;
        break;
      }
      case 3:
        std::memcpy(out + 3 * i, in + 3 * i, 3);
        break;
      default:
        for (int c = 0; c < 3; ++c) out[3 * i + c] = composite_on_white(in[4 * i + c], in[4 * i + 3]);
        break;
    }
  }
  return image;
}

}  // namespace

RgbImage decode_png(const std::string& path) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (!file) throw ImageError(path + ": cannot be opened");
  PngState state;
  state.file = file.get();
  if (!run_libpng(state)) {
    const std::string why = state.error;
    if (why.rfind("image too large", 0) == 0) throw ImageError(path + ": " + why);
    throw ImageError(path + ": corrupt or truncated PNG (" + why + ")");
  }
  if (state.channels < 1 || state.channels > 4) {
    throw ImageError(path + ": unsupported PNG layout (" + std::to_string(state.channels) +
                     " channels)");
  }
  RgbImage image = to_rgb(state);
  const int orientation = exif_orientation(state.exif.data(), state.exif.size());
  return apply_orientation(std::move(image), orientation);
}

}  // namespace unioncam::detail
