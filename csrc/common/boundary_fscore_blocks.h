#pragma once
// The bodies of the CUDA boundary_fscore_counts kernels, written as per-thread phases that only
// meet at block barriers, and the host driver that runs them. The CUDA launcher
// (cuda/boundary_fscore.cu) runs each phase on every thread with __syncthreads() between phases;
// the CPU emulator (cpu/boundary_fscore_block_emulation.cpp) runs each phase for every thread of
// a block in turn, with `smem` a per-block array. So the CPU test suite runs the GPU kernels' own
// indexing, grid-stride loops and reductions. Races are beyond its reach: those need
// compute-sanitizer on a GPU.
//
// Three kernels per chunk of images (workspace: 4 planes per image and class and their occupancy
// cells, 4.5 bits per pixel and class in all; chunks keep it under kWorkspaceBytes):
//   mask      one thread per mask word (n, y, w): the word of all K pred planes and K target
//             planes (build_mask_word); the first bad label goes to a status pair (integer
//             atomicMin, read once at the end of the op);
//   boundary  blocks of one plane (n, k) and chunk c: each thread turns its cells (kCellRows
//             words of a word column) of the two mask planes into boundary words, writes the
//             cells' ORs (occupancy) and counts mask and boundary bits; the block sums its
//             threads' counts into its own row of partial sums (no atomics);
//   match     blocks of one plane (n, k, direction) and chunk c: each thread searches, for every
//             boundary pixel of its cells, the nearest boundary pixel of the other map, counting
//             per radius; block rows of partial sums again.
// Partial rows are summed per plane afterwards: integer sums, so the result does not depend on
// the launch shape at all.

#include <ATen/ops/cat.h>

#include "boundary_fscore_host.h"
#include "boundary_fscore_math.h"

namespace gscnn {
namespace bfs {

struct Geometry {
  int64_t N, K, H, W, Wwords;
  GSCNN_HD int64_t plane_words() const { return H * Wwords; }
};

template <typename P, typename T>
struct MaskKernel {
  LabelMap<P> pred;    // the chunk's images
  LabelMap<T> target;
  uint64_t* masks;     // (2, N, K, H, Wwords): pred planes, then target planes
  Geometry g;
  int64_t ignore_index;
  int64_t first_pixel;  // flat index of the chunk's first pixel in the whole batch

  GSCNN_HD int64_t num_items() const { return g.N * g.H * g.Wwords; }

  // Item i = word (n, y, w). Returns the flat indices (in the whole batch) of the word's first
  // bad pred and target labels, or -1.
  GSCNN_HD BadPixels item(int64_t i) const {
    const int64_t w = i % g.Wwords, row = i / g.Wwords;  // row = n * H + y
    const int64_t y = row % g.H, n = row / g.H;
    const int64_t PW = g.plane_words();
    uint64_t* pred_planes = masks + n * g.K * PW;
    uint64_t* target_planes = masks + (g.N + n) * g.K * PW;
    BadPixels bad = build_mask_word(pred, target, n, y, w, g.W, g.K, ignore_index, pred_planes,
                                    target_planes, PW, y * g.Wwords + w);
    const int64_t base = first_pixel + row * g.W;
    if (bad.pred_x >= 0) bad.pred_x += base;
    if (bad.target_x >= 0) bad.target_x += base;
    return bad;
  }
};

// Columns of the boundary kernel's partial sums (per image and class).
enum SumColumn : int64_t { kSumPredPixels, kSumTargetPixels, kSumPredBoundary, kSumTargetBoundary,
                           kNumSums };

// Items of the boundary and match kernels are cells: kCellRows words of one word column.
struct BoundaryKernel {
  const uint64_t* masks;  // (2, N, K, H, Wwords)
  uint64_t* bounds;       // same layout
  uint64_t* occ;          // (2, N, K, cell_rows(H), Wwords): occupancy cells of bounds
  Geometry g;
  int64_t chunks;         // blocks per plane

