#include "output_files.hpp"

#include <fcntl.h>
#include <png.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

namespace unioncam::cli {
namespace fs = std::filesystem;

void atomic_write(const fs::path& path, const std::vector<std::uint8_t>& data) {
  static std::atomic<unsigned> counter{0};
  std::random_device entropy;
  const fs::path tmp = path.parent_path() / ("." + path.filename().string() + "." + std::to_string(::getpid()) + "." +
                                             std::to_string(counter++) + "." + std::to_string(entropy()) + ".tmp");
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) throw Error(path.string() + ": cannot write (" + std::strerror(errno) + ")");
  std::size_t written = 0;
  while (written < data.size()) {
    const ssize_t n = ::write(fd, data.data() + written, data.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(path.string() + ": write failed (" + why + ")");
    }
    written += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0 || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw Error(path.string() + ": cannot write (" + why + ")");
  }
}

namespace {

struct PngWriteState {
  std::vector<std::uint8_t> bytes;
  char error[200] = {0};
};

void on_png_error(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngWriteState*>(png_get_error_ptr(png));
  std::snprintf(state->error, sizeof(state->error), "%s", message);
  png_longjmp(png, 1);
}

void on_png_write(png_structp png, png_bytep data, png_size_t size) {
  auto* state = static_cast<PngWriteState*>(png_get_io_ptr(png));
  state->bytes.insert(state->bytes.end(), data, data + size);
}

// libpng longjmps on errors: only trivially destructible locals here.
bool encode_grey(PngWriteState& state, const std::uint8_t* pixels, int width, int height) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &state, on_png_error, nullptr);
  if (png == nullptr) return false;
  png_infop info = png_create_info_struct(png);
  if (info == nullptr || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, info ? &info : nullptr);
    return false;
  }
  png_set_write_fn(png, &state, on_png_write, nullptr);
  png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < height; ++y) png_write_row(png, pixels + std::size_t(y) * width);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

}  // namespace

std::vector<std::uint8_t> grey_png(const std::vector<std::uint8_t>& pixels, int width, int height) {
  PngWriteState state;
  if (!encode_grey(state, pixels.data(), width, height)) {
    throw Error(std::string("PNG encoding failed (") + state.error + ")");
  }
  return std::move(state.bytes);
}

std::vector<std::uint8_t> npy_float32(const std::vector<float>& values, int height, int width) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(height) + ", " +
                       std::to_string(width) + "), }";
  // magic (6) + version (2) + header length (2) + header, padded with spaces and ended by
  // a newline so that the data starts at a multiple of 64 bytes.
  const std::size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::vector<std::uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  out.push_back(static_cast<std::uint8_t>(header.size() & 0xff));
  out.push_back(static_cast<std::uint8_t>(header.size() >> 8));
  out.insert(out.end(), header.begin(), header.end());
  static_assert(sizeof(float) == 4, "float32 expected");
  for (float v : values) {  // little-endian, as on every platform this builds for
    std::uint8_t bytes[4];
    std::memcpy(bytes, &v, 4);
    out.insert(out.end(), bytes, bytes + 4);
  }
  return out;
}

std::vector<std::uint8_t> cam_to_u8(const std::vector<float>& cam) {
  std::vector<std::uint8_t> out(cam.size());
  for (std::size_t i = 0; i < cam.size(); ++i) {
    const float scaled = cam[i] * 255.0f;
    out[i] = static_cast<std::uint8_t>(std::nearbyint(scaled));
  }
  return out;
}

std::string json_record(const Explanation& result, const RecordContext& context) {
  using nlohmann::ordered_json;
  ordered_json top5 = ordered_json::array();
  for (const ClassScore& entry : result.top5) {
    top5.push_back({{"class_index", entry.class_index}, {"class_name", entry.class_name},
                    {"probability", entry.probability}});
  }
  const bool is_union = result.union_parts.has_value();
  ordered_json record;
  record["image"] = context.image;
  record["model"] = context.model;
  record["method"] = to_string(result.method);
  record["class_index"] = result.class_index;
  record["class_name"] = result.class_name;
  record["probability"] = result.probability;
  record["top5"] = top5;
  record["theta"] = result.method == Method::unioncam ? ordered_json(context.theta) : ordered_json(nullptr);
  record["beta_denoise"] = is_union ? ordered_json(result.union_parts->beta_denoise) : ordered_json(nullptr);
  record["beta_region"] = is_union ? ordered_json(result.union_parts->beta_region) : ordered_json(nullptr);
  record["beta_fused"] = is_union ? ordered_json(result.union_parts->beta_fused) : ordered_json(nullptr);
  record["branch"] = is_union ? ordered_json(result.union_parts->branch) : ordered_json(nullptr);
  record["masked_passes"] = result.masked_passes;
  // Python's Budget.describe(): null when exact, and for Grad-CAM (no region map to budget).
  const Budget& budget = context.budget;
  if (budget.exact() || result.method == Method::gradcam) {
    record["budget"] = nullptr;
  } else {
    record["budget"] = {{"channels", budget.channels ? ordered_json(budget.channels) : ordered_json(nullptr)},
                        {"cover", budget.cover ? ordered_json(*budget.cover) : ordered_json(nullptr)},
                        {"rule", to_string(budget.rule)},
                        {"fill", to_string(budget.fill)}};
  }
  record["backend"] = context.backend;
  record["constant_map"] = result.constant_map;
  record["input_size"] = {result.height, result.width};
  record["original_size"] = {context.original_size[0], context.original_size[1]};
  const double total = context.load_s + result.timings.features_s + result.timings.method_s;
  record["timings"] = {{"load_s", context.load_s},
                       {"features_s", result.timings.features_s},
                       {"method_s", result.timings.method_s},
                       {"total_s", total}};
  return record.dump(2) + "\n";
}

void write_explanation(const Explanation& result, const RecordContext& context, const fs::path& out_dir,
                       const std::string& stem, bool save_npy) {
  // Everything is rendered in memory first; the JSON is renamed into place last, so a JSON
  // on disk means the maps beside it are complete.
  std::vector<std::pair<fs::path, std::vector<std::uint8_t>>> payloads;
  payloads.emplace_back(out_dir / (stem + ".cam.png"), grey_png(cam_to_u8(result.cam), result.width, result.height));
  if (save_npy) payloads.emplace_back(out_dir / (stem + ".cam.npy"), npy_float32(result.cam, result.height, result.width));
  const std::string json = json_record(result, context);
  payloads.emplace_back(out_dir / (stem + ".json"), std::vector<std::uint8_t>(json.begin(), json.end()));
  std::error_code error;
  fs::create_directories(out_dir, error);
  if (error) throw Error(out_dir.string() + ": cannot create the output folder (" + error.message() + ")");
  for (const auto& [path, data] : payloads) atomic_write(path, data);
}

}  // namespace unioncam::cli
