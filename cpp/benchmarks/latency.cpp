// Per-image latency of the library (used by benchmarks/bench_cpp.py):
//
//   unioncam_latency ENGINE_DIR METHOD BATCH_SIZE PRECISION [--budget SPEC] IMAGE...
//
// Opens the engine once, explains the first image once to warm up, then explains every
// image alone (read + resize + explain) and prints one JSON line: per-image seconds, the
// time to open the engine, and the peak resident memory.
#include <chrono>
#include <fstream>
#include <iostream>
#include <string>
#include <unioncam/unioncam.hpp>
#include <vector>

namespace {

double peak_rss_mib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return -1;
}

double since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::cerr << "usage: " << argv[0] << " ENGINE_DIR METHOD BATCH_SIZE PRECISION [--budget SPEC] IMAGE...\n";
    return 2;
  }
  try {
    auto started = std::chrono::steady_clock::now();
    const unioncam::Engine engine(argv[1], {unioncam::parse_precision(argv[4]), 0});
    const double open_s = since(started);
    unioncam::ExplainOptions options;
    options.method = unioncam::parse_method(argv[2]);
    options.batch_size = std::stoi(argv[3]);
    int first_image = 5;
    if (argc > 7 && std::string(argv[5]) == "--budget") {
      options.budget = unioncam::parse_budget(argv[6]);
      first_image = 7;
    }
    const std::vector<std::string> paths(argv + first_image, argv + argc);
    engine.explain(std::vector<unioncam::RgbImage>{unioncam::read_image(paths[0])}, options);  // warm-up
    std::cout << "{\"open_s\": " << open_s << ", \"per_image_s\": [";
    for (std::size_t i = 0; i < paths.size(); ++i) {
      started = std::chrono::steady_clock::now();
      const auto result = engine.explain(std::vector<unioncam::RgbImage>{unioncam::read_image(paths[i])}, options);
      std::cout << (i ? ", " : "") << since(started);
    }
    std::cout << "], \"peak_rss_mib\": " << peak_rss_mib() << "}\n";
  } catch (const unioncam::Error& error) {
    std::cerr << "error: " << error.what() << "\n";
    return 2;
  }
  return 0;
}
