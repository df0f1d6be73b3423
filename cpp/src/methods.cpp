#include "methods.hpp"

#include "channel_selection.hpp"
#include "union_steps.hpp"

namespace unioncam::detail {

ChannelMaps FeatureBatch::activations_of(int b) const {
  return {activations.data() + std::size_t(b) * shape[0] * plane(), shape[0], shape[1], shape[2]};
}

ChannelMaps FeatureBatch::gradients_of(int b) const {
  return {gradients.data() + std::size_t(b) * shape[0] * plane(), shape[0], shape[1], shape[2]};
}

std::vector<std::vector<double>> region_weights(MethodContext& ctx) {
  const FeatureBatch& feats = ctx.features;
  const Budget& budget = ctx.budget;
  const std::size_t plane = feats.plane();
  const int channels = feats.shape[0];
  std::vector<std::vector<char>> live(feats.batch), scored(feats.batch, std::vector<char>(channels, 0));
  MaskRows rows(plane);
  std::vector<float> mask(plane);
  for (int b = 0; b < feats.batch; ++b) {
    const ChannelMaps acts = feats.activations_of(b);
    live[b] = live_channels(acts);
    for (int k : select_channels(budget, live[b], acts, feats.gradients_of(b))) {
      scored[b][k] = 1;
      minmax_f32(acts.channel(k), plane, mask.data());
      rows.add(mask.data(), b, feats.classes[b]);
    }
  }
  const std::vector<double> probs = score_masks(ctx.scoring, rows);

  std::vector<std::vector<double>> weights(feats.batch, std::vector<double>(channels, 0.0));
  std::size_t row = 0;  // rows were added image by image, channels ascending
  for (int b = 0; b < feats.batch; ++b) {
    for (int k = 0; k < channels; ++k) {
      if (scored[b][k]) weights[b][k] = probs[row++];
    }
  }

  if (budget.exact()) return weights;
  if (budget.fill == BudgetFill::group) {
    // One mask per non-empty peak cell of each image's unscored live channels, all scored
    // in a second call; every member takes its group's score.
    MaskRows group_rows(plane);
    std::vector<std::vector<ChannelGroup>> groups(feats.batch);
    for (int b = 0; b < feats.batch; ++b) {
      std::vector<char> unscored(channels);
      for (int k = 0; k < channels; ++k) unscored[k] = live[b][k] && !scored[b][k];
      const ChannelMaps acts = feats.activations_of(b);
      groups[b] = group_masks(acts, peak_groups(acts, unscored));
      for (const ChannelGroup& group : groups[b]) group_rows.add(group.mask.data(), b, feats.classes[b]);
    }
    const std::vector<double> group_probs = score_masks(ctx.scoring, group_rows);
    row = 0;
    for (int b = 0; b < feats.batch; ++b) {
      for (const ChannelGroup& group : groups[b]) {
        for (int k : group.members) weights[b][k] = group_probs[row];
        ++row;
      }
    }
    return weights;
  }
  for (int b = 0; b < feats.batch; ++b) {
    const std::vector<double> statistic =
        budget.fill == BudgetFill::estimate
            ? channel_statistic(budget.rule, feats.activations_of(b), feats.gradients_of(b))
            : std::vector<double>();
    fill_weights(budget, weights[b], scored[b], live[b], statistic);
  }
  return weights;
}

std::vector<std::vector<double>> region_maps(MethodContext& ctx) {
  const std::vector<std::vector<double>> weights = region_weights(ctx);
  std::vector<std::vector<double>> maps(ctx.features.batch);
  for (int b = 0; b < ctx.features.batch; ++b) maps[b] = weighted_sum_relu(ctx.features.activations_of(b), weights[b]);
  return maps;
}

std::vector<double> map_scores(MethodContext& ctx, const std::vector<std::vector<double>>& maps,
                               const std::vector<int>& image_of) {
  MaskRows rows(ctx.features.plane());
  std::vector<float> mask(rows.plane);
  for (std::size_t i = 0; i < maps.size(); ++i) {
    const std::vector<double> normalised = minmax(maps[i]);
    for (std::size_t j = 0; j < rows.plane; ++j) mask[j] = static_cast<float>(normalised[j]);
    rows.add(mask.data(), image_of[i], ctx.features.classes[image_of[i]]);
  }
  const ScoringBatch& channels = ctx.scoring;
  const ScoringBatch decisions{channels.decision_scorer ? *channels.decision_scorer : channels.scorer,
                               channels.images, channels.image_floats, channels.black_probs,
                               channels.batch_size, channels.passes};
  std::vector<double> scores = score_masks(decisions, rows);
  for (std::size_t i = 0; i < scores.size(); ++i) scores[i] -= ctx.scoring.black_probs[rows.klass[i]];
  return scores;
}

MethodResult gradcam(MethodContext& ctx) {
  MethodResult result;
  for (int b = 0; b < ctx.features.batch; ++b) {
    result.maps.push_back(gradcam_map(ctx.features.activations_of(b), ctx.features.gradients_of(b)));
  }
  result.parts.resize(ctx.features.batch);
  return result;
}

MethodResult scorecam(MethodContext& ctx) {
  MethodResult result;
  result.maps = region_maps(ctx);
  result.parts.resize(ctx.features.batch);
  return result;
}

MethodResult unioncam(MethodContext& ctx) {
  const int batch = ctx.features.batch;
  std::vector<std::vector<double>> denoise(batch);
  for (int b = 0; b < batch; ++b) {
    denoise[b] = denoised_map(ctx.features.activations_of(b), ctx.features.gradients_of(b), ctx.theta);
  }
  const std::vector<std::vector<double>> region = region_maps(ctx);

  // beta_denoise and beta_region of every image in one scoring call.
  std::vector<std::vector<double>> both(denoise);
  both.insert(both.end(), region.begin(), region.end());
  std::vector<int> image_of;
  for (int pass = 0; pass < 2; ++pass) {
    for (int b = 0; b < batch; ++b) image_of.push_back(b);
  }
  const std::vector<double> betas = map_scores(ctx, both, image_of);

  std::vector<std::vector<double>> fused(batch);
  for (int b = 0; b < batch; ++b) fused[b] = fuse(denoise[b], region[b], betas[b], betas[batch + b]);
  const std::vector<double> beta_fused =
      map_scores(ctx, fused, std::vector<int>(image_of.begin(), image_of.begin() + batch));

  MethodResult result;
  for (int b = 0; b < batch; ++b) {
    UnionParts parts;
    parts.beta_denoise = betas[b];
    parts.beta_region = betas[batch + b];
    parts.beta_fused = beta_fused[b];
    const bool wins = choose_fused(parts.beta_fused, parts.beta_region);
    parts.branch = wins ? kFused : kRegion;
    result.maps.push_back(wins ? fused[b] : region[b]);
    parts.denoise_map = std::move(denoise[b]);
    parts.region_map = region[b];
    parts.fused_map = std::move(fused[b]);
    result.parts.push_back(std::move(parts));
  }
  return result;
}

MethodResult run_method(Method method, MethodContext& ctx) {
  switch (method) {
    case Method::gradcam: return gradcam(ctx);
    case Method::scorecam: return scorecam(ctx);
    case Method::unioncam: break;
  }
  return unioncam(ctx);
}

}  // namespace unioncam::detail
