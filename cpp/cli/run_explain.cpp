#include "run_explain.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <map>

#include "output_files.hpp"

namespace unioncam::cli {
namespace fs = std::filesystem;

namespace {

// Images whose masks share scoring calls (the Python runtime's images_per_step).
constexpr std::size_t kImagesPerStep = 4;

bool has_image_suffix(const fs::path& path) {
  std::string suffix = path.extension().string();
  std::transform(suffix.begin(), suffix.end(), suffix.begin(), [](unsigned char c) { return std::tolower(c); });
  return suffix == ".png" || suffix == ".jpg" || suffix == ".jpeg";
}

struct Loaded {
  std::size_t index;  // into the path list
  RgbImage original;
  double load_s;
};

}  // namespace

std::vector<fs::path> list_images(const std::vector<std::string>& inputs) {
  std::vector<fs::path> paths;
  for (const std::string& input : inputs) {
    const fs::path item(input);
    std::error_code error;
    if (!fs::is_directory(item, error)) {
      paths.push_back(item);
      continue;
    }
    std::vector<fs::path> found;
    for (const auto& entry : fs::directory_iterator(item, error)) {
      if (entry.is_regular_file() && has_image_suffix(entry.path())) found.push_back(entry.path());
    }
    if (found.empty()) throw ImageError(input + ": directory holds no images (.png, .jpg, .jpeg)");
    std::sort(found.begin(), found.end());
    paths.insert(paths.end(), found.begin(), found.end());
  }
  return paths;
}

std::vector<std::string> unique_stems(const std::vector<fs::path>& paths) {
  std::map<std::string, int> seen;
  std::vector<std::string> stems;
  for (const fs::path& path : paths) {
    const std::string stem = path.stem().string();
    const int count = ++seen[stem];
    stems.push_back(count == 1 ? stem : stem + "-" + std::to_string(count));
  }
  return stems;
}

int run_explain(const ExplainConfig& config) {
  const std::vector<fs::path> paths = list_images(config.inputs);
  const Engine engine(config.engine_dir, {config.precision, config.threads});
  ExplainOptions options;
  options.method = config.method;
  options.theta = config.theta;
  options.budget = config.budget;
  options.batch_size = config.batch_size;
  options.class_index = config.target ? engine.resolve_class(*config.target) : -1;  // refuse before any work
  const std::vector<std::string> stems = unique_stems(paths);
  const fs::path out_dir(config.out_dir);

  std::vector<std::string> failures;
  std::vector<Loaded> pending;
  auto flush = [&] {
    if (pending.empty()) return;
    std::vector<RgbImage> originals;
    for (const Loaded& item : pending) originals.push_back(item.original);
    const std::vector<Explanation> results = engine.explain(originals, options);
    for (std::size_t i = 0; i < pending.size(); ++i) {
      const Loaded& item = pending[i];
      const Explanation& result = results[i];
      RecordContext context;
      context.image = paths[item.index].string();
      context.model = engine.model();
      context.original_size = {item.original.height, item.original.width};
      context.theta = options.theta;
      context.budget = options.budget;
      context.backend = "openvino-cpp " + to_string(engine.precision());
      context.load_s = item.load_s;
      write_explanation(result, context, out_dir, stems[item.index], config.save_npy);
      char probability[32];
      std::snprintf(probability, sizeof(probability), "%.3f", result.probability);
      std::string line = paths[item.index].filename().string() + ": " + result.class_name + " (" + probability + ")";
      if (result.union_parts) line += " [" + result.union_parts->branch + "]";
      line += " -> " + (out_dir / stems[item.index]).string() + ".*";
      if (result.constant_map) line += " (constant map: written as zeros)";
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
    pending.clear();
  };

  for (std::size_t i = 0; i < paths.size(); ++i) {
    const auto started = std::chrono::steady_clock::now();
    try {
      RgbImage image = read_image(paths[i].string());
      const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      pending.push_back({i, std::move(image), load_s});
    } catch (const ImageError& exc) {
      failures.emplace_back(exc.what());
      std::fprintf(stderr, "error: %s\n", exc.what());
      continue;
    }
    if (pending.size() >= kImagesPerStep) flush();
  }
  flush();

  if (!failures.empty()) {
    std::fprintf(stderr, "%zu of %zu images failed:\n", failures.size(), paths.size());
    for (const std::string& line : failures) std::fprintf(stderr, "  %s\n", line.c_str());
    return 1;
  }
  return 0;
}

}  // namespace unioncam::cli
