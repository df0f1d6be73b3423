// Masked scoring: collect masks, answer what is known without a pass, cut the rest into
// chunks, call the scoring graph per chunk, put the probabilities back
// (unioncam_rt/method/scoring.py). Exact savings, none of which changes a result:
// * an all-zero mask turns the image black: its probability is black_probs[c] (no pass);
// * identical (image, class, mask) rows are scored once;
// * masks of several images share one call (the graph takes `image_index`).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace unioncam::detail {

/// Runs the scoring graph: probs[n] = softmax(f(images[image_index[n]] * up(masks[n])))[class_index[n]].
class MaskScorer {
 public:
  virtual ~MaskScorer() = default;
  /// `images`: [image_count, 3, H, W]; `masks`: [mask_count, 1, h, w].
  virtual std::vector<float> masked_probs(const float* images, int image_count, const float* masks,
                                          int mask_count, const std::int64_t* image_index,
                                          const std::int64_t* class_index) const = 0;
};

/// Masks to score, each tied to one image of the batch and one class.
struct MaskRows {
  explicit MaskRows(std::size_t plane) : plane(plane) {}
  std::size_t plane;                 // h * w
  std::vector<float> masks;          // size() * plane, values in [0, 1]
  std::vector<int> image;            // the row's image in the batch
  std::vector<std::int64_t> klass;   // the class whose probability is wanted
  std::size_t size() const { return image.size(); }
  void add(const float* mask, int image_index, std::int64_t class_index);
};

/// The batch the masks refer to and how to score them.
struct ScoringBatch {
  const MaskScorer& scorer;
  const float* images;            // [B, 3, H, W]
  std::size_t image_floats;       // 3 * H * W
  const std::vector<double>& black_probs;
  int batch_size;                 // masked images per scoring call
  std::vector<int>& passes;       // masked passes run, per image (incremented)
  /// Scores UnionCAM's three maps (which pick the branch); null: `scorer`. Reduced-precision
  /// engines give an fp32 scorer here, as the Python runtime does.
  const MaskScorer* decision_scorer = nullptr;
};

/// p_c(I * up(mask)) for every row, in double.
std::vector<double> score_masks(const ScoringBatch& batch, const MaskRows& rows);

}  // namespace unioncam::detail
