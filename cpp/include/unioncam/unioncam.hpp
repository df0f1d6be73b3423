// unioncam: UnionCAM explanations from an exported engine directory, on OpenVINO's CPU runtime.
//
// The public interface: open an engine directory once, explain batches of images from any
// number of threads. Everything OpenVINO-specific stays behind `Engine`'s private
// implementation, so this header pulls in the standard library only.
//
// The method (Hu et al. 2024, "UnionCAM") and every choice made where the paper leaves room
// are the same as the Python runtime's; see the project README ("Method choices") and
// cpp/README.md.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace unioncam {

// ---------------------------------------------------------------------------------------
// Errors. Everything a user can act on derives from `Error` and has a one-line message
// that names the bad value and what is allowed. Anything else escaping is a bug.

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// An engine directory is missing, unreadable, of an unknown schema or tampered with.
class EngineDirError : public Error {
 public:
  using Error::Error;
};

/// An image file cannot be read or decoded, or an image has the wrong shape.
class ImageError : public Error {
 public:
  using Error::Error;
};

/// An option is out of range (class index, method, theta, batch size, budget...).
class OptionError : public Error {
 public:
  using Error::Error;
};

/// OpenVINO failed while compiling or running a graph.
class InferenceError : public Error {
 public:
  using Error::Error;
};

// ---------------------------------------------------------------------------------------
// Options

/// `manifest.json` schema versions this library reads (as the Python runtime: 2; a schema-1
/// directory is refused with "re-export the model").
inline constexpr std::array<int, 1> kSchemaVersions{2};

/// Inference precision of OpenVINO's CPU plugin. `fp32` (default) is exact: it is forced,
/// because the CPU plugin otherwise picks bf16 by itself on CPUs that have it.
enum class Precision { fp32, bf16 };

enum class Method { unioncam, gradcam, scorecam };

/// "unioncam", "gradcam" or "scorecam".
std::string to_string(Method method);
/// Parses a method name; throws `OptionError` naming the methods available.
Method parse_method(const std::string& name);
/// "fp32" or "bf16".
std::string to_string(Precision precision);
/// Parses a precision name; throws `OptionError`.
Precision parse_precision(const std::string& name);

/// How a channel budget picks the region-map channels it scores (ranking statistic per
/// channel, over its h*w activations A_k and gradients W_k).
enum class BudgetRule {
  variance,  // population variance of A_k (default)
  energy,    // sum of A_k^2
  mass,      // sum of |A_k|
  gradcam,   // mean(W_k) * mean(A_k); adaptive sizes use variance for coverage
};

/// What the live channels a budget leaves unscored weigh.
enum class BudgetFill {
  zero,      // 0 (default)
  mean,      // the mean score of the image's scored channels
  estimate,  // per-image least-squares line from the rule's statistic to the score, in [0, 1]
  group,     // grouped by the grid cell of their activation peak; each group's mean mask is
             // scored once (one extra pass per non-empty group), members take its score
};

/// Region-map channel budget: the Python runtime's `unioncam_rt.method.budget.Budget`.
///
/// Per image, among the non-constant channels: rank by `rule` (ties to the lower channel
/// index); score the first `channels` (fixed size), or with `cover` the fewest channels whose
/// cumulative statistic reaches `cover` x the image's total (variance for `gradcam`), at
/// most `channels` when `channels` > 0; weigh the rest by `fill`. Exact (every live channel
/// scored) when `channels` is 0 and there is no `cover`. Build one with `parse_budget`.
struct Budget {
  int channels = 0;             // K; 0 = no fixed count
  std::optional<double> cover;  // share in (0, 1], or none
  BudgetRule rule = BudgetRule::variance;
  BudgetFill fill = BudgetFill::zero;

  bool exact() const { return channels == 0 && !cover; }
  /// As a `--budget` string: "exact", "128/variance/zero", "cover0.85:320/energy/zero".
  std::string spec() const;
};

/// Parses a budget specification, as `Budget.parse` in Python: "0", "exact" (or "none", "")
/// -> exact; "K" -> K channels; "coverS" -> adaptive; "coverS:K" -> adaptive, at most K;
/// each optionally followed by "/RULE[/FILL]" ("cover0.85/energy", "128/variance/zero").
/// `rule` and `fill`, when given and not empty, win over the ones in `text`
/// (`--budget-rule`, `--budget-fill`). Throws `OptionError` with Python's messages.
Budget parse_budget(const std::string& text, const std::optional<std::string>& rule = std::nullopt,
                    const std::optional<std::string>& fill = std::nullopt);

/// Throws `OptionError` unless `channels` >= 0 and `cover`, if any, lies in (0, 1].
void check_budget(const Budget& budget);

/// "variance", "energy", "mass", "gradcam".
std::string to_string(BudgetRule rule);
/// "zero", "mean", "estimate", "group".
std::string to_string(BudgetFill fill);

struct EngineOptions {
  /// Inference precision (default fp32, exact).
  Precision precision = Precision::fp32;
  /// OpenVINO inference threads per request; 0 (default) = OpenVINO's choice (all cores).
  int threads = 0;
};

