#pragma once
// The host side of every boundary_fscore_counts implementation (fast CPU kernel, CUDA kernels,
// CPU emulation of the CUDA kernels): argument checks, label dtypes, the radii, error messages
// for bad labels, and the driver of the three GPU-style kernels (mask, boundary, match) that the
// CUDA launcher and the emulator share.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "boundary_fscore_math.h"
#include "checks.h"

namespace gscnn {

struct BfsSizes {
  int64_t N, H, W, K, R;
  int64_t Wwords() const { return bfs::words_per_row(W); }
  int64_t plane_words() const { return H * Wwords(); }
  bool empty() const { return N == 0 || H == 0 || W == 0; }
};

inline void check_label_map(const char* op, const char* name, const at::Tensor& t) {
  check_dim(op, name, t, 3, "(N, H, W) label map");
  const auto st = t.scalar_type();
  TORCH_CHECK(at::isIntegralType(st, /*includeBool=*/true), op, ": argument '", name,
              "' must be an integer label map (uint8, int32 or int64; other integer types are "
              "converted), got dtype ",
              st);
}

inline BfsSizes check_boundary_fscore(const char* op, const at::Tensor& pred,
                                      const at::Tensor& target, int64_t num_classes,
                                      at::IntArrayRef radii) {
  check_label_map(op, "pred", pred);
  check_label_map(op, "target", target);
  TORCH_CHECK(target.device() == pred.device(), op, ": argument 'target' is on ", target.device(),
              " but 'pred' is on ", pred.device(), "; both label maps must be on one device");
  TORCH_CHECK(target.sizes() == pred.sizes(), op,
              ": arguments 'pred' and 'target' must have the same shape (N, H, W), got pred ",
              pred.sizes(), " and target ", target.sizes());
  TORCH_CHECK(num_classes >= 1, op, ": argument 'num_classes' must be positive, got ",
              num_classes);
  TORCH_CHECK(!radii.empty() && static_cast<int64_t>(radii.size()) <= bfs::kMaxRadii, op,
              ": argument 'radii' must have between 1 and ", bfs::kMaxRadii, " entries, got ",
              radii.size());
  for (const int64_t r : radii) {
    TORCH_CHECK(r >= 0, op, ": argument 'radii' must hold non-negative pixel radii, got ", radii);
  }
  return {pred.size(0), pred.size(1), pred.size(2), num_classes,
          static_cast<int64_t>(radii.size())};
}

// uint8, int32 and int64 are read as they are (any strides); other integer types (and bool) are
// converted to int64 first.
inline at::Tensor readable_labels(const at::Tensor& t) {
  const auto st = t.scalar_type();
  if (st == at::kByte || st == at::kInt || st == at::kLong) return t;
  return t.to(at::kLong);
}

// Calls f(p_tag, t_tag) with null pointers of the label types of pred and target.
template <typename F>
void dispatch_label_types(const char* op, const at::Tensor& pred, const at::Tensor& target,
                          F&& f) {
  auto inner = [&](auto p_tag) {
    switch (target.scalar_type()) {
      case at::kByte: return f(p_tag, static_cast<const uint8_t*>(nullptr));
      case at::kInt: return f(p_tag, static_cast<const int32_t*>(nullptr));
      case at::kLong: return f(p_tag, static_cast<const int64_t*>(nullptr));
      default: TORCH_CHECK(false, op, ": internal error: unexpected target dtype");
    }
  };
  switch (pred.scalar_type()) {
    case at::kByte: return inner(static_cast<const uint8_t*>(nullptr));
    case at::kInt: return inner(static_cast<const int32_t*>(nullptr));
    case at::kLong: return inner(static_cast<const int64_t*>(nullptr));
    default: TORCH_CHECK(false, op, ": internal error: unexpected pred dtype");
  }
}

template <typename T>
bfs::LabelMap<T> label_map(const at::Tensor& t) {
  return {t.const_data_ptr<T>(), t.stride(0), t.stride(1), t.stride(2)};
}

// Radii clamped to H + W (no two pixels of the image are farther apart), squared.
inline bfs::Radii make_radii(at::IntArrayRef radii, int64_t H, int64_t W) {
  bfs::Radii r{};
  r.count = static_cast<int64_t>(radii.size());
  r.rmax = 0;
  for (int64_t j = 0; j < r.count; ++j) {
    const int64_t rj = std::min<int64_t>(radii[j], H + W);
    r.r2[j] = rj * rj;
    r.rmax = std::max(r.rmax, rj);
  }
  std::vector<int64_t> sorted(r.r2, r.r2 + r.count);
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  r.unique = static_cast<int64_t>(sorted.size());
  std::copy(sorted.begin(), sorted.end(), r.sorted_r2);
  return r;
}

// No bad label: the sentinel of the first-bad-pixel indices.
constexpr int64_t kNoBadPixel = std::numeric_limits<int64_t>::max();

// Raises the error for the first bad label, given flat (n, y, x) indices of the first bad pred
// and target pixels (kNoBadPixel for none). Reads the offending value from the tensor.
inline void report_bad_labels(const char* op, const at::Tensor& pred, const at::Tensor& target,
                              int64_t num_classes, int64_t ignore_index, int64_t bad_pred,
                              int64_t bad_target) {
  const int64_t H = pred.size(1), W = pred.size(2);
  auto fail = [&](const char* name, const at::Tensor& t, int64_t flat, const char* allowed) {
    const int64_t n = flat / (H * W), y = (flat / W) % H, x = flat % W;
    const int64_t value = t.select(0, n).select(0, y).select(0, x).item<int64_t>();
    TORCH_CHECK(false, op, ": argument '", name, "' has label ", value, " at [", n, ", ", y, ", ",
                x, "]; expected a class in [0, ", num_classes, ") or ignore_index ", ignore_index,
                allowed);
  };
  if (bad_pred != kNoBadPixel) fail("pred", pred, bad_pred, " (pixels of no class)");
  if (bad_target != kNoBadPixel) fail("target", target, bad_target, " (void pixels)");
}

// (N, K, R, 6) counts from the per-(image, class) sums of the boundary kernel, (N, K, 4):
// pred pixels, target pixels, pred boundary pixels, target boundary pixels, and of the match
// kernel, (N, K, 2, R): matched pred boundary pixels, matched target boundary pixels.
inline at::Tensor assemble_counts(const at::Tensor& sums, const at::Tensor& matched, int64_t R) {
  const int64_t N = sums.size(0), K = sums.size(1);
  auto per_threshold = [&](int64_t c) { return sums.select(2, c).unsqueeze(2).expand({N, K, R}); };
  return at::stack({per_threshold(2), matched.select(2, 0), per_threshold(3), matched.select(2, 1),
                    per_threshold(0), per_threshold(1)},
                   3);
}

}  // namespace gscnn
