// Unit tests of the C++ pieces that must match Python exactly.
//
//   unioncam_unit_tests [--reference DIR]
//
// Without --reference: self-contained checks (SHA-256 standard vectors, EXIF parsing,
// masked-scoring bookkeeping with a fake scorer, literal numpy values). With it: every case
// in DIR/index.json, written by tests/make_reference.py from numpy, Pillow and unioncam_rt
// (Pillow-exact resize, image decoding, percentile, minmax, bilinear upsample, denoised
// map, Grad-CAM, fusion, channel budget and its specifications). Exit 0 when everything passes.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include <unistd.h>

#include "cam_math.hpp"
#include "channel_selection.hpp"
#include "exif_orientation.hpp"
#include "pillow_resize.hpp"
#include "scoring.hpp"
#include "sha256.hpp"
#include "union_steps.hpp"
#include "unioncam/unioncam.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace unioncam;
using namespace unioncam::detail;

namespace {

struct Results {
  int checks = 0;
  int failures = 0;
  void check(bool ok, const std::string& what) {
    ++checks;
    if (!ok) {
      ++failures;
      if (failures <= 40) std::fprintf(stderr, "FAIL: %s\n", what.c_str());
    }
  }
};

template <typename T>
std::vector<T> read_array(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  std::vector<T> out(bytes.size() / sizeof(T));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
  return out;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst;
}

// ----------------------------------------------------------------------- self-contained

void sha256_vectors(Results& r) {
  const std::map<std::string, std::string> vectors = {
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
       "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
  };
  for (const auto& [text, digest] : vectors) r.check(sha256_hex(text) == digest, "sha256('" + text + "')");

  // One million 'a', fed in uneven pieces.
  Sha256 hash;
  const std::string block(997, 'a');
  std::size_t left = 1000000;
  for (std::size_t piece = 1; left > 0; piece = piece % 997 + 13) {
    const std::size_t n = std::min({piece, left, block.size()});
    hash.update(block.data(), n);
    left -= n;
  }
  r.check(hash.hex_digest() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
          "sha256 of one million 'a' in pieces");

  // Lengths around the 55/56/64-byte padding boundaries agree between one update and bytes.
  for (std::size_t n : {55u, 56u, 57u, 63u, 64u, 65u, 119u, 120u}) {
    const std::string text(n, 'x');
    Sha256 bytewise;
    for (char c : text) bytewise.update(&c, 1);
    r.check(bytewise.hex_digest() == sha256_hex(text), "sha256 bytewise == whole, length " + std::to_string(n));
  }

  const fs::path tmp = fs::temp_directory_path() / ("unioncam-sha-" + std::to_string(::getpid()));
  std::ofstream(tmp, std::ios::binary) << "abc";
  r.check(sha256_file(tmp.string()) == vectors.at("abc"), "sha256_file");
  fs::remove(tmp);
}

void exif_parsing(Results& r) {
  // "Exif\0\0" + big-endian TIFF, one IFD entry: orientation (SHORT) = 6.
  const std::vector<std::uint8_t> be = {'E', 'x', 'i', 'f', 0, 0, 'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1,
                                        0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0};
  r.check(exif_orientation(be.data(), be.size()) == 6, "EXIF big-endian orientation 6");
  const std::vector<std::uint8_t> le = {'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 8, 0, 0, 0};
  r.check(exif_orientation(le.data(), le.size()) == 8, "EXIF little-endian orientation 8");
  r.check(exif_orientation(be.data(), 12) == 1, "truncated EXIF -> 1");
  r.check(exif_orientation(nullptr, 0) == 1, "no EXIF -> 1");

  RgbImage image{3, 2, std::vector<std::uint8_t>(18, 0)};
  for (int i = 0; i < 6; ++i) image.pixels[3 * i] = std::uint8_t(i);
  // 0 1 2 / 3 4 5 rotated 90 degrees counter-clockwise: 2 5 / 1 4 / 0 3
  const RgbImage ccw = apply_orientation(image, 8);
  std::vector<int> got;
  for (int i = 0; i < 6; ++i) got.push_back(ccw.pixels[3 * i]);
  r.check(ccw.width == 2 && ccw.height == 3 && got == std::vector<int>({2, 5, 1, 4, 0, 3}), "orientation 8 = rotate 90 ccw");
}

void percentile_literals(Results& r) {
  // np.percentile([1, 2, 3, 4], q) for q = 0, 10, 50, 75, 100 -> 1, 1.3, 2.5, 3.25, 4
  const std::vector<std::pair<double, double>> expected = {{0, 1.0}, {10, 1.3}, {50, 2.5}, {75, 3.25}, {100, 4.0}};
  for (const auto& [q, value] : expected) {
    std::vector<double> v = {4, 2, 1, 3};
    r.check(std::fabs(percentile_linear(v, q) - value) < 1e-15, "percentile([1,2,3,4], " + std::to_string(q) + ")");
  }
}

// Scoring bookkeeping with a fake graph: probs = image index + 0.1 * class + mean(mask) / 10.
class FakeScorer : public MaskScorer {
 public:
  mutable std::vector<int> call_sizes;
  mutable std::vector<int> images_sent;
  std::vector<float> masked_probs(const float* images, int image_count, const float* masks, int mask_count,
                                  const std::int64_t* image_index, const std::int64_t* class_index) const override {
    call_sizes.push_back(mask_count);
    images_sent.push_back(image_count);
    std::vector<float> out(mask_count);
    for (int i = 0; i < mask_count; ++i) {
      const float image_value = images[image_index[i] * 3];  // each image is filled with its batch index
      float mean = 0;
      for (int j = 0; j < 4; ++j) mean += masks[i * 4 + j] / 4;
      out[i] = image_value + 0.1f * class_index[i] + mean / 10;
    }
    return out;
  }
};

void scoring_bookkeeping(Results& r) {
  const int batch = 3;
  std::vector<float> images(batch * 3);
  for (int b = 0; b < batch; ++b) std::fill(images.begin() + 3 * b, images.begin() + 3 * (b + 1), float(b));
  const std::vector<double> black = {0.5, 0.25};
  std::vector<int> passes(batch, 0);
  FakeScorer scorer;
  ScoringBatch scoring{scorer, images.data(), 3, black, 2, passes};
  MaskRows rows(4);
  const float a[4] = {1, 0, 0, 1}, b[4] = {0.5f, 0.5f, 0, 0}, zero[4] = {0, 0, 0, 0}, negzero[4] = {-0.0f, 0, 0, 0};
  rows.add(a, 0, 1);        // scored
  rows.add(zero, 1, 1);     // black: 0.25, no pass
  rows.add(a, 0, 1);        // duplicate of row 0
  rows.add(b, 2, 0);        // scored
  rows.add(a, 2, 1);        // same mask, other image: scored
  rows.add(negzero, 2, 0);  // -0.0 counts as zero: black 0.5
  const std::vector<double> probs = score_masks(scoring, rows);
  const std::vector<double> expected = {0.0 + 0.1 + 0.05, 0.25, 0.15, 2.0 + 0.025, 2.0 + 0.1 + 0.05, 0.5};
  bool close = probs.size() == expected.size();
  for (std::size_t i = 0; close && i < expected.size(); ++i) close = std::fabs(probs[i] - expected[i]) < 1e-6;
  r.check(close, "score_masks values (black rows, duplicates)");
  r.check(scorer.call_sizes == std::vector<int>({2, 1}), "3 unique rows in chunks of 2");
  r.check(scorer.images_sent == std::vector<int>({2, 1}), "only the images a chunk uses are sent");
  r.check(passes == std::vector<int>({1, 0, 2}), "passes counted per image");
}

// ----------------------------------------------------------------------- reference data

void resize_reference(Results& r, const json& cases, const fs::path& dir) {
  int equal = 0;
  for (const json& c : cases) {
    const int w = c["width"], h = c["height"], ow = c["out_width"], oh = c["out_height"];
    const auto input = read_array<std::uint8_t>(dir / c["input"].get<std::string>());
    const auto expected = read_array<std::uint8_t>(dir / c["expected"].get<std::string>());
    const auto got = resize_bilinear_u8(input.data(), w, h, 3, ow, oh);
    std::size_t differ = 0;
    for (std::size_t i = 0; i < std::min(got.size(), expected.size()); ++i) differ += got[i] != expected[i];
    const bool ok = got.size() == expected.size() && differ == 0;
    equal += ok;
    r.check(ok, "Pillow resize " + std::to_string(w) + "x" + std::to_string(h) + " -> " + std::to_string(ow) + "x" +
                    std::to_string(oh) + ": " + std::to_string(differ) + " bytes differ");
  }
  std::printf("  Pillow BILINEAR resize: %d of %zu sizes byte-equal\n", equal, cases.size());
}

void decode_reference(Results& r, const json& cases, const fs::path& dir) {
  int equal = 0;
  for (const json& c : cases) {
    const std::string file = c["file"];
    const auto expected = read_array<std::uint8_t>(dir / c["expected"].get<std::string>());
    try {
      const RgbImage image = read_image(file);
      std::size_t differ = 0;
      for (std::size_t i = 0; i < std::min(image.pixels.size(), expected.size()); ++i) {
        differ += image.pixels[i] != expected[i];
      }
      const bool ok = image.width == c["width"] && image.height == c["height"] && image.pixels.size() == expected.size() &&
                      differ == 0;
      equal += ok;
      r.check(ok, "decode " + fs::path(file).filename().string() + ": " + std::to_string(image.width) + "x" +
                      std::to_string(image.height) + ", " + std::to_string(differ) + " bytes differ from Pillow");
    } catch (const Error& exc) {
      r.check(false, "decode " + file + ": " + exc.what());
    }
  }
  std::printf("  image decoding: %d of %zu files equal to Python's open_image\n", equal, cases.size());
}

void budget_reference(Results& r, const json& index, const fs::path& dir);

void maths_reference(Results& r, const json& index, const fs::path& dir) {
  auto f64 = [&](const json& name) { return read_array<double>(dir / name.get<std::string>()); };
  auto f32 = [&](const json& name) { return read_array<float>(dir / name.get<std::string>()); };

  int exact = 0;
  for (const json& c : index["percentile"]) {
    std::vector<double> values = f64(c["values"]);
    const double got = percentile_linear(values, c["q"].get<double>());
    exact += got == c["expected"].get<double>();
    r.check(got == c["expected"].get<double>(), "percentile n=" + std::to_string(c["n"].get<int>()) + " q=" +
                                                    std::to_string(c["q"].get<double>()) + " is exactly numpy's");
  }
  std::printf("  percentile: %d of %zu exactly equal to np.percentile\n", exact, index["percentile"].size());

  for (const json& c : index["upsample"]) {
    const auto got = resize_bilinear(f64(c["map"]), c["height"], c["width"], c["out_height"], c["out_width"]);
    r.check(max_abs_diff(got, f64(c["expected"])) < 1e-12, "bilinear upsample " + c["map"].get<std::string>());
  }
  for (const json& c : index["minmax"]) {
    r.check(max_abs_diff(minmax(f64(c["map"])), f64(c["expected"])) < 1e-15, "minmax " + c["map"].get<std::string>());
  }
  for (const json& c : index["minmax_f32"]) {
    const auto map = f32(c["map"]);
    std::vector<float> got(map.size());
    minmax_f32(map.data(), map.size(), got.data());
    r.check(got == f32(c["expected"]), "minmax_f32 equals numpy float32 " + c["map"].get<std::string>());
  }
  for (const json& c : index["features"]) {
    const auto acts = f32(c["activations"]);
    const auto grads = f32(c["gradients"]);
    const ChannelMaps a{acts.data(), c["channels"], c["height"], c["width"]};
    const ChannelMaps g{grads.data(), c["channels"], c["height"], c["width"]};
    const double denoise_err = max_abs_diff(denoised_map(a, g, c["theta"]), f64(c["denoise"]));
    const double gradcam_err = max_abs_diff(gradcam_map(a, g), f64(c["gradcam"]));
    r.check(denoise_err < 1e-12, "denoised map (theta " + std::to_string(c["theta"].get<double>()) +
                                     ") max error " + std::to_string(denoise_err));
    r.check(gradcam_err < 1e-12, "Grad-CAM map max error " + std::to_string(gradcam_err));
  }
  for (const json& c : index["fuse"]) {
    const auto got = fuse(f64(c["denoise"]), f64(c["region"]), c["beta_denoise"], c["beta_region"]);
    r.check(max_abs_diff(got, f64(c["expected"])) < 1e-14, "fuse with betas " + c["beta_denoise"].dump() + ", " +
                                                               c["beta_region"].dump());
  }
  budget_reference(r, index, dir);
}

std::optional<std::string> optional_string(const json& value) {
  return value.is_null() ? std::nullopt : std::optional<std::string>(value.get<std::string>());
}

// unioncam_rt.method.budget on one image: statistics, selection, fills, peak groups, masks.
void budget_reference(Results& r, const json& index, const fs::path& dir) {
  auto f64 = [&](const json& name) { return read_array<double>(dir / name.get<std::string>()); };
  auto f32 = [&](const json& name) { return read_array<float>(dir / name.get<std::string>()); };
  int equal = 0;
  for (const json& c : index["budget"]) {
    const std::string spec = c["spec"];
    const auto acts = f32(c["activations"]);
    const auto grads = f32(c["gradients"]);
    const ChannelMaps a{acts.data(), c["channels"], c["height"], c["width"]};
    const ChannelMaps g{grads.data(), c["channels"], c["height"], c["width"]};
    const std::vector<char> live = live_channels(a);
    for (BudgetRule rule : {BudgetRule::variance, BudgetRule::energy, BudgetRule::mass, BudgetRule::gradcam}) {
      const auto expected = f64(c["statistic"][to_string(rule)]);
      const auto got = channel_statistic(rule, a, g);
      bool close = got.size() == expected.size();
      for (std::size_t k = 0; close && k < got.size(); ++k) {
        close = std::fabs(got[k] - expected[k]) <= 1e-12 * std::max(1.0, std::fabs(expected[k]));
      }
      r.check(close, "channel statistic " + to_string(rule));
    }
    const Budget budget = parse_budget(spec);
    const std::vector<int> scored = select_channels(budget, live, a, g);
    bool ok = scored == c["scored"].get<std::vector<int>>();
    r.check(ok, "channels scored under budget " + spec);
    std::vector<char> is_scored(a.channels, 0), unscored(a.channels, 0);
    for (int k : scored) is_scored[k] = 1;
    for (int k = 0; k < a.channels; ++k) unscored[k] = live[k] && !is_scored[k];

    std::vector<double> weights = f64(c["scores"]);
    fill_weights(budget, weights, is_scored, live, channel_statistic(budget.rule, a, g));
    const double fill_error = max_abs_diff(weights, f64(c["filled"]));
    r.check(fill_error < 1e-12, "fill weights under budget " + spec + ": max error " + std::to_string(fill_error));
    ok = ok && fill_error < 1e-12;

    const std::vector<int> groups = peak_groups(a, unscored);
    r.check(groups == c["groups"].get<std::vector<int>>(), "peak groups under budget " + spec);
    const std::vector<ChannelGroup> found = group_masks(a, groups);
    std::vector<int> ids;
    std::vector<float> masks;
    for (const ChannelGroup& group : found) {
      ids.push_back(group.id);
      masks.insert(masks.end(), group.mask.begin(), group.mask.end());
    }
    const bool same_groups = ids == c["group_ids"].get<std::vector<int>>() && masks == f32(c["group_masks"]);
    r.check(same_groups, "group masks (ids, float32 means) under budget " + spec);
    equal += ok && same_groups && groups == c["groups"].get<std::vector<int>>();
  }
  std::printf("  channel budget: %d of %zu cases equal to unioncam_rt.method.budget\n", equal, index["budget"].size());

  int parsed = 0;
  for (const json& c : index["budget_spec"]) {
    const std::string text = c["text"];
    std::string got_error;
    Budget budget;
    try {
      budget = parse_budget(text, optional_string(c["rule"]), optional_string(c["fill"]));
    } catch (const OptionError& exc) {
      got_error = exc.what();
    }
    bool ok;
    if (c.contains("error")) {
      ok = got_error == c["error"].get<std::string>();
      r.check(ok, "parse_budget('" + text + "') fails with Python's message: got '" + got_error + "'");
    } else {
      ok = got_error.empty() && budget.spec() == c["spec"].get<std::string>() && budget.channels == c["channels"] &&
           budget.cover.has_value() == !c["cover"].is_null() &&
           (!budget.cover || *budget.cover == c["cover"].get<double>()) && to_string(budget.rule) == c["budget_rule"] &&
           to_string(budget.fill) == c["budget_fill"];
      r.check(ok, "parse_budget('" + text + "') = " + budget.spec() + (got_error.empty() ? "" : " (" + got_error + ")"));
    }
    parsed += ok;
  }
  std::printf("  budget specifications: %d of %zu parsed as Budget.parse\n", parsed, index["budget_spec"].size());
}

}  // namespace

int main(int argc, char** argv) {
  std::string reference;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--reference" && i + 1 < argc) reference = argv[++i];
  }
  Results r;
  sha256_vectors(r);
  exif_parsing(r);
  percentile_literals(r);
  scoring_bookkeeping(r);
  if (!reference.empty()) {
    const fs::path dir(reference);
    std::ifstream file(dir / "index.json");
    if (!file) {
      std::fprintf(stderr, "no %s/index.json; run tests/make_reference.py first\n", reference.c_str());
      return 2;
    }
    const json index = json::parse(file);
    resize_reference(r, index["resize"], dir);
    decode_reference(r, index["decode"], dir);
    maths_reference(r, index, dir);
  } else {
    std::printf("  (no --reference DIR: numpy/Pillow reference cases not run)\n");
  }
  std::printf("%d checks, %d failed\n", r.checks, r.failures);
  return r.failures == 0 ? 0 : 1;
}
