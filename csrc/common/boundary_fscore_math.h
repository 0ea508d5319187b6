#pragma once
// The arithmetic of the boundary F-score (the DAVIS measure), written once for the CPU kernels and
// the CUDA block programs (common/boundary_fscore_program.h, also run by the emulated GPU of the
// tests).
//
// Everything works on bit-packed binary maps. A *plane* is one binary map of one image: H rows of
// Wwords = ceil(W / 64) 64-bit words, bit i of word j of row y being pixel (y, 64 j + i); bits
// past the last column are always 0.
//
// Per image and class k, with valid = (target != ignore_index):
//   pred mask   P = (pred == k) & valid          target mask  G = (target == k) & valid
//   boundary    b(y, x) = OR over the neighbours q in {east, south, south-east} that lie inside
//               the image of [m(y, x) != m(q)]   (DAVIS seg2bmap: the last row only compares
//               with its east neighbour, the last column only with its south neighbour, the
//               bottom-right pixel is never boundary; a mask touching the image border has no
//               boundary along it)
//   a boundary pixel of one map is *matched* at radius r when the other map has a boundary pixel
//   q with |q - p|^2 <= r^2 (the disk x^2 + y^2 <= r^2 of the DAVIS dilation).
// Instead of dilating the other map once per radius, we find for each boundary pixel the smallest
// radius within which the other map has a boundary pixel (searched row by row outwards, stopping
// as soon as no smaller radius can be reached) and compare it with every radius: one search per
// pixel serves all thresholds, and boundary pixels are sparse. Pixels with nothing near are
// rejected by a look at coarse occupancy cells (ORs of 8 rows) first.

#include <cmath>
#include <cstdint>

#include "device_intrinsics.h"
#include "host_device.h"

