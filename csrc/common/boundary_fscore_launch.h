#pragma once
// The host side of boundary_fscore_counts on every device (fast CPU kernel, CUDA kernels, the
// emulated GPU of the tests): argument checks, label dtypes, the radii and, for the GPU, the launch
// selection and the driver of the three block programs (mask, boundary, match) of
// common/boundary_fscore_program.h.

#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
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
#include "boundary_fscore_program.h"
#include "checks.h"
#include "label_errors.h"
#include "launch.h"

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

// --- the GPU: launch selection and the driver of the block programs ----------------------------

namespace bfs {

// Boundary and match: the largest block (256 ... 32) whose 64-bit counters (`counters` per
// thread) fit the shared memory; `chunks` blocks per plane, enough to fill the GPU a few times
// over, never more than a plane has cells for, and a grid that fits gridDim.x.
struct BlockChoice {
  Launch launch;
  int64_t chunks;
};

inline BlockChoice select_blocks(int64_t planes, int64_t cells, int64_t counters,
                                 const DeviceLimits& d, const KernelLimits& k,
                                 const LaunchOverride& ov = {}) {
  auto bytes = [&](int64_t T) { return counters * T * static_cast<int64_t>(sizeof(int64_t)); };
  BlockChoice c{};
  c.launch.threads =
      ov.threads ? ov.threads : largest_fitting_block(d, k, {256, 128, 64, 32}, bytes);
  const int64_t T = c.launch.threads;
  c.chunks = ov.blocks ? ov.blocks
                       : std::max<int64_t>(1, std::min({ceil_div(d.sm_count * 16, planes),
                                                        ceil_div(cells, T),
                                                        kMaxGridBlocks / planes}));
  c.launch.blocks = planes * c.chunks;
  c.launch.shared_bytes = bytes(T);
  return c;
}

}  // namespace bfs

// The op on a device that runs block programs (cuda::Device, the emulated GPU). images_per_chunk:
// 0 = from the workspace budget. Bad labels: the first of pred, then of target, is raised (on the
// CPU-like devices at once, on CUDA at the next call or at gscnn_ops.check_errors()).
template <typename Device>
at::Tensor run_boundary_fscore_programs(const char* op, const at::Tensor& pred_in,
                                        const at::Tensor& target_in, int64_t num_classes,
                                        at::IntArrayRef radii, int64_t ignore_index,
                                        int64_t images_per_chunk, Device& device) {
  const BfsSizes z = check_boundary_fscore(op, pred_in, target_in, num_classes, radii);
  const auto opts = pred_in.options().dtype(at::kLong);
  if (z.empty()) return at::zeros({z.N, z.K, z.R, bfs::kNumColumns}, opts);
  const at::Tensor pred = readable_labels(pred_in), target = readable_labels(target_in);
  const bfs::Radii rad = make_radii(radii, z.H, z.W);
  const int64_t PW = z.plane_words(), CW = bfs::cell_rows(z.H) * z.Wwords();
  const int64_t image_bytes = 2 * z.K * (2 * PW + CW) * static_cast<int64_t>(sizeof(uint64_t));
  const int64_t chunk = images_per_chunk > 0
                            ? images_per_chunk
                            : std::max<int64_t>(1, bfs::kWorkspaceBytes / image_bytes);
  uint64_t* bad_pred = device.label_status_begin(labels::kBoundaryFscorePred, op, "pred",
                                                 num_classes, ignore_index, pred);
  uint64_t* bad_target = device.label_status_begin(labels::kBoundaryFscoreTarget, op, "target",
                                                   num_classes, ignore_index, pred);
  std::vector<at::Tensor> parts;
  for (int64_t n0 = 0; n0 < z.N; n0 += chunk) {
    const int64_t Nc = std::min(chunk, z.N - n0);
    const bfs::Geometry g{Nc, z.K, z.H, z.W, z.Wwords()};
    auto masks = at::empty({2, Nc, z.K, z.H, z.Wwords()}, opts);
    auto bounds = at::empty({2, Nc, z.K, z.H, z.Wwords()}, opts);
    auto occ = at::empty({2, Nc, z.K, bfs::cell_rows(z.H), z.Wwords()}, opts);
    auto* masks_ptr = reinterpret_cast<uint64_t*>(masks.data_ptr<int64_t>());
    auto* bounds_ptr = reinterpret_cast<uint64_t*>(bounds.data_ptr<int64_t>());
    auto* occ_ptr = reinterpret_cast<uint64_t*>(occ.data_ptr<int64_t>());
    const at::Tensor p = pred.narrow(0, n0, Nc), t = target.narrow(0, n0, Nc);
    dispatch_label_types(op, pred, target, [&](auto p_tag, auto t_tag) {
      using P = std::remove_const_t<std::remove_pointer_t<decltype(p_tag)>>;
      using T = std::remove_const_t<std::remove_pointer_t<decltype(t_tag)>>;
      const bfs::MaskProgram<P, T> mask{label_map<P>(p), label_map<T>(t), masks_ptr, g,
                                        ignore_index, n0, bad_pred, bad_target};
      device.run(
          op, pred,
          [&](const DeviceLimits& d, const KernelLimits& k, const LaunchOverride& ov) {
            return select_grid_stride(mask.num_items(), d, k, ov);  // one thread per word
          },
          [&](const Launch&) { return mask; });
    });

    at::Tensor bpart;
    device.run(
        op, pred,
        [&](const DeviceLimits& d, const KernelLimits& k, const LaunchOverride& ov) {
          return bfs::select_blocks(Nc * z.K, CW, bfs::kNumSums, d, k, ov);
        },
        [&](const bfs::BlockChoice& c) {
          bpart = at::empty({c.launch.blocks, bfs::kNumSums}, opts);
          return bfs::BoundaryProgram{masks_ptr, bounds_ptr, occ_ptr, g, c.chunks,
                                      bpart.data_ptr<int64_t>()};
        });
    const at::Tensor sums = bpart.view({Nc, z.K, -1, bfs::kNumSums}).sum(2);

    at::Tensor mpart;
    device.run(
        op, pred,
        [&](const DeviceLimits& d, const KernelLimits& k, const LaunchOverride& ov) {
          return bfs::select_blocks(Nc * z.K * 2, CW, rad.count, d, k, ov);
        },
        [&](const bfs::BlockChoice& c) {
          mpart = at::empty({c.launch.blocks, rad.count}, opts);
          return bfs::MatchProgram{bounds_ptr, occ_ptr, sums.const_data_ptr<int64_t>(), g,
                                   c.chunks, rad, mpart.data_ptr<int64_t>()};
        });
    const at::Tensor matched = mpart.view({Nc, z.K, 2, -1, rad.count}).sum(3);
    parts.push_back(assemble_counts(sums, matched, z.R));
  }
  device.label_status_end(labels::kBoundaryFscorePred, op, "pred", num_classes, ignore_index,
                          pred);
  device.label_status_end(labels::kBoundaryFscoreTarget, op, "target", num_classes,
                          ignore_index, pred);
  return parts.size() == 1 ? parts[0] : at::cat(parts, 0);
}

}  // namespace gscnn
