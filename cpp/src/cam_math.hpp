// Array maths of the CAM methods, on one image's maps (the C++ side of
// unioncam_rt/method/ops.py and gradient.py). Maps are row-major h*w; activations and
// gradients are one image's [K, h, w] float32 from the features graph. Everything is
// computed in double like numpy does, except where numpy itself works in float32 (the
// region masks, see `minmax_f32`).
#pragma once

#include <cstddef>
#include <vector>

namespace unioncam::detail {

/// One image's [K, h, w] float32 tensor.
struct ChannelMaps {
  const float* data = nullptr;
  int channels = 0;
  int height = 0;
  int width = 0;
  std::size_t plane() const { return std::size_t(height) * width; }
  const float* channel(int k) const { return data + std::size_t(k) * plane(); }
};

/// numpy's `np.percentile(values, q)` with the default linear method (q in [0, 100]),
/// including its two-sided interpolation formula. `values` is reordered.
double percentile_linear(std::vector<double>& values, double q);

/// max == min over the map.
bool is_constant(const double* map, std::size_t n);
bool is_constant(const float* map, std::size_t n);

/// Min-max normalised copy in [0, 1]; a constant map becomes zeros.
std::vector<double> minmax(const std::vector<double>& map);

/// Min-max normalisation computed in float32, as numpy does on float32 arrays:
/// `(x - lo) / (hi - lo)`, zeros for a constant map. Writes n values to `out`.
void minmax_f32(const float* map, std::size_t n, float* out);

/// Bilinear resize of an h*w map to H*W with half-pixel centres (align_corners=False),
/// neighbours clamped at the edges: numpy `ops.resize_bilinear`, torch `interpolate`.
std::vector<double> resize_bilinear(const std::vector<double>& map, int height, int width,
                                    int out_height, int out_width);

/// ReLU(sum_k weights[k] * A_k); channels with weight 0 are skipped.
std::vector<double> weighted_sum_relu(const ChannelMaps& activations,
                                      const std::vector<double>& weights);

/// Grad-CAM: ReLU(sum_k mean_ij(W_k) A_k).
std::vector<double> gradcam_map(const ChannelMaps& activations, const ChannelMaps& gradients);

/// UnionCAM's Activation Map Denoising: per channel t_k = percentile(W_k, theta);
/// W'_k = W_k where W_k >= t_k else 0; alpha_k = max(W'_k, 0) / max(n_k, 1) with
/// n_k = #(W'_k > 0); L = ReLU(sum_k alpha_k * A_k) (element-wise).
std::vector<double> denoised_map(const ChannelMaps& activations, const ChannelMaps& gradients,
                                 double theta);

/// Softmax of one row of logits, in double.
std::vector<double> softmax(const float* logits, std::size_t n);

}  // namespace unioncam::detail
