#include "scoring.hpp"

#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_map>

namespace unioncam::detail {

void MaskRows::add(const float* mask, int image_index, std::int64_t class_index) {
  masks.insert(masks.end(), mask, mask + plane);
  image.push_back(image_index);
  klass.push_back(class_index);
}

namespace {

bool all_zero(const float* mask, std::size_t n) {
  return std::all_of(mask, mask + n, [](float v) { return v == 0.0f; });
}

// The bytes identifying a row: image, class and the mask's float32 bit patterns.
std::string row_key(const MaskRows& rows, std::size_t r) {
  std::string key(sizeof(int) + sizeof(std::int64_t) + rows.plane * sizeof(float), '\0');
  char* p = key.data();
  std::memcpy(p, &rows.image[r], sizeof(int));
  std::memcpy(p + sizeof(int), &rows.klass[r], sizeof(std::int64_t));
  std::memcpy(p + sizeof(int) + sizeof(std::int64_t), rows.masks.data() + r * rows.plane,
              rows.plane * sizeof(float));
  return key;
}

// One scoring call over `unique[begin, end)`: only the images those rows use are sent.
void score_chunk(const ScoringBatch& batch, const MaskRows& rows, const std::vector<std::size_t>& unique,
                 std::size_t begin, std::size_t end, std::vector<double>& unique_probs) {
  std::vector<int> used;
  for (std::size_t u = begin; u < end; ++u) used.push_back(rows.image[unique[u]]);
  std::sort(used.begin(), used.end());
  used.erase(std::unique(used.begin(), used.end()), used.end());

  std::vector<float> images(used.size() * batch.image_floats);
  for (std::size_t i = 0; i < used.size(); ++i) {
    std::memcpy(images.data() + i * batch.image_floats,
                batch.images + std::size_t(used[i]) * batch.image_floats,
                batch.image_floats * sizeof(float));
  }
  const std::size_t n = end - begin;
  std::vector<float> masks(n * rows.plane);
  std::vector<std::int64_t> local_image(n), klass(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t r = unique[begin + i];
    std::memcpy(masks.data() + i * rows.plane, rows.masks.data() + r * rows.plane,
                rows.plane * sizeof(float));
    local_image[i] = std::lower_bound(used.begin(), used.end(), rows.image[r]) - used.begin();
    klass[i] = rows.klass[r];
  }
  const std::vector<float> probs =
      batch.scorer.masked_probs(images.data(), static_cast<int>(used.size()), masks.data(),
                                static_cast<int>(n), local_image.data(), klass.data());
  for (std::size_t i = 0; i < n; ++i) {
    unique_probs[begin + i] = probs[i];
    batch.passes[rows.image[unique[begin + i]]] += 1;
  }
}

}  // namespace

std::vector<double> score_masks(const ScoringBatch& batch, const MaskRows& rows) {
  const std::size_t n = rows.size();
  std::vector<double> probs(n, 0.0);
  std::vector<std::size_t> unique;            // rows that need a pass, first occurrences
  std::vector<std::ptrdiff_t> answer(n, -1);  // index into `unique`, -1: black image
  std::unordered_map<std::string, std::size_t> seen;
  for (std::size_t r = 0; r < n; ++r) {
    if (all_zero(rows.masks.data() + r * rows.plane, rows.plane)) {
      probs[r] = batch.black_probs[rows.klass[r]];
      continue;
    }
    auto [it, inserted] = seen.emplace(row_key(rows, r), unique.size());
    if (inserted) unique.push_back(r);
    answer[r] = static_cast<std::ptrdiff_t>(it->second);
  }
  std::vector<double> unique_probs(unique.size());
  const std::size_t chunk = static_cast<std::size_t>(std::max(batch.batch_size, 1));
  for (std::size_t begin = 0; begin < unique.size(); begin += chunk) {
    score_chunk(batch, rows, unique, begin, std::min(begin + chunk, unique.size()), unique_probs);
  }
  for (std::size_t r = 0; r < n; ++r) {
    if (answer[r] >= 0) probs[r] = unique_probs[answer[r]];
  }
  return probs;
}

}  // namespace unioncam::detail