  GSCNN_HD int64_t num_blocks() const { return g.N * g.K * chunks; }
  static GSCNN_HD int64_t shared_elems(int64_t T) { return kNumSums * T; }

  GSCNN_HD void word_phase(int64_t* smem, int64_t b, int64_t t, int64_t T) const {
    const int64_t plane = b / chunks, c = b % chunks;  // plane = n * K + k
    const int64_t PW = g.plane_words(), maps = g.N * g.K;
    const int64_t CW = cell_rows(g.H) * g.Wwords;
    int64_t cnt[kNumSums] = {0, 0, 0, 0};
    for (int64_t i = c * T + t; i < CW; i += chunks * T) {  // cell i: word column w of rows y0...
      const int64_t cy = i / g.Wwords, w = i % g.Wwords;
      const int64_t y0 = cy * kCellRows, y1 = y0 + kCellRows < g.H ? y0 + kCellRows : g.H;
      for (int64_t map = 0; map < 2; ++map) {
        const uint64_t* m = masks + (map * maps + plane) * PW;
        uint64_t* bp = bounds + (map * maps + plane) * PW;
        uint64_t cell = 0;
        for (int64_t y = y0; y < y1; ++y) {
          const uint64_t* row = m + y * g.Wwords;
          const uint64_t* next = y + 1 < g.H ? row + g.Wwords : nullptr;
          const uint64_t b_word = boundary_word(row, next, w, g.Wwords, g.W);
          bp[y * g.Wwords + w] = b_word;
          cell |= b_word;
          cnt[kSumPredPixels + map] += popcount64(row[w]);
          cnt[kSumPredBoundary + map] += popcount64(b_word);
        }
        occ[(map * maps + plane) * CW + i] = cell;
      }
    }
    for (int64_t j = 0; j < kNumSums; ++j) smem[j * T + t] = cnt[j];
  }

  // partials: (num_blocks, kNumSums); thread t sums columns t, t + T, ... over the block's
  // threads (blocks of fewer than kNumSums threads included).
  GSCNN_HD void reduce_phase(const int64_t* smem, int64_t* partials, int64_t b, int64_t t,
                             int64_t T) const {
    for (int64_t j = t; j < kNumSums; j += T) {
      int64_t s = 0;
      for (int64_t u = 0; u < T; ++u) s += smem[j * T + u];
      partials[b * kNumSums + j] = s;
    }
  }
};

struct MatchKernel {
  const uint64_t* bounds;  // (2, N, K, H, Wwords)
  const uint64_t* occ;     // (2, N, K, cell_rows(H), Wwords)
  const int64_t* sums;     // (N, K, kNumSums): the boundary kernel's sums
  Geometry g;
  int64_t chunks;          // blocks per (plane, direction)
  Radii radii;

  GSCNN_HD int64_t num_blocks() const { return g.N * g.K * 2 * chunks; }
  GSCNN_HD int64_t shared_elems(int64_t T) const { return radii.count * T; }

  GSCNN_HD void word_phase(int64_t* smem, int64_t b, int64_t t, int64_t T) const {
    for (int64_t j = 0; j < radii.count; ++j) smem[j * T + t] = 0;
    const int64_t plane = b / chunks, c = b % chunks;  // plane = (n * K + k) * 2 + direction
    const int64_t nk = plane / 2, dir = plane % 2;      // direction 0: pred -> target
    // A map without boundary pixels matches nothing (the whole block leaves together).
    if (sums[nk * kNumSums + kSumPredBoundary] == 0 || sums[nk * kNumSums + kSumTargetBoundary] == 0)
      return;
    const int64_t PW = g.plane_words(), maps = g.N * g.K;
    const int64_t CW = cell_rows(g.H) * g.Wwords;
    const uint64_t* src = bounds + (dir * maps + nk) * PW;
    const uint64_t* dst = bounds + ((1 - dir) * maps + nk) * PW;
    const uint64_t* dst_occ = occ + ((1 - dir) * maps + nk) * CW;
    for (int64_t i = c * T + t; i < CW; i += chunks * T) {  // cell i, as in the boundary kernel
      const int64_t cy = i / g.Wwords, w = i % g.Wwords;
      const int64_t y0 = cy * kCellRows, y1 = y0 + kCellRows < g.H ? y0 + kCellRows : g.H;
      for (int64_t y = y0; y < y1; ++y) {
        const uint64_t word = src[y * g.Wwords + w];
        if (word != 0)
          match_word(word, dst, dst_occ, g.H, g.Wwords, g.W, y, w, radii, smem + t, T);
      }
    }
  }

