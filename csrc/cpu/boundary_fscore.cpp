// CPU boundary_fscore_counts: per image, (1) the class masks of pred and target as bit planes,
// rows in parallel; (2) per class, in parallel over classes (handed out dynamically: classes
// differ a lot in size), the boundary planes (computed in place over the masks, row by row) and
// the nearest-boundary search of every boundary pixel, after a look at the other map's occupancy
// cells (common/boundary_fscore_math.h, shared with the CUDA kernels). Workspace: 2.25 bits per
// pixel and class (11 MB for a 1024 x 2048 image and 19 classes), reused across images. Integer counts: the result does not depend on the
// thread count.

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <memory>

#include "../common/boundary_fscore_launch.h"
#include "../common/boundary_fscore_math.h"

namespace gscnn {
namespace {

constexpr const char* kOp = "gscnn_ops.boundary_fscore_counts";

// Masks of image n into planes (pred planes 0..K-1, target planes K..2K-1). Bad labels go to the
// status words (common/label_errors.h: the first in (n, y, x) order wins).
template <typename P, typename T>
void build_masks(const bfs::LabelMap<P>& pred, const bfs::LabelMap<T>& target, int64_t n,
                 const BfsSizes& z, int64_t ignore_index, uint64_t* planes, uint64_t* bad_pred,
                 uint64_t* bad_target) {
  const int64_t Wwords = z.Wwords(), PW = z.plane_words();
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(z.W, 1));
  at::parallel_for(0, z.H, grain, [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      for (int64_t w = 0; w < Wwords; ++w) {
        const bfs::BadPixels bad =
            bfs::build_mask_word(pred, target, n, y, w, z.W, z.K, ignore_index, planes,
                                 planes + z.K * PW, PW, y * Wwords + w);
        if (bad.pred_x >= 0) labels::record(bad_pred, n, y, bad.pred_x, pred.at(n, y, bad.pred_x));
        if (bad.target_x >= 0)
          labels::record(bad_target, n, y, bad.target_x, target.at(n, y, bad.target_x));
      }
    }
  });
}

// Turns mask plane `m` into its boundary plane in place, fills its occupancy cells `occ`, and
// returns {mask pixels, boundary pixels}. Row y's boundary needs mask rows y and y + 1 and words
// w and w + 1: going down the rows and along each row, both are still the mask when read.
std::pair<int64_t, int64_t> boundary_in_place(uint64_t* m, uint64_t* occ, const BfsSizes& z) {
  const int64_t Wwords = z.Wwords();
  std::fill(occ, occ + bfs::cell_rows(z.H) * Wwords, uint64_t(0));
  int64_t pixels = 0, boundary = 0;
  for (int64_t y = 0; y < z.H; ++y) {
    uint64_t* row = m + y * Wwords;
    const uint64_t* next = y + 1 < z.H ? row + Wwords : nullptr;
    uint64_t* occ_row = occ + (y / bfs::kCellRows) * Wwords;
    for (int64_t w = 0; w < Wwords; ++w) {
      const uint64_t word = row[w];
      const bool hi_zero = w + 1 == Wwords || row[w + 1] == 0;
      const bool next_zero =
          next == nullptr || (next[w] == 0 && (w + 1 == Wwords || next[w + 1] == 0));
      if (word == 0 && hi_zero && next_zero) continue;  // all zero: boundary word 0
      pixels += word == ~uint64_t(0) ? bfs::kWordBits : bfs::popcount64(word);
      const uint64_t b = bfs::boundary_word(row, next, w, Wwords, z.W);
      row[w] = b;
      if (b != 0) {
        boundary += bfs::popcount64(b);
        occ_row[w] |= b;
      }
    }
  }
  return {pixels, boundary};
}

