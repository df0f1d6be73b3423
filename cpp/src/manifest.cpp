#include "manifest.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "sha256.hpp"
#include "unioncam/unioncam.hpp"

namespace unioncam::detail {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string schema_list() {
  std::string out;
  for (int v : kSchemaVersions) out += (out.empty() ? "" : ", ") + std::to_string(v);
  return out;
}

template <std::size_t N>
std::array<int, N> positive_ints(const json& value, const char* key, const std::string& source) {
  std::array<int, N> out{};
  if (!value.is_array() || value.size() != N) {
    throw EngineDirError(source + ": '" + key + "' must be a list of " + std::to_string(N) +
                         " integers");
  }
  for (std::size_t i = 0; i < N; ++i) {
    if (!value[i].is_number_integer() || value[i].get<long long>() <= 0) {
      throw EngineDirError(source + ": '" + key + "' must hold positive integers");
    }
    out[i] = value[i].get<int>();
  }
  return out;
}

const json& required(const json& data, const char* key, const std::string& source) {
  auto it = data.find(key);
  if (it == data.end()) throw EngineDirError(source + ": malformed manifest (no '" + key + "')");
  return *it;
}

}  // namespace

Manifest read_manifest(const std::string& directory) {
  const fs::path dir(directory);
  const fs::path path = dir / kManifestName;
  if (!fs::is_directory(dir)) {
    throw EngineDirError("engine directory " + directory +
                         " does not exist; run unioncam-rt export first");
  }
  if (!fs::is_regular_file(path)) {
    throw EngineDirError(path.string() + " is missing; " + directory +
                         " is not an exported engine directory");
  }
  const std::string source = path.string();
  json data;
  try {
    std::ifstream file(path);
    data = json::parse(file);
  } catch (const json::exception& exc) {
    std::string what = exc.what();
    throw EngineDirError(source + ": unreadable manifest (" + what.substr(0, what.find('\n')) + ")");
  }
  if (!data.is_object()) throw EngineDirError(source + ": not a JSON object");

  Manifest m;
  const json& version = required(data, "schema_version", source);
  m.schema_version = version.is_number_integer() ? version.get<int>() : -1;
  if (std::find(kSchemaVersions.begin(), kSchemaVersions.end(), m.schema_version) ==
      kSchemaVersions.end()) {
    throw EngineDirError(source + ": schema version " + version.dump() +
                         ", this unioncam C++ runtime reads " + schema_list() +
                         "; re-export the model");
  }
  try {
    m.model = required(data, "model", source).get<std::string>();
    m.input_size = positive_ints<2>(required(data, "input_size", source), "input_size", source);
    m.feature_shape =
        positive_ints<3>(required(data, "feature_shape", source), "feature_shape", source);
    m.class_names = required(data, "class_names", source).get<std::vector<std::string>>();
    m.black_probs = required(data, "black_probs", source).get<std::vector<double>>();
    m.files = required(data, "files", source).get<std::map<std::string, std::string>>();
  } catch (const json::exception& exc) {
    std::string what = exc.what();
    throw EngineDirError(source + ": malformed manifest (" + what.substr(0, what.find('\n')) + ")");
  }
  if (m.class_names.empty()) throw EngineDirError(source + ": no class names");
  if (m.black_probs.size() != m.class_names.size()) {
    throw EngineDirError(source + ": " + std::to_string(m.black_probs.size()) +
                         " black-image probabilities for " + std::to_string(m.class_names.size()) +
                         " classes");
  }
  return m;
}

void verify_files(const Manifest& manifest, const std::string& directory) {
  for (const auto& [name, digest] : manifest.files) {
    const fs::path path = fs::path(directory) / name;
    if (!fs::is_regular_file(path)) {
      throw EngineDirError(path.string() + ": listed in the manifest but missing; re-export");
    }
    if (sha256_file(path.string()) != digest) {
      throw EngineDirError(path.string() +
                           ": sha256 differs from the manifest (changed or tampered); re-export");
    }
  }
}

Manifest load_manifest(const std::string& directory) {
  Manifest manifest = read_manifest(directory);
  verify_files(manifest, directory);
  return manifest;
}

}  // namespace unioncam::detail
