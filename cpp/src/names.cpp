// Names of methods and precisions, as the CLI and the JSON spell them.
#include "unioncam/unioncam.hpp"

namespace unioncam {

std::string to_string(Method method) {
  switch (method) {
    case Method::gradcam: return "gradcam";
    case Method::scorecam: return "scorecam";
    case Method::unioncam: break;
  }
  return "unioncam";
}

Method parse_method(const std::string& name) {
  for (Method m : {Method::unioncam, Method::gradcam, Method::scorecam}) {
    if (to_string(m) == name) return m;
  }
  throw OptionError("unknown method '" + name + "'; available: unioncam, gradcam, scorecam");
}

std::string to_string(Precision precision) { return precision == Precision::bf16 ? "bf16" : "fp32"; }

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::fp32;
  if (name == "bf16") return Precision::bf16;
  throw OptionError("unknown precision '" + name + "'; available: fp32 (exact), bf16");
}

}  // namespace unioncam
