// Tests of Engine on a real engine directory (run by tests/test_cpp.py with the session's
// EfficientNet-Lite0 export):
//
//   unioncam_engine_tests ENGINE_DIR IMAGE1 IMAGE2
//
// * two threads explaining at the same time on one Engine get the same results as
//   sequential calls (thread safety of explain);
// * float CHW input equals 8-bit input after Engine::prepare;
// * Grad-CAM runs no masked pass; Score-CAM with a channel budget K runs at most K per image;
// * bad inputs and options throw the documented exception types.
#include <cmath>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "unioncam/unioncam.hpp"

using namespace unioncam;

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAIL", what.c_str());
  if (!ok) ++failures;
}

bool same(const Explanation& a, const Explanation& b, double tol) {
  if (a.class_index != b.class_index || a.masked_passes != b.masked_passes || a.cam.size() != b.cam.size()) return false;
  if (a.union_parts.has_value() != b.union_parts.has_value()) return false;
  if (a.union_parts) {
    const UnionParts &p = *a.union_parts, &q = *b.union_parts;
    if (p.branch != q.branch || std::fabs(p.beta_denoise - q.beta_denoise) > tol ||
        std::fabs(p.beta_region - q.beta_region) > tol || std::fabs(p.beta_fused - q.beta_fused) > tol) {
      return false;
    }
  }
  for (std::size_t i = 0; i < a.cam.size(); ++i) {
    if (std::fabs(a.cam[i] - b.cam[i]) > tol) return false;
  }
  return true;
}

template <typename Exception, typename Fn>
bool throws(Fn fn) {
  try {
    fn();
  } catch (const Exception&) {
    return true;
  } catch (...) {
    return false;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s ENGINE_DIR IMAGE1 IMAGE2\n", argv[0]);
    return 2;
  }
  const Engine engine(argv[1]);
  const std::vector<RgbImage> images = {read_image(argv[2]), read_image(argv[3])};

  // Sequential reference: each image alone.
  std::vector<Explanation> reference;
  for (const RgbImage& image : images) reference.push_back(engine.explain(std::vector<RgbImage>{image}).front());

  // Two threads at once, each its own image, on the same Engine.
  std::vector<Explanation> concurrent(images.size());
  std::vector<std::string> errors(images.size());
  {
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < images.size(); ++t) {
      threads.emplace_back([&, t] {
        try {
          concurrent[t] = engine.explain(std::vector<RgbImage>{images[t]}).front();
        } catch (const std::exception& exc) {
          errors[t] = exc.what();
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
  }
  for (std::size_t t = 0; t < images.size(); ++t) {
    check(errors[t].empty() && same(concurrent[t], reference[t], 1e-6),
          "thread " + std::to_string(t) + " equals the sequential result" + (errors[t].empty() ? "" : ": " + errors[t]));
  }

  // A batch of both images shares scoring calls and gives the same answers.
  const std::vector<Explanation> batched = engine.explain(images);
  for (std::size_t i = 0; i < images.size(); ++i) {
    check(same(batched[i], reference[i], 1e-4), "batched image " + std::to_string(i) + " equals the single-image result");
  }

  ExplainOptions gradcam;
  gradcam.method = Method::gradcam;
  const Explanation g = engine.explain(std::vector<RgbImage>{images[0]}, gradcam).front();
  check(g.masked_passes == 0 && !g.union_parts && g.cam.size() == reference[0].cam.size(), "Grad-CAM: no masked pass");

  // Float input after prepare equals 8-bit input.
  const std::vector<FloatImage> prepared = {engine.prepare(images[0])};
  check(same(engine.explain(prepared, gradcam).front(), g, 0.0), "FloatImage input equals RgbImage input");

  ExplainOptions budget;
  budget.method = Method::scorecam;
  budget.budget = parse_budget("16");
  const Explanation s = engine.explain(std::vector<RgbImage>{images[0]}, budget).front();
  check(s.masked_passes > 0 && s.masked_passes <= 16, "Score-CAM with budget 16: " + std::to_string(s.masked_passes) + " passes");

  ExplainOptions fixed_class;
  fixed_class.class_index = 1;
  fixed_class.method = Method::gradcam;
  check(engine.explain(std::vector<RgbImage>{images[0]}, fixed_class).front().class_index == 1, "class index is honoured");

  ExplainOptions bad_class;
  bad_class.class_index = static_cast<int>(engine.class_names().size());
  check(throws<OptionError>([&] { engine.explain(images, bad_class); }), "class out of range -> OptionError");
  ExplainOptions bad_theta;
  bad_theta.theta = 101;
  check(throws<OptionError>([&] { engine.explain(images, bad_theta); }), "theta 101 -> OptionError");
  check(throws<ImageError>([&] { engine.explain(std::vector<FloatImage>{FloatImage{2, 2, std::vector<float>(12)}}); }),
        "wrong FloatImage size -> ImageError");
  check(throws<OptionError>([&] { engine.resolve_class("zebra-ish"); }) && engine.resolve_class("Tench") == 0 &&
            engine.resolve_class("-1") == -1,
        "resolve_class: names, -1, unknown names");
  check(throws<EngineDirError>([] { Engine("/nonexistent/engine"); }), "missing directory -> EngineDirError");

  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