struct ExplainOptions {
  /// Which CAM (default UnionCAM).
  Method method = Method::unioncam;
  /// Class to explain for every image; -1 (default) = each image's top-1 prediction.
  int class_index = -1;
  /// UnionCAM's denoising percentile, in [0, 100] (default 10).
  double theta = 10.0;
  /// Masked images per scoring call (default 16, as the Python runtime).
  int batch_size = 16;
  /// Region-map channel budget (UnionCAM and Score-CAM); default exact, every non-constant
  /// channel is scored. Anything else changes the result: opt-in, e.g.
  /// `options.budget = parse_budget("cover0.85:320/energy")`.
  Budget budget;
};

// ---------------------------------------------------------------------------------------
// Images

/// 8-bit RGB, row-major HWC, any size.
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> pixels;  // height * width * 3
};

/// Float RGB in [0, 1], planar CHW at the engine's input size (what the graphs take).
struct FloatImage {
  int width = 0;
  int height = 0;
  std::vector<float> chw;  // 3 * height * width
};

/// Reads a PNG or JPEG file upright (JPEG EXIF orientation applied) as 8-bit RGB, with the
/// Python runtime's rules: greyscale replicated, palette expanded, 16-bit grey scaled by
/// 255/65535, other 16-bit data cut to its high byte, transparency composited onto white.
/// Throws `ImageError`.
RgbImage read_image(const std::string& path);

/// Resizes like Pillow's `Image.resize((width, height), Image.BILINEAR)` on an RGB image:
/// the same pixels, byte for byte (antialiased when shrinking, fixed-point coefficients).
RgbImage resize_bilinear_pillow(const RgbImage& image, int width, int height);

/// 8-bit RGB at the target size to float CHW in [0, 1] (`value / 255` in float32).
FloatImage to_float_chw(const RgbImage& image);

// ---------------------------------------------------------------------------------------
// Results

struct ClassScore {
  int class_index = 0;
  std::string class_name;
  double probability = 0.0;
};

/// UnionCAM's parts; maps at feature resolution (h * w, row-major).
struct UnionParts {
  double beta_denoise = 0.0;
  double beta_region = 0.0;
  double beta_fused = 0.0;
  std::string branch;  // "fused" or "region"
  std::vector<double> denoise_map;
  std::vector<double> region_map;
  std::vector<double> fused_map;
};

struct Timings {
  double features_s = 0.0;  // the features pass, split evenly over the batch
  double method_s = 0.0;    // the method (masked passes included), split evenly
};

struct Explanation {
  Method method = Method::unioncam;
  int class_index = 0;
  std::string class_name;
  double probability = 0.0;        // softmax of the plain image for `class_index`
  std::vector<ClassScore> top5;    // of the plain image
  int height = 0;                  // the engine's input size
  int width = 0;
  std::vector<float> cam;          // height * width, in [0, 1]
  bool constant_map = false;       // the map was constant: `cam` is all zeros
  int masked_passes = 0;           // masked forward passes run for this image
  std::optional<UnionParts> union_parts;  // UnionCAM only
  Timings timings;
};

// ---------------------------------------------------------------------------------------
// The engine

/// An exported engine directory (`unioncam-rt export`) compiled on OpenVINO's CPU plugin.
///
/// Opening checks `manifest.json` (schema version, shapes) and the sha256 of every file it
/// lists, then compiles `features.onnx` and `scores.onnx` once. `explain` is const and
/// thread-safe: concurrent calls each take their own OpenVINO infer requests from a pool.
class Engine {
 public:
  /// Throws `EngineDirError` (missing/tampered/unknown directory) or `InferenceError`.
  explicit Engine(const std::string& directory, const EngineOptions& options = {});
  ~Engine();
  Engine(Engine&&) noexcept;
  Engine& operator=(Engine&&) noexcept;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const std::string& model() const;
  int schema_version() const;
  /// (H, W) of the images the graphs take.
  std::array<int, 2> input_size() const;
  /// (K, h, w) of the target layer.
  std::array<int, 3> feature_shape() const;
  const std::vector<std::string>& class_names() const;
  Precision precision() const;

  /// A class index ("207", or -1) or a class name (case-insensitive) to an index;
  /// throws `OptionError` naming the valid range.
  int resolve_class(const std::string& index_or_name) const;

  /// Resizes (Pillow-exact bilinear) to the input size and converts to float CHW.
  FloatImage prepare(const RgbImage& image) const;

  /// Explains 8-bit RGB images of any size (resized with `prepare`). The masks of all the
  /// images share scoring calls. Throws `OptionError`, `ImageError`, `InferenceError`.
  std::vector<Explanation> explain(const std::vector<RgbImage>& images,
                                   const ExplainOptions& options = {}) const;

  /// Explains float CHW images already at the input size, values in [0, 1].
  std::vector<Explanation> explain(const std::vector<FloatImage>& images,
                                   const ExplainOptions& options = {}) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace unioncam
