#include "options.hpp"

#include <cerrno>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>

namespace unioncam::cli {
namespace {

int parse_int(const std::string& option, const std::string& value, int minimum) {
  char* end = nullptr;
  errno = 0;
  const long parsed = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || errno == ERANGE || parsed < minimum || parsed > 1'000'000'000) {
    throw OptionError(option + " must be an integer >= " + std::to_string(minimum) + ", got '" + value + "'");
  }
  return static_cast<int>(parsed);
}

double parse_double(const std::string& option, const std::string& value) {
  char* end = nullptr;
  const double parsed = std::strtod(value.c_str(), &end);
  if (value.empty() || *end != '\0') throw OptionError(option + " must be a number, got '" + value + "'");
  return parsed;
}

}  // namespace

std::string usage() {
  return R"(usage: unioncam-cpp explain --engine DIR [options] IMAGE... | DIR

UnionCAM explanations from an exported engine directory (unioncam-rt export), on
OpenVINO's CPU runtime. Writes <stem>.cam.png and <stem>.json per image (and
<stem>.cam.npy with --save-npy) into --out.

options:
  --engine DIR         exported engine directory (required)
  --class, -c N|NAME   class index or exact class name to explain; default: top-1
  --method M           unioncam (default) | gradcam | scorecam
  --theta T            UnionCAM denoising percentile, 0-100; default 10
  --budget SPEC        region-map channels scored per image (UnionCAM, Score-CAM):
                       0 or exact (default); K (e.g. 128); coverS (the fewest channels
                       whose statistic covers share S of the total); coverS:K (that,
                       at most K); each optionally /RULE[/FILL], e.g. cover0.85:320/energy
                       or 128/variance/zero. Anything but exact changes the result.
  --budget-rule R      which channels a budget scores: variance (default), energy,
                       mass or gradcam
  --budget-fill F      weight of the live channels a budget leaves unscored: zero
                       (default), mean, estimate or group
  --batch-size, -b B   masked images per scoring call; default 16
  --precision P        fp32 (default, exact) | bf16
  --threads N          OpenVINO inference threads; default 0 = OpenVINO's choice
  --out, -o DIR        output folder; default ./unioncam-out
  --save-npy           also write <stem>.cam.npy (float32, input resolution, [0, 1])
  --help, -h           this text

exit codes: 0 all written; 1 some images could not be read (listed, the others are
written); 2 bad option or engine directory (nothing done).
)";
}

Command parse_command(const std::vector<std::string>& args) {
  Command command;
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") return command;
  if (args[0] != "explain") {
    throw OptionError("unknown command '" + args[0] + "'; available: explain (see --help)");
  }
  command.kind = Command::Kind::explain;
  ExplainConfig& config = command.explain;

  std::string budget = "exact";
  std::optional<std::string> budget_rule, budget_fill;
  using Setter = std::function<void(const std::string& option, const std::string& value)>;
  const std::map<std::string, Setter> with_value = {
      {"--engine", [&](auto&, auto& v) { config.engine_dir = v; }},
      {"--class", [&](auto&, auto& v) { config.target = v; }},
      {"--method", [&](auto&, auto& v) { config.method = parse_method(v); }},
      {"--theta", [&](auto& o, auto& v) { config.theta = parse_double(o, v); }},
      {"--budget", [&](auto&, auto& v) { budget = v; }},
      {"--budget-rule", [&](auto&, auto& v) { budget_rule = v; }},
      {"--budget-fill", [&](auto&, auto& v) { budget_fill = v; }},
      {"--batch-size", [&](auto& o, auto& v) { config.batch_size = parse_int(o, v, 1); }},
      {"--precision", [&](auto&, auto& v) { config.precision = parse_precision(v); }},
      {"--threads", [&](auto& o, auto& v) { config.threads = parse_int(o, v, 0); }},
      {"--out", [&](auto&, auto& v) { config.out_dir = v; }},
  };
  const std::map<std::string, std::string> aliases = {{"-c", "--class"}, {"-b", "--batch-size"}, {"-o", "--out"}};

  bool only_positional = false;
  for (std::size_t i = 1; i < args.size(); ++i) {
    std::string arg = args[i];
    if (only_positional || arg.empty() || arg[0] != '-' || arg == "-") {
      config.inputs.push_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positional = true;
      continue;
    }
    if (arg == "--help" || arg == "-h") {
      command.kind = Command::Kind::help;
      return command;
    }
    if (arg == "--save-npy") {
      config.save_npy = true;
      continue;
    }
    std::string value;
    bool inline_value = false;
    if (const auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      inline_value = true;
    }
    if (const auto alias = aliases.find(arg); alias != aliases.end()) arg = alias->second;
    const auto setter = with_value.find(arg);
    if (setter == with_value.end()) throw OptionError("unknown option " + args[i] + " (see --help)");
    if (!inline_value) {
      if (i + 1 >= args.size()) throw OptionError(arg + " needs a value");
      value = args[++i];
    }
    setter->second(arg, value);
  }
  // after every option: --budget-rule and --budget-fill win over the specification's parts
  config.budget = parse_budget(budget, budget_rule, budget_fill);
  if (config.engine_dir.empty()) throw OptionError("--engine DIR is required (an exported engine directory)");
  if (config.inputs.empty()) throw OptionError("give at least one image or folder");
  if (!(config.theta >= 0.0 && config.theta <= 100.0)) {
    throw OptionError("--theta " + std::to_string(config.theta) + " must be a percentile in [0, 100]");
  }
  return command;
}

}  // namespace unioncam::cli
