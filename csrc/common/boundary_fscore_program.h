#pragma once
// The block programs of the CUDA boundary_fscore_counts kernels (common/exec.h), which the
// emulated GPU of the tests runs too. Three programs per chunk of images (workspace: 4 planes per
// image and class and their occupancy cells, 4.5 bits per pixel and class in all; chunks keep it
// under kWorkspaceBytes), launched in turn by the host driver (common/boundary_fscore_launch.h):
//   mask      one thread per mask word (n, y, w), grid-stride: the word of all K pred planes and
//             K target planes (build_mask_word); bad labels go to the op's status words
//             (common/label_errors.h: an integer atomic min, the first bad label in (n, y, x)
//             order wins);
//   boundary  blocks of one plane (n, k) and chunk c: each thread turns its cells (kCellRows
//             words of a word column) of the two mask planes into boundary words, writes the
//             cells' ORs (occupancy) and counts mask and boundary bits; barrier; the block sums
//             its threads' counts into its own row of partial sums (no atomics);
//   match     blocks of one plane (n, k, direction) and chunk c: each thread searches, for every
//             boundary pixel of its cells, the nearest boundary pixel of the other map, counting
//             per radius; barrier; block rows of partial sums again.
// Partial rows are summed per plane afterwards: integer sums, so the result does not depend on
// the launch shape at all.

#include "boundary_fscore_math.h"
#include "exec.h"
#include "label_errors.h"

namespace gscnn {
namespace bfs {

struct Geometry {
  int64_t N, K, H, W, Wwords;
  GSCNN_HD int64_t plane_words() const { return H * Wwords; }
};

template <typename P, typename T>
struct MaskProgram {
  static constexpr int kMaxThreads = 256;
  LabelMap<P> pred;    // the chunk's images
  LabelMap<T> target;
  uint64_t* masks;     // (2, N, K, H, Wwords): pred planes, then target planes
  Geometry g;
  int64_t ignore_index;
  int64_t first_image;  // index of the chunk's first image in the whole batch
  uint64_t* bad_pred;   // status words (common/label_errors.h)
  uint64_t* bad_target;

  GSCNN_HD int64_t num_items() const { return g.N * g.H * g.Wwords; }

  template <typename Exec>
  GSCNN_HD void operator()(Exec& ex) const {
    const int64_t nt = ex.threads(), first = ex.block() * nt, step = ex.grid() * nt;
    ex.for_each_thread([&](int64_t t) {
      for (int64_t i = first + t; i < num_items(); i += step) item(i);
    });
  }

  // Item i = word (n, y, w).
  GSCNN_HD void item(int64_t i) const {
    const int64_t w = i % g.Wwords, row = i / g.Wwords;  // row = n * H + y
    const int64_t y = row % g.H, n = row / g.H;
    const int64_t PW = g.plane_words();
    uint64_t* pred_planes = masks + n * g.K * PW;
    uint64_t* target_planes = masks + (g.N + n) * g.K * PW;
    const BadPixels bad = build_mask_word(pred, target, n, y, w, g.W, g.K, ignore_index,
                                          pred_planes, target_planes, PW, y * g.Wwords + w);
    if (bad.pred_x >= 0)
      labels::record(bad_pred, first_image + n, y, bad.pred_x, pred.at(n, y, bad.pred_x));
    if (bad.target_x >= 0)
      labels::record(bad_target, first_image + n, y, bad.target_x, target.at(n, y, bad.target_x));
  }
};

// The boundary and match programs: every thread's word phase (its cells, counters in shared
// memory), a barrier, then the block's sums of the counters into its row of partial sums.
template <typename Program, typename Exec>
GSCNN_HD void word_then_reduce(const Program& p, Exec& ex) {
  auto smem = ex.template shared<int64_t>();
  const int64_t T = ex.threads(), b = ex.block();
  ex.for_each_thread([&](int64_t t) { p.word_phase(smem, b, t, T); });
  ex.sync();
  ex.for_each_thread([&](int64_t t) { p.reduce_phase(smem, b, t, T); });
}

// Columns of the boundary kernel's partial sums (per image and class).
enum SumColumn : int64_t { kSumPredPixels, kSumTargetPixels, kSumPredBoundary, kSumTargetBoundary,
                           kNumSums };

// Items of the boundary and match kernels are cells: kCellRows words of one word column.
struct BoundaryProgram {
  static constexpr int kMaxThreads = 256;
  const uint64_t* masks;  // (2, N, K, H, Wwords)
  uint64_t* bounds;       // same layout
  uint64_t* occ;          // (2, N, K, cell_rows(H), Wwords): occupancy cells of bounds
  Geometry g;
  int64_t chunks;         // blocks per plane
  int64_t* partials;      // (num_blocks, kNumSums)

  GSCNN_HD int64_t num_blocks() const { return g.N * g.K * chunks; }
  static GSCNN_HD int64_t shared_elems(int64_t T) { return kNumSums * T; }

  template <typename Exec>
  GSCNN_HD void operator()(Exec& ex) const {
    word_then_reduce(*this, ex);
  }

  template <typename Ptr>
  GSCNN_HD void word_phase(Ptr smem, int64_t b, int64_t t, int64_t T) const {
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

  // Thread t sums columns t, t + T, ... over the block's threads (blocks of fewer than kNumSums
  // threads included).
  template <typename Ptr>
  GSCNN_HD void reduce_phase(Ptr smem, int64_t b, int64_t t, int64_t T) const {
    for (int64_t j = t; j < kNumSums; j += T) {
      int64_t s = 0;
      for (int64_t u = 0; u < T; ++u) s += smem[j * T + u];
      partials[b * kNumSums + j] = s;
    }
  }
};

struct MatchProgram {
  static constexpr int kMaxThreads = 256;
  const uint64_t* bounds;  // (2, N, K, H, Wwords)
  const uint64_t* occ;     // (2, N, K, cell_rows(H), Wwords)
  const int64_t* sums;     // (N, K, kNumSums): the boundary kernel's sums
  Geometry g;
  int64_t chunks;          // blocks per (plane, direction)
  Radii radii;
  int64_t* partials;       // (num_blocks, radii.count)

  GSCNN_HD int64_t num_blocks() const { return g.N * g.K * 2 * chunks; }
  static GSCNN_HD int64_t shared_elems(int64_t radii_count, int64_t T) { return radii_count * T; }

  template <typename Exec>
  GSCNN_HD void operator()(Exec& ex) const {
    word_then_reduce(*this, ex);
  }

  template <typename Ptr>
  GSCNN_HD void word_phase(Ptr smem, int64_t b, int64_t t, int64_t T) const {
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

  template <typename Ptr>
  GSCNN_HD void reduce_phase(Ptr smem, int64_t b, int64_t t, int64_t T) const {
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

}  // namespace gscnn
