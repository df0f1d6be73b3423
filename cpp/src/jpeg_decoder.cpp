// JPEG decoding with libjpeg(-turbo). libjpeg reports errors through `error_exit`, which
// must not return: it longjmps back into `run_libjpeg`, whose locals are trivially
// destructible; every buffer it fills belongs to the caller's `JpegState`.
#include <cstdio>
// jpeglib.h needs FILE and size_t declared first.
#include <jpeglib.h>
#include <jerror.h>

#include <csetjmp>
#include <cstring>
#include <memory>
#include <vector>

#include "exif_orientation.hpp"
#include "image_decoders.hpp"
#include "pixel_rules.hpp"

namespace unioncam::detail {
namespace {

struct JpegState {
  std::FILE* file = nullptr;
  int width = 0;
  int height = 0;
  int components = 0;      // 3 (RGB) or 4 (CMYK)
  bool adobe_inverted = false;  // Adobe CMYK files store inverted inks
  std::vector<std::uint8_t> pixels;
  std::vector<std::uint8_t> exif;
  char error[JMSG_LENGTH_MAX + 64] = {0};
};

struct ErrorManager {
  jpeg_error_mgr base;  // first member: libjpeg sees a jpeg_error_mgr*
  std::jmp_buf jump;
  JpegState* state;
};

void on_error_exit(j_common_ptr info) {
  auto* manager = reinterpret_cast<ErrorManager*>(info->err);
  (*info->err->format_message)(info, manager->state->error);
  std::longjmp(manager->jump, 1);
}

// Warnings stay quiet (as in Pillow), except a premature end of the data: Pillow refuses a
// truncated file, so this does too.
void on_message(j_common_ptr info, int level) {
  if (level < 0 && info->err->msg_code == JWRN_JPEG_EOF) on_error_exit(info);
}

bool run_libjpeg(JpegState& state) {
  jpeg_decompress_struct cinfo;
  ErrorManager errors;
  cinfo.err = jpeg_std_error(&errors.base);
  errors.base.error_exit = on_error_exit;
  errors.base.emit_message = on_message;
  errors.state = &state;
  if (setjmp(errors.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, state.file);
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&cinfo, TRUE);

  for (jpeg_saved_marker_ptr marker = cinfo.marker_list; marker; marker = marker->next) {
    if (marker->marker == JPEG_APP0 + 1 && marker->data_length >= 6 &&
        std::memcmp(marker->data, "Exif\0\0", 6) == 0) {
      state.exif.assign(marker->data, marker->data + marker->data_length);
      break;
    }
  }
  if (static_cast<long long>(cinfo.image_width) * cinfo.image_height > kMaxImagePixels) {
    std::snprintf(state.error, sizeof(state.error),
                  "image too large (%u x %u pixels, limit %lld); refused like Pillow's "
                  "decompression-bomb guard", cinfo.image_width, cinfo.image_height,
                  kMaxImagePixels);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  state.adobe_inverted = cmyk && cinfo.saw_Adobe_marker;
  jpeg_start_decompress(&cinfo);

  state.width = static_cast<int>(cinfo.output_width);
  state.height = static_cast<int>(cinfo.output_height);
  state.components = cinfo.output_components;
  const std::size_t row_bytes = std::size_t(state.width) * state.components;
  state.pixels.resize(row_bytes * state.height);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = state.pixels.data() + row_bytes * cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};

RgbImage to_rgb(const JpegState& state) {
  RgbImage image;
  image.width = state.width;
  image.height = state.height;
  const std::size_t count = std::size_t(state.width) * state.height;
  if (state.components == 3) {
    image.pixels = state.pixels;
    return image;
  }
  image.pixels.resize(count * 3);
  for (std::size_t i = 0; i < count; ++i) {
    std::uint8_t ink[4];
    for (int c = 0; c < 4; ++c) {
      const std::uint8_t v = state.pixels[4 * i + c];
      ink[c] = state.adobe_inverted ? std::uint8_t(255 - v) : v;
    }
    for (int c = 0; c < 3; ++c) image.pixels[3 * i + c] = cmyk_channel_to_rgb(ink[c], ink[3]);
  }
  return image;
}

}  // namespace

RgbImage decode_jpeg(const std::string& path) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (!file) throw ImageError(path + ": cannot be opened");
  JpegState state;
  state.file = file.get();
  if (!run_libjpeg(state)) {
    const std::string why = state.error;
    if (why.rfind("image too large", 0) == 0) throw ImageError(path + ": " + why);
    throw ImageError(path + ": corrupt or truncated JPEG (" + why + ")");
  }
  if (state.components != 3 && state.components != 4) {
    throw ImageError(path + ": unsupported JPEG layout (" + std::to_string(state.components) +
                     " components)");
  }
  RgbImage image = to_rgb(state);
  const int orientation = exif_orientation(state.exif.data(), state.exif.size());
  return apply_orientation(std::move(image), orientation);
}

}  // namespace unioncam::detail