namespace gscnn {
namespace bfs {

constexpr int kWordBits = 64;
// Thresholds per call: the per-thread counters of the CUDA match kernel live in shared memory,
// kMaxRadii of them per thread.
constexpr int kMaxRadii = 32;

GSCNN_HD int ctz64(uint64_t v) { return hd::ffs64(v) - 1; }  // v != 0
GSCNN_HD int clz64(uint64_t v) { return hd::clz64(v); }
GSCNN_HD int popcount64(uint64_t v) { return hd::popcount64(v); }

GSCNN_HD int64_t words_per_row(int64_t W) { return (W + kWordBits - 1) / kWordBits; }

// Bits of word w that are pixels x < limit (limit may be <= 64 w or >= 64 (w + 1)).
GSCNN_HD uint64_t bits_below(int64_t w, int64_t limit) {
  const int64_t n = limit - w * kWordBits;
  if (n <= 0) return 0;
  if (n >= kWordBits) return ~uint64_t(0);
  return (uint64_t(1) << n) - 1;
}

// Word w of the boundary map of row y, from words w and w + 1 of the mask rows y (`row`) and
// y + 1 (`next`, null for the last row). W is the image width.
GSCNN_HD uint64_t boundary_word(const uint64_t* row, const uint64_t* next, int64_t w,
                                int64_t Wwords, int64_t W) {
  const bool has_hi = w + 1 < Wwords;
  const uint64_t m = row[w];
  const uint64_t east = (m >> 1) | ((has_hi ? row[w + 1] : uint64_t(0)) << 63);
  const uint64_t has_east = bits_below(w, W - 1);  // pixels x with x + 1 < W
  uint64_t b = (m ^ east) & has_east;
  if (next != nullptr) {
    const uint64_t s = next[w];
    const uint64_t se = (s >> 1) | ((has_hi ? next[w + 1] : uint64_t(0)) << 63);
    b |= ((m ^ s) & bits_below(w, W)) | ((m ^ se) & has_east);
  }
  return b;
}

// Smallest |dx| <= wmax such that pixel x + dx of `row` is set, or -1 when there is none.
GSCNN_HD int64_t nearest_in_row(const uint64_t* row, int64_t Wwords, int64_t x, int64_t wmax) {
  const int64_t wi = x / kWordBits;
  const int b = static_cast<int>(x % kWordBits);
  int64_t best = -1;
  // Rightwards, x included.
  const uint64_t right = row[wi] >> b;
  if (right != 0) {
    const int64_t d = ctz64(right);
    if (d <= wmax) best = d;
  } else {
    for (int64_t j = wi + 1; j < Wwords; ++j) {
      const int64_t base = j * kWordBits - x;  // distance to bit 0 of word j
      if (base > wmax) break;
      if (row[j] != 0) {
        const int64_t d = base + ctz64(row[j]);
        if (d <= wmax) best = d;
        break;
      }
    }
  }
  // Leftwards, only closer than what was found.
  const int64_t lim = best >= 0 ? best - 1 : wmax;
  if (lim < 1) return best;
  const uint64_t left = b == 0 ? uint64_t(0) : row[wi] << (kWordBits - b);  // bit 63 = x - 1
  if (left != 0) {
    const int64_t d = clz64(left) + 1;
    if (d <= lim) best = d;
  } else {
    for (int64_t j = wi - 1; j >= 0; --j) {
      const int64_t base = x - (j * kWordBits + kWordBits - 1);  // distance to bit 63 of word j
      if (base > lim) break;
      if (row[j] != 0) {
        const int64_t d = base + clz64(row[j]);
        if (d <= lim) best = d;
        break;
      }
    }
  }
  return best;
}

// Occupancy cells: the OR of kCellRows consecutive rows of a plane, per word column (cell row
// cy covers rows kCellRows * cy ...). They let a search reject in a few loads the pixels with no
// set pixel anywhere in the square around them: most boundary pixels that match nothing.
constexpr int64_t kCellRows = 8;

GSCNN_HD int64_t cell_rows(int64_t H) { return (H + kCellRows - 1) / kCellRows; }

// Whether `occ` (cell_rows(H) x Wwords) has a set bit in the square |dy| <= r, |dx| <= r around
// pixel (y, x) (a superset of the disk of radius r).
GSCNN_HD bool any_within(const uint64_t* occ, int64_t H, int64_t Wwords, int64_t W, int64_t y,
                         int64_t x, int64_t r) {
  const int64_t y0 = y - r < 0 ? 0 : y - r, y1 = y + r >= H ? H - 1 : y + r;
  const int64_t x0 = x - r < 0 ? 0 : x - r, x1 = x + r >= W ? W - 1 : x + r;
  const int64_t w0 = x0 / kWordBits, w1 = x1 / kWordBits;
  for (int64_t cy = y0 / kCellRows; cy <= y1 / kCellRows; ++cy) {
    const uint64_t* row = occ + cy * Wwords;
    for (int64_t w = w0; w <= w1; ++w) {
      const uint64_t cols = bits_below(w, x1 + 1) & ~bits_below(w, x0);
      if (row[w] & cols) return true;
    }
  }
  return false;
}

// The radii of one call, squared: in the caller's order (r2, for the counters) and sorted without
// repeats (sorted_r2, for the search), with the largest radius (bounding every search).
struct Radii {
  int64_t r2[kMaxRadii];
  int64_t count;
  int64_t sorted_r2[kMaxRadii];
  int64_t unique;
  int64_t rmax;
};

// The smallest squared radius of `radii` within which `plane` (H x Wwords words) has a set pixel
// around (y, x), or rmax^2 + 1 when none lies within rmax: all a count needs, as
// d^2 <= r_j^2 exactly when that value is <= r_j^2. Rows are searched outwards from y, for a pixel
// in a smaller radius than the one found so far (`bin`): in row dy only |dx| <= wmax can qualify,
// wmax^2 <= r^2 - dy^2 shrinking as dy grows and as bins are reached (kept by decrements, no
// square roots); the search stops when dy^2 exceeds the next smaller radius^2, or at the
// smallest one. When row y itself has nothing within rmax, the occupancy cells `occ` are asked
// first whether anything lies in the square of radius rmax at all (most unmatched pixels end
// there); the other pixels never pay for that look.
GSCNN_HD int64_t nearest_radius_sq(const uint64_t* plane, const uint64_t* occ, int64_t H,
                                   int64_t Wwords, int64_t W, int64_t y, int64_t x,
                                   const Radii& radii) {
  const int64_t* s = radii.sorted_r2;
  const int64_t rmax = radii.rmax;
  int64_t bin = radii.unique;  // s[bin] holds the distance found; unique: none yet
  const int64_t dx0 = nearest_in_row(plane + y * Wwords, Wwords, x, rmax);
  if (dx0 >= 0) {
    while (bin > 0 && dx0 * dx0 <= s[bin - 1]) --bin;
  } else if (!any_within(occ, H, Wwords, W, y, x, rmax)) {
    return rmax * rmax + 1;
  }
  int64_t wmax = rmax;
  for (int64_t dy = 1; bin > 0 && dy * dy <= s[bin - 1]; ++dy) {
    for (int side = 0; side < 2 && bin > 0; ++side) {
      const int64_t room = s[bin - 1] - dy * dy;  // dx^2 <= room reaches a smaller radius
      if (room < 0) break;
      while (wmax * wmax > room) --wmax;
      const int64_t yy = side == 0 ? y + dy : y - dy;
      if (yy < 0 || yy >= H) continue;
      const int64_t dx = nearest_in_row(plane + yy * Wwords, Wwords, x, wmax);
      if (dx < 0) continue;
      const int64_t d2 = dy * dy + dx * dx;
      while (bin > 0 && d2 <= s[bin - 1]) --bin;
    }
  }
  return bin < radii.unique ? s[bin] : rmax * rmax + 1;
}

// For every set bit of the boundary word w of row y of `src`, looks for the nearest boundary
// pixel of `dst` (dst_occ: its occupancy cells) and adds 1 to counter j (counters[j * stride])
// for every radius j within which it lies. CounterPtr points to the counters (a shared-memory
// column on the GPU, the emulator's recording pointer in the tests).
template <typename CounterPtr>
GSCNN_HD void match_word(uint64_t word, const uint64_t* dst, const uint64_t* dst_occ, int64_t H,
                         int64_t Wwords, int64_t W, int64_t y, int64_t w, const Radii& radii,
                         CounterPtr counters, int64_t stride) {
  while (word != 0) {
    const int64_t x = w * kWordBits + ctz64(word);
    word &= word - 1;
    const int64_t d2 = nearest_radius_sq(dst, dst_occ, H, Wwords, W, y, x, radii);
    for (int64_t j = 0; j < radii.count; ++j) {
      if (d2 <= radii.r2[j]) counters[j * stride] += 1;
    }
  }
}

// Per-pixel labels of one row segment: class of the pred and target pixel, or -1 for none.
// The rules (applied to every pixel):
//   target == ignore_index          -> void: neither map has the pixel in any class;
//   target in [0, K)                -> target class; otherwise a bad target label;
//   pred in [0, K)                  -> pred class (when not void);
//   pred == ignore_index (not in [0, K)) -> no class; any other pred value is a bad pred label.
struct PixelClasses {
  int64_t pred, target;
  bool bad_pred, bad_target;
};

GSCNN_HD PixelClasses classify(int64_t p, int64_t t, int64_t K, int64_t ignore_index) {
  PixelClasses c{-1, -1, false, false};
  const bool p_in = p >= 0 && p < K;
  c.bad_pred = !p_in && p != ignore_index;
  if (t == ignore_index) return c;
  if (t < 0 || t >= K) {
    c.bad_target = true;
    return c;
  }
  c.target = t;
  c.pred = p_in ? p : -1;
  return c;
}

// A read-only (N, H, W) label map with arbitrary strides.
template <typename T>
struct LabelMap {
  const T* data;
  int64_t sN, sH, sW;
  GSCNN_HD int64_t at(int64_t n, int64_t y, int64_t x) const {
    return static_cast<int64_t>(data[n * sN + y * sH + x * sW]);
  }
};

// First offending column of a mask word (-1: none), for the error message.
struct BadPixels {
  int64_t pred_x, target_x;
};

// Builds word w of row y of image n's class masks: zeroes word (y, w) of the K pred planes and
// the K target planes (plane k of pred at pred_planes + k * plane_stride, `offset` = y * Wwords
// + w within a plane), then sets the bits of the up to 64 pixels. Label maps are piecewise
// constant, so pixels are taken in runs of equal (pred, target) labels: a run costs two loads,
// two compares and an OR per pixel, and is classified and written once.
template <typename P, typename T>
GSCNN_HD BadPixels build_mask_word(const LabelMap<P>& pred, const LabelMap<T>& target, int64_t n,
                                   int64_t y, int64_t w, int64_t W, int64_t K,
                                   int64_t ignore_index, uint64_t* pred_planes,
                                   uint64_t* target_planes, int64_t plane_stride, int64_t offset) {
  for (int64_t k = 0; k < K; ++k) {
    pred_planes[k * plane_stride + offset] = 0;
    target_planes[k * plane_stride + offset] = 0;
  }
  BadPixels bad{-1, -1};
  const int64_t x0 = w * kWordBits;
  const int count = static_cast<int>(W - x0 < kWordBits ? W - x0 : kWordBits);
  const P* prow = pred.data + n * pred.sN + y * pred.sH + x0 * pred.sW;
  const T* trow = target.data + n * target.sN + y * target.sH + x0 * target.sW;
  const int64_t psW = pred.sW, tsW = target.sW;
  P run_p = prow[0];
  T run_t = trow[0];
  int run_start = 0;
  uint64_t run_bits = 0;
  if (psW == 1 && tsW == 1 && count == kWordBits) {
    // Most words of a label map lie inside one region: test that first with loops over
    // contiguous labels that the compiler vectorises.
    uint64_t diff = 0;
    for (int i = 0; i < kWordBits; ++i) diff |= static_cast<uint64_t>(prow[i] ^ run_p);
    for (int i = 0; i < kWordBits; ++i) diff |= static_cast<uint64_t>(trow[i] ^ run_t);
    if (diff == 0) {
      run_bits = ~uint64_t(0);
      const PixelClasses c = classify(static_cast<int64_t>(run_p), static_cast<int64_t>(run_t), K,
                                      ignore_index);
      if (c.bad_pred) bad.pred_x = x0;
      if (c.bad_target) bad.target_x = x0;
      if (c.pred >= 0) pred_planes[c.pred * plane_stride + offset] = run_bits;
      if (c.target >= 0) target_planes[c.target * plane_stride + offset] = run_bits;
      return bad;
    }
  }
  auto flush = [&]() {
    const PixelClasses c = classify(static_cast<int64_t>(run_p), static_cast<int64_t>(run_t), K,
                                    ignore_index);
    if (c.bad_pred && bad.pred_x < 0) bad.pred_x = x0 + run_start;
    if (c.bad_target && bad.target_x < 0) bad.target_x = x0 + run_start;
    if (c.pred >= 0) pred_planes[c.pred * plane_stride + offset] |= run_bits;
    if (c.target >= 0) target_planes[c.target * plane_stride + offset] |= run_bits;
  };
  for (int i = 0; i < count; ++i) {
    const P p = prow[i * psW];
    const T t = trow[i * tsW];
    if (p != run_p || t != run_t) {
      flush();
      run_p = p;
      run_t = t;
      run_start = i;
      run_bits = 0;
    }
    run_bits |= uint64_t(1) << i;
  }
  flush();
  return bad;
}

// Columns of the counts the op returns, per (image, class, threshold).
enum Column : int64_t {
  kPredBoundary = 0,   // boundary pixels of the pred mask
  kPredMatched = 1,    // ... of which within the radius of a target boundary pixel
  kTargetBoundary = 2, // boundary pixels of the target mask
  kTargetMatched = 3,  // ... of which within the radius of a pred boundary pixel
  kPredPixels = 4,     // pixels of the pred mask (class present in the prediction)
  kTargetPixels = 5,   // pixels of the target mask (class present in the ground truth)
  kNumColumns = 6,
};

}  // namespace bfs
}  // namespace gscnn
