// Budget specifications: parsing "cover0.85:320/energy/zero" and writing them back, with the
// messages of the Python runtime's `Budget.parse` (unioncam_rt/method/budget.py).
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "unioncam/unioncam.hpp"

namespace unioncam {
namespace {

constexpr BudgetRule kRules[] = {BudgetRule::variance, BudgetRule::energy, BudgetRule::mass, BudgetRule::gradcam};
constexpr BudgetFill kFills[] = {BudgetFill::zero, BudgetFill::mean, BudgetFill::estimate, BudgetFill::group};

// Python's repr of a str: single quotes (enough for messages).
std::string quoted(const std::string& text) { return "'" + text + "'"; }

// Python's repr of a float, for messages: the shortest round-trip digits, ".0" on integers.
std::string python_float(double value) {
  char text[40];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(text, sizeof(text), "%.*g", digits, value);
    if (std::strtod(text, nullptr) == value) break;
  }
  std::string out(text);
  if (out.find_first_of(".eni") == std::string::npos) out += ".0";
  return out;
}

std::string strip_lower(const std::string& text) {
  const auto first = text.find_first_not_of(" \t\n\r\f\v");
  if (first == std::string::npos) return "";
  std::string out = text.substr(first, text.find_last_not_of(" \t\n\r\f\v") - first + 1);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

bool all_digits(const std::string& text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); });
}

// Python's regex [0-9]*\.?[0-9]+ : digits, at most one '.', ending with a digit.
bool is_share(const std::string& text) {
  return !text.empty() && std::isdigit(static_cast<unsigned char>(text.back())) &&
         std::count(text.begin(), text.end(), '.') <= 1 &&
         std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c) || c == '.'; });
}

int channel_count(const std::string& digits, const std::string& text) {
  errno = 0;
  const unsigned long long value = std::strtoull(digits.c_str(), nullptr, 10);
  if (errno == ERANGE || value > static_cast<unsigned long long>(INT_MAX)) {
    throw OptionError("--budget " + quoted(text) + ": channel count too large");
  }
  return static_cast<int>(value);
}

OptionError bad_size(const std::string& size) {
  return OptionError("--budget " + quoted(size) + ": give 0 (exact), a channel count K, or coverSHARE[:K], "
                     "optionally /RULE[/FILL], e.g. cover0.85/energy or 128/variance/zero");
}

BudgetRule rule_named(const std::string& name) {
  for (BudgetRule rule : kRules) {
    if (to_string(rule) == name) return rule;
  }
  throw OptionError("budget rule " + quoted(name) + " unknown; available: variance, energy, mass, gradcam");
}

BudgetFill fill_named(const std::string& name) {
  for (BudgetFill fill : kFills) {
    if (to_string(fill) == name) return fill;
  }
  throw OptionError("budget fill " + quoted(name) + " unknown; available: zero, mean, estimate, group");
}

}  // namespace

std::string to_string(BudgetRule rule) {
  switch (rule) {
    case BudgetRule::energy: return "energy";
    case BudgetRule::mass: return "mass";
    case BudgetRule::gradcam: return "gradcam";
    case BudgetRule::variance: break;
  }
  return "variance";
}

std::string to_string(BudgetFill fill) {
  switch (fill) {
    case BudgetFill::mean: return "mean";
    case BudgetFill::estimate: return "estimate";
    case BudgetFill::group: return "group";
    case BudgetFill::zero: break;
  }
  return "zero";
}

void check_budget(const Budget& budget) {
  if (budget.channels < 0) {
    throw OptionError("budget " + std::to_string(budget.channels) + " must be 0 (exact) or a positive channel count");
  }
  if (budget.cover && !(*budget.cover > 0 && *budget.cover <= 1)) {
    throw OptionError("budget cover " + python_float(*budget.cover) + " must lie in (0, 1]");
  }
}

std::string Budget::spec() const {
  if (exact()) return "exact";
  std::string size;
  if (cover) {
    char share[40];
    std::snprintf(share, sizeof(share), "%g", *cover);  // Python's f"{cover:g}"
    size = std::string("cover") + share + (channels ? ":" + std::to_string(channels) : "");
  } else {
    size = std::to_string(channels);
  }
  return size + "/" + to_string(rule) + "/" + to_string(fill);
}

Budget parse_budget(const std::string& text, const std::optional<std::string>& rule,
                    const std::optional<std::string>& fill) {
  std::string size = text;
  std::optional<std::string> rule_name = rule, fill_name = fill;
  if (text.find('/') != std::string::npos) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (std::size_t slash; (slash = text.find('/', start)) != std::string::npos; start = slash + 1) {
      parts.push_back(text.substr(start, slash - start));
    }
    parts.push_back(text.substr(start));
    if (parts.size() > 3) throw OptionError("--budget " + quoted(text) + ": give SIZE[/RULE[/FILL]]");
    size = parts[0];
    // an option given (and not empty) wins over the specification's part, as in Python
    if (!rule || rule->empty()) rule_name = parts[1];
    if (!fill || fill->empty()) fill_name = parts.size() > 2 ? std::optional<std::string>(parts[2]) : std::nullopt;
  }

  Budget budget;
  const std::string value = strip_lower(size);
  if (value.empty() || value == "0" || value == "exact" || value == "none") {
    // exact
  } else if (all_digits(value)) {
    budget.channels = channel_count(value, size);
  } else if (value.rfind("cover", 0) == 0) {
    const std::string rest = value.substr(5);
    const auto colon = rest.find(':');
    const std::string share = rest.substr(0, colon);
    const std::string cap = colon == std::string::npos ? "" : rest.substr(colon + 1);
    if (!is_share(share) || (colon != std::string::npos && !all_digits(cap))) {
      throw bad_size(size);
    }
    budget.cover = std::strtod(share.c_str(), nullptr);
    if (!cap.empty()) budget.channels = channel_count(cap, size);
  } else {
    throw bad_size(size);
  }
  check_budget(budget);
  if (rule_name) budget.rule = rule_named(*rule_name);
  if (fill_name) budget.fill = fill_named(*fill_name);
  return budget;
}

}  // namespace unioncam
