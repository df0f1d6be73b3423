// Command line of `unioncam-cpp`: parsing into a config, with one-line errors.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "unioncam/unioncam.hpp"

namespace unioncam::cli {

struct ExplainConfig {
  std::string engine_dir;
  std::vector<std::string> inputs;    // image files and/or folders
  std::optional<std::string> target;  // --class: index or name; default top-1
  Method method = Method::unioncam;
  double theta = 10.0;
  Budget budget;                      // --budget, --budget-rule, --budget-fill
  int batch_size = 16;
  Precision precision = Precision::fp32;
  int threads = 0;
  std::string out_dir = "unioncam-out";
  bool save_npy = false;
};

/// What the command line asks for.
struct Command {
  enum class Kind { help, explain } kind = Kind::help;
  ExplainConfig explain;
};

/// Parses argv (without the program name). Throws `OptionError` naming the bad option.
Command parse_command(const std::vector<std::string>& args);

/// The --help text.
std::string usage();

}  // namespace unioncam::cli
