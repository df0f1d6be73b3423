// manifest.json of an engine directory: the keys the C++ runtime needs, and the checks
// made before using the directory (schema version, shapes, sha256 of every listed file).
#pragma once

#include <array>
#include <map>
#include <string>
#include <vector>

namespace unioncam::detail {

inline constexpr const char* kManifestName = "manifest.json";

struct Manifest {
  int schema_version = 0;
  std::string model;
  std::array<int, 2> input_size{};     // H, W
  std::array<int, 3> feature_shape{};  // K, h, w
  std::vector<std::string> class_names;
  std::vector<double> black_probs;     // p_c(black image), one per class
  std::map<std::string, std::string> files;  // file name -> sha256 hex
};

/// Reads `DIRECTORY/manifest.json` and checks its schema version and shapes.
/// Throws `EngineDirError` with a one-line message.
Manifest read_manifest(const std::string& directory);

/// Checks the sha256 of every file in `manifest.files`; refuses a missing or changed file.
void verify_files(const Manifest& manifest, const std::string& directory);

/// `read_manifest` then `verify_files`.
Manifest load_manifest(const std::string& directory);

}  // namespace unioncam::detail