  // partials: (num_blocks, R).
  GSCNN_HD void reduce_phase(const int64_t* smem, int64_t* partials, int64_t b, int64_t t,
                             int64_t T) const {
    for (int64_t j = t; j < radii.count; j += T) {
      int64_t s = 0;
      for (int64_t u = 0; u < T; ++u) s += smem[j * T + u];
      partials[b * radii.count + j] = s;
    }
  }
};

// Workspace per chunk of images: masks and boundaries, 2 maps each.
constexpr int64_t kWorkspaceBytes = int64_t(256) << 20;

}  // namespace bfs

// The op on the GPU-style kernels. Launcher (CUDA or emulation) provides:
//   mask(const MaskKernel<P, T>&, int64_t* status)    status: 2 int64, first bad pred/target
//   threads(int64_t shared_elems_per_thread) -> T     block size for the block kernels
//   chunks(int64_t planes, int64_t plane_words, T)    blocks per plane
//   boundary(const BoundaryKernel&, int64_t* partials, T), match(const MatchKernel&, ..., T)
// images_per_chunk: 0 = from the workspace budget.
template <typename Launcher>
at::Tensor run_boundary_fscore_kernels(const char* op, const at::Tensor& pred_in,
                                       const at::Tensor& target_in, int64_t num_classes,
                                       at::IntArrayRef radii, int64_t ignore_index,
                                       int64_t images_per_chunk, Launcher& launch) {
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
  auto status = at::full({2}, kNoBadPixel, opts);
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
      const bfs::MaskKernel<P, T> mk{label_map<P>(p), label_map<T>(t), masks_ptr, g, ignore_index,
                                     n0 * z.H * z.W};
      launch.mask(mk, status.data_ptr<int64_t>());
    });

    const int64_t Tb = launch.threads(bfs::kNumSums);
    const bfs::BoundaryKernel bk{masks_ptr, bounds_ptr, occ_ptr, g,
                                 launch.chunks(Nc * z.K, CW, Tb)};
    auto bpart = at::empty({bk.num_blocks(), bfs::kNumSums}, opts);
    launch.boundary(bk, bpart.data_ptr<int64_t>(), Tb);
    const at::Tensor sums = bpart.view({Nc, z.K, bk.chunks, bfs::kNumSums}).sum(2);

    const int64_t Tm = launch.threads(rad.count);
    const bfs::MatchKernel mkern{bounds_ptr, occ_ptr, sums.const_data_ptr<int64_t>(), g,
                                 launch.chunks(Nc * z.K * 2, CW, Tm), rad};
    auto mpart = at::empty({mkern.num_blocks(), rad.count}, opts);
    launch.match(mkern, mpart.data_ptr<int64_t>(), Tm);
    const at::Tensor matched = mpart.view({Nc, z.K, 2, mkern.chunks, rad.count}).sum(3);
    parts.push_back(assemble_counts(sums, matched, z.R));
  }
  // Bad labels: one look at the status, after all the work (on CUDA, the op's only
  // device-to-host copy).
  const at::Tensor st = status.cpu();
  const int64_t bad_pred = st[0].item<int64_t>(), bad_target = st[1].item<int64_t>();
  if (bad_pred != kNoBadPixel || bad_target != kNoBadPixel) {
    report_bad_labels(op, pred, target, num_classes, ignore_index, bad_pred, bad_target);
  }
  return parts.size() == 1 ? parts[0] : at::cat(parts, 0);
}

}  // namespace gscnn
