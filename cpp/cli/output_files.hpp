// What `unioncam-cpp explain` writes per image: <stem>.cam.png, optional <stem>.cam.npy and
// <stem>.json, each through a temporary name and a rename, the JSON last.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "unioncam/unioncam.hpp"

namespace unioncam::cli {

/// Writes `data` to `path` via a temporary file in the same folder and a rename.
void atomic_write(const std::filesystem::path& path, const std::vector<std::uint8_t>& data);

/// An 8-bit greyscale PNG.
std::vector<std::uint8_t> grey_png(const std::vector<std::uint8_t>& pixels, int width, int height);

/// A float32 [height, width] array in .npy format (version 1.0, little-endian, C order).
std::vector<std::uint8_t> npy_float32(const std::vector<float>& values, int height, int width);

/// round(cam * 255) as 8-bit (numpy's rounding: half to even, in float32).
std::vector<std::uint8_t> cam_to_u8(const std::vector<float>& cam);

/// What the JSON record needs besides the explanation itself.
struct RecordContext {
  std::string image;           // the path as given
  std::string model;
  std::array<int, 2> original_size{};  // H, W of the upright original
  double theta = 10.0;
  Budget budget;               // as run (reported for UnionCAM and Score-CAM)
  std::string backend = "openvino-cpp fp32";
  double load_s = 0.0;
};

/// The JSON record: the Python runtime's keys, in its order (`Explanation.summary()`).
/// "budget" is Python's `Budget.describe()`: null when exact and for Grad-CAM, else
/// {"channels": K or null, "cover": S or null, "rule": ..., "fill": ...}; "backend" is
/// "openvino-cpp fp32" or "openvino-cpp bf16".
std::string json_record(const Explanation& result, const RecordContext& context);

/// Writes <stem>.cam.png, <stem>.cam.npy (if asked) and <stem>.json into `out_dir`.
void write_explanation(const Explanation& result, const RecordContext& context,
                       const std::filesystem::path& out_dir, const std::string& stem, bool save_npy);

}  // namespace unioncam::cli