// For every set pixel of `src`, adds 1 to matched[j] when `dst` has a set pixel within radius j.
void match_plane(const uint64_t* src, const uint64_t* dst, const uint64_t* dst_occ,
                 const BfsSizes& z, const bfs::Radii& radii, int64_t* matched) {
  const int64_t Wwords = z.Wwords();
  for (int64_t y = 0; y < z.H; ++y) {
    for (int64_t w = 0; w < Wwords; ++w) {
      const uint64_t word = src[y * Wwords + w];
      if (word != 0)
        bfs::match_word(word, dst, dst_occ, z.H, Wwords, z.W, y, w, radii, matched, 1);
    }
  }
}

at::Tensor boundary_fscore_counts_cpu(const at::Tensor& pred_in, const at::Tensor& target_in,
                                      int64_t num_classes, at::IntArrayRef radii,
                                      int64_t ignore_index) {
  const BfsSizes z = check_boundary_fscore(kOp, pred_in, target_in, num_classes, radii);
  auto out = at::zeros({z.N, z.K, z.R, bfs::kNumColumns}, pred_in.options().dtype(at::kLong));
  if (z.empty()) return out;
  const at::Tensor pred = readable_labels(pred_in), target = readable_labels(target_in);
  const bfs::Radii rad = make_radii(radii, z.H, z.W);
  const int64_t K = z.K, R = z.R, PW = z.plane_words();
  const int64_t CW = bfs::cell_rows(z.H) * z.Wwords();
  // Not zero-initialised: build_mask_word writes every word of every plane.
  std::unique_ptr<uint64_t[]> planes(new uint64_t[2 * K * PW]);
  std::unique_ptr<uint64_t[]> occ(new uint64_t[2 * K * CW]);
  int64_t* o = out.data_ptr<int64_t>();

  dispatch_label_types(kOp, pred, target, [&](auto p_tag, auto t_tag) {
    using P = std::remove_const_t<std::remove_pointer_t<decltype(p_tag)>>;
    using T = std::remove_const_t<std::remove_pointer_t<decltype(t_tag)>>;
    const auto pm = label_map<P>(pred);
    const auto tm = label_map<T>(target);
    // Bad labels of every image, raised after the last one, pred first: the same error as the
    // GPU programs give (they see all the images before the host looks).
    labels::HostStatus bad_pred, bad_target;
    for (int64_t n = 0; n < z.N; ++n) {
      build_masks(pm, tm, n, z, ignore_index, planes.get(), bad_pred.get(), bad_target.get());
      std::atomic<int64_t> next_class{0};
      at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), K), 1, [&](int64_t, int64_t) {
        for (int64_t k = next_class++; k < K; k = next_class++) {
          uint64_t* pb = planes.get() + k * PW;
          uint64_t* tb = planes.get() + (K + k) * PW;
          uint64_t* po = occ.get() + k * CW;
          uint64_t* to = occ.get() + (K + k) * CW;
          const auto [pred_pixels, pred_boundary] = boundary_in_place(pb, po, z);
          const auto [target_pixels, target_boundary] = boundary_in_place(tb, to, z);
          int64_t pred_matched[bfs::kMaxRadii] = {}, target_matched[bfs::kMaxRadii] = {};
          if (pred_boundary > 0 && target_boundary > 0) {
            match_plane(pb, tb, to, z, rad, pred_matched);
            match_plane(tb, pb, po, z, rad, target_matched);
          }
          for (int64_t j = 0; j < R; ++j) {
            int64_t* c = o + ((n * K + k) * R + j) * bfs::kNumColumns;
            c[bfs::kPredBoundary] = pred_boundary;
            c[bfs::kPredMatched] = pred_matched[j];
            c[bfs::kTargetBoundary] = target_boundary;
            c[bfs::kTargetMatched] = target_matched[j];
            c[bfs::kPredPixels] = pred_pixels;
            c[bfs::kTargetPixels] = target_pixels;
          }
        }
      });
    }
    bad_pred.raise_if_bad(kOp, "pred", K, ignore_index);
    bad_target.raise_if_bad(kOp, "target", K, ignore_index);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CPU, m) {
  m.impl("boundary_fscore_counts", &boundary_fscore_counts_cpu);
}

}  // namespace gscnn
