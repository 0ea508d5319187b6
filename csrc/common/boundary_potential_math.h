#pragma once
// The boundary potential and dual-task loss of Gated-SCNN (paper eq. 4-5): the arithmetic and
// the tile geometry of the tiled stencil pipeline (common/boundary_potential_program.h) that the
// CPU kernels, the CUDA kernels and the emulated GPU of the tests run.
//
// The math, per (n, k) channel of the class probabilities P (N, K, H, W):
//   B  = G_y * (G_x * P)          separable Gaussian, taps g(a) = exp(-a^2 / 2 sigma^2) / sum,
//                                 a = -R..R, R = ceil(3 sigma), replicate borders (clamped index)
//   gx = (B(i, cl(j+1)) - B(i, cl(j-1))) / 2,  gy likewise (replicate borders)
//   zeta = sqrt(gx^2 + gy^2) / sqrt(2)
// and the same zeta_hat for the one-hot labels (0 in every channel at ignore pixels). A pixel is
// kept when no ignore pixel lies within Chebyshev distance R + 1; P+ = kept (n, k, pixel) with
// zeta > threshold or zeta_hat > threshold; loss = sum_{P+} |zeta - zeta_hat| / max(|P+|, 1).
//
// Tiling. A block works on one image n and one TH x TW tile of pixels at a time, looping over the
// K channels (so the labels and the keep mask are loaded and computed once per tile). It loads
// its tile plus a halo of h pixels (clamped coordinates: the replicate border), blurs rows, then
// columns, and takes the gradient, all in a local ("shared") buffer. Regions, as offsets from the tile:
//   E  = tile + h              probabilities (and labels) as loaded
//   X  = rows of E, columns tile + (h - R)       after the row blur
//   B  = tile + (h - R)                           after the column blur
//   Z  = tile + (h - R - 1)                       where zeta is evaluated
// Forward: h = R + 1, so Z is the tile. Backward: h = 2R + 2, so Z = tile + (R + 1), every pixel
// whose zeta depends on a pixel of the tile; the adjoints are then gathered (no scatter, so no
// races on the GPU): dB on tile + R, dX on tile rows x (tile + R) columns, dP on the tile.
//
// Each kernel is a block program (common/exec.h): per-thread phases separated by block barriers.
// CUDA runs a phase on every thread with __syncthreads() between phases; the emulator of the tests
// runs each phase for every thread of a block before the next. The CPU kernels
// (cpu/boundary_potential_kernels_impl.h) use the same regions, one tile per core at a time.

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace gscnn {
namespace dtl {

// Largest Gaussian radius: sigma <= 32 / 3. The taps travel by value in the kernel arguments.
constexpr int kMaxRadius = 32;

template <typename acc_t>
struct Taps {
  int R;
  acc_t g[2 * kMaxRadius + 1];    // g[a + R], a = -R..R, sums to 1
  acc_t cum[2 * kMaxRadius + 2];  // cum[i] = g[0] + ... + g[i - 1]
};

template <typename acc_t>
GSCNN_HD acc_t hd_sqrt(acc_t x) {
  return sqrt(x);
}

// zeta from the central differences.
template <typename acc_t>
GSCNN_HD acc_t potential(acc_t gx, acc_t gy) {
  return hd_sqrt<acc_t>(gx * gx + gy * gy) * acc_t(0.70710678118654752440);
}

// The factor c with d zeta / d gx = c * gx and d zeta / d gy = c * gy, times the incoming dzeta:
// zeta = |g| / sqrt(2)  =>  d zeta / d g = g / (sqrt(2) |g|) = g / (2 zeta). Zero where zeta = 0
// (the subgradient we choose at the kink).
template <typename acc_t>
GSCNN_HD acc_t potential_grad_factor(acc_t dzeta, acc_t zeta) {
  return zeta > acc_t(0) ? dzeta / (acc_t(2) * zeta) : acc_t(0);
}

// Whether an (n, k, pixel) of a kept pixel belongs to P+ (the paper's "non-zero in either map").
template <typename acc_t>
GSCNN_HD bool in_band(acc_t zeta, acc_t zeta_hat, acc_t threshold) {
  return zeta > threshold || zeta_hat > threshold;
}

// Exact skipping of a (tile, class) pair by the dual-task loss. If no label of the class lies in
// the tile's halo E, zeta_hat = 0 on the tile; and if every probability of the class in E is
// within `dev` of one of them, v0, then every blurred value lies in [v0 - dev, v0 + dev] (a blur
// is an average), |gx|, |gy| <= dev (half a difference of two of them) and zeta =
// sqrt(gx^2 + gy^2) / sqrt(2) <= dev. When the bound, with a margin for the rounding of the blurs,
// the differences and the square root, is at most the threshold, no pixel of the tile is in P+:
// the forward adds nothing and the backward's gradient is 0. A NaN deviation is never flat.
template <typename acc_t>
GSCNN_HD bool flat_within_threshold(acc_t dev, acc_t v0, acc_t threshold, int64_t R) {
  const acc_t eps = sizeof(acc_t) == 4 ? acc_t(1.1920928955078125e-7) : acc_t(2.220446049250313e-16);
  const acc_t c = acc_t(8 * R + 16) * eps;
  const acc_t a0 = v0 < acc_t(0) ? -v0 : v0, at = threshold < acc_t(0) ? -threshold : threshold;
  return dev * (acc_t(1) + c) + c * (a0 + at) <= threshold;
}

// d |zeta - zeta_hat| / d zeta, with sign(0) = 0.
template <typename acc_t>
GSCNN_HD acc_t abs_grad(acc_t zeta, acc_t zeta_hat) {
  const acc_t d = zeta - zeta_hat;
  return d > acc_t(0) ? acc_t(1) : (d < acc_t(0) ? acc_t(-1) : acc_t(0));
}

// Adjoint of a replicate-padded blur along an axis of length n: the weight with which B(rp)
// contributes to dX(r), i.e. the sum of g(a) over a in [-R, R] with clamp(rp + a) == r. Interior
// r: g(r - rp). At the borders the clamp sent every tap beyond the edge onto the edge pixel.
template <typename acc_t>
GSCNN_HD acc_t blur_adjoint_weight(const Taps<acc_t>& k, int64_t r, int64_t rp, int64_t n) {
  const int64_t R = k.R;
  if (r != 0 && r != n - 1) {
    const int64_t a = r - rp;
    return (a >= -R && a <= R) ? k.g[a + R] : acc_t(0);
  }
  int64_t lo = (r == 0) ? -R : r - rp;
  int64_t hi = (r == n - 1) ? R : r - rp;
  lo = lo < -R ? -R : lo;
  hi = hi > R ? R : hi;
  return lo > hi ? acc_t(0) : k.cum[hi + R + 1] - k.cum[lo + R];
}

// d B(i, j) from the adjoints of gx at row i (dg is DGX, or DGY walked along a column): the
// transpose of gx(j) = (B(cl(j+1)) - B(cl(j-1))) / 2. `at(j)` reads the adjoint of position j.
// The sum in the form of the vector program, which knows whether the position is the axis's
// first and last from 32-bit bounds (Span) and holds its neighbours' adjoints in registers.
template <typename acc_t>
GSCNN_HD acc_t central_difference_adjoint_at(bool first, bool last, acc_t prev, acc_t self,
                                             acc_t next) {
  acc_t s = 0;
  if (!first) s += prev;
  if (last) s += self;
  if (!last) s -= next;
  if (first) s -= self;
  return acc_t(0.5) * s;
}
template <typename acc_t, typename At>
GSCNN_HD acc_t central_difference_adjoint(int64_t j, int64_t n, At at) {
  const bool first = j == 0, last = j == n - 1;
  return central_difference_adjoint_at<acc_t>(first, last, first ? acc_t(0) : at(j - 1), at(j),
                                              last ? acc_t(0) : at(j + 1));
}

// Where the image's first and last row (or column) fall along an axis of a block's region whose
// position 0 is image coordinate `origin`, as 32-bit positions clamped to [-1, size]: position p
// (0 <= p < size) is in the image iff first <= p <= last, and is its first (last) row iff
// p == first (p == last). The 64-bit coordinates are compared once per tile, not per pixel.
// (A tile starts inside the image, so first <= size - 1 and last >= 0 for its regions.)
struct Span {
  int first, last;
  GSCNN_HD Span(int64_t origin, int64_t n, int size)
      : first(clamp_position(-origin, size)), last(clamp_position(n - 1 - origin, size)) {}
  GSCNN_HD bool inside(int p) const { return p >= first && p <= last; }
  // The position whose image coordinate is p's clamped into the image (the replicate border).
  GSCNN_HD int clamp(int p) const { return p < first ? first : (p > last ? last : p); }
  static GSCNN_HD int clamp_position(int64_t p, int size) {
    return static_cast<int>(p < -1 ? -1 : (p > size ? size : p));
  }
};

// Elements e = t, t + T, ... of a rows x cols region in row-major order, as (row, col). With one
// thread a plain nested loop; on the GPU consecutive threads take consecutive columns (coalesced
// global loads, conflict-free shared memory). Regions of a block's buffers: 32-bit indices (their
// sizes are far below 2^31; 64-bit index arithmetic costs the GPU two to four instructions per
// operation).
// Walk2d is that walk as a cursor (cols > 0), for code that unrolls its first steps.
struct Walk2d {
  int r, c, dr, dc, cols;
  GSCNN_HD Walk2d(int cols_, int t, int T)
      : r(t / cols_), c(t % cols_), dr(T / cols_), dc(T % cols_), cols(cols_) {}
  GSCNN_HD void next() {
    r += dr;
    c += dc;
    if (c >= cols) {
      c -= cols;
      ++r;
    }
  }
};
template <typename F>
GSCNN_HD void for_each_2d(int rows, int cols, int t, int T, F&& f) {
#if !defined(__CUDA_ARCH__)  // the GPU never runs blocks of one thread: no code for them there
  if (T == 1) {
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) f(r, c);
    return;
  }
#endif
  if (cols <= 0) return;
  for (Walk2d w(cols, t, T); w.r < rows; w.next()) f(w.r, w.c);
}

// Where a region of one image plane of a tensor (an (n, k) plane of P, an image of the labels)
// starts, and the plane's strides, in the offset type I that with_plane_offsets chose.
template <typename I>
struct PlaneOffsets {
  I sH, sW;  // the plane's strides
  I i0, j0;  // the region's first row and column (negative where a halo starts above or left)
  // offsets of the region's row r, column c, and element (r, c) from the plane's start
  GSCNN_HD I row(int r) const { return (i0 + r) * sH; }
  GSCNN_HD I column(int c) const { return (j0 + c) * sW; }
  GSCNN_HD I offset(int r, int c) const { return row(r) + column(c); }
  // Whether every group of four columns j0 + 4q .. j0 + 4q + 3 of a row is one aligned vector
  // access of `plane` (16 bytes in float32): rows contiguous, each starting on a multiple of four
  // elements, the region too, the plane's pointer aligned to four elements.
  template <typename T>
  GSCNN_HD bool groups_of_four_aligned(const T* plane) const {
    return sW == 1 && sH % 4 == 0 && j0 % 4 == 0 &&
           reinterpret_cast<uintptr_t>(plane) % (4 * sizeof(T)) == 0;
  }
};

// Offsets into one image plane of a tensor: 32-bit when the plane's extent allows (its elements
// span less than 2^31, as nearly every tensor's do), 64-bit otherwise. f gets a PlaneOffsets of
// the chosen type: one instantiation per type, the test made once per call, not per element (a
// 64-bit multiply costs the GPU three instructions). i0 and j0 lie within one H or W of the
// image (a halo's origin), so they fit the type whenever H and W do.
template <typename F>
GSCNN_HD void with_plane_offsets(int64_t H, int64_t W, int64_t sH, int64_t sW, int64_t i0,
                                 int64_t j0, F&& f) {
  constexpr int64_t kMax = int64_t(1) << 31;
  if (H < kMax && W < kMax && sH < kMax && sW < kMax && (H - 1) * sH + (W - 1) * sW < kMax) {
    using I = int32_t;
    f(PlaneOffsets<I>{static_cast<I>(sH), static_cast<I>(sW), static_cast<I>(i0),
                      static_cast<I>(j0)});
  } else {
    f(PlaneOffsets<int64_t>{sH, sW, i0, j0});
  }
}

// Strided views of the tensors, 64-bit offsets.
template <typename T>
struct View4 {
  T* data;
  int64_t sN, sK, sH, sW;
  GSCNN_HD T& at(int64_t n, int64_t k, int64_t i, int64_t j) const {
    return data[n * sN + k * sK + i * sH + j * sW];
  }
  GSCNN_HD T* plane(int64_t n, int64_t k) const { return data + n * sN + k * sK; }
};

struct Labels {
  const int64_t* data;
  int64_t sN, sH, sW;
  GSCNN_HD int64_t at(int64_t n, int64_t i, int64_t j) const {
    return data[n * sN + i * sH + j * sW];
  }
  GSCNN_HD const int64_t* plane(int64_t n) const { return data + n * sN; }
};

// The dual-task loss records which classes occur in a tile's halo E as a bit mask (classes 0..63;
// with more classes every class counts as present): a class absent from E has a zero one-hot blur,
// so zeta_hat = 0 exactly on the whole tile and its blur is skipped. The threads' masks are ORed
// in two steps: kClassGroups threads OR a share each, then every thread ORs their results.
constexpr int64_t kClassGroups = 16;
constexpr int64_t kMaskClasses = 64;

GSCNN_HD constexpr int round4(int v) { return (v + 3) / 4 * 4; }

// Offsets (in acc_t elements) of the block's buffers, for a tile TH x TW, radius R, halo h: 32-bit
// (tiles of at most 32 x 32 pixels and a radius of at most kMaxRadius: well under 2^31 values).
//
// Row strides: EWs for the E buffers (P, labels), XWs for X and B, ZWs for the Z buffers (keep,
// DGX, DGY), DWs for dB and dX. All are multiples of 4 and every region starts at a multiple of 4
// values, so that rows can be read and written in aligned groups of four (the vector blurs, the
// differences and their adjoints); EWs and DWs leave room for the row blur's (and its adjoint's)
// last group: 4 + 2R inputs read as whole groups of four, the columns past EW (DW) being padding.
// The differences of Z columns 4q .. 4q + 3 read B columns 4q .. 4q + 7 (two groups; Z column c is
// B column c + 1), their adjoints Z columns 4q .. 4q + 7 of DGX and DGY: hence
// XG = round4(ZW) / 4 + 1 groups of X and B computed per row, and XWs and ZWs of at least 4 XG.
//
// conflict_free: strides that keep the vector phases free of shared-memory bank conflicts, at the
// price of more shared memory (the launch falls back to the compact strides where the buffers do
// not fit). A warp's 16-byte accesses are served a quarter-warp (8 lanes, 128 bytes) at a time,
// conflict-free when the 8 groups of four fall in distinct bank groups (group index mod 8). A phase
// walks a region's groups row-major (for_each_2d over `width` groups per row), so lane i of a
// quarter-warp reaches group step * (row) + column: consecutive lanes reach consecutive groups
// except across a row's end, where the address jumps by step - width groups. That jump keeps them
// distinct mod 8 exactly when step = width (mod 8). Hence: E's rows 8k groups longer than XG (the
// row blur walks XG groups, reading P and L at stride EWs); in the backward, the two-row phases
// (column blur, zeta, the adjoint of the differences: a row step of 2 XWs) walk W2 = XG rounded up
// to even groups and XWs = ZWs is chosen with 2 XWs / 4 = W2 (mod 8). (Backward, 32 x 32, R = 3:
// XG = 11, W2 = 12, XWs = 56 (14 groups), EWs = 76 (19); the loss backward's buffers 107 KiB
// instead of 84 in float32. Left: the row blur's stores of X, at stride XWs walking XG.) The
// forward keeps XWs = 4 XG (the row blur's stores walk XG groups at that step) and walks its
// two-row column blur over W2 = 2 XG (mod 8) groups instead, a few lanes idle.
struct Layout {
  int TH, TW, R, h;
  int EH, EW, XW, BH, ZH, ZW, DH, DW;  // region sizes (D = tile + R, for the backward)
  int XG, W2;  // groups of four of X per row the row blur computes; width of the two-row phases
  int EG;      // groups of four of E per row the row blur reads (padding included)
  int EWs, XWs, ZWs, DWs;  // row strides
  int L, P, X, Xh, B, Bh, keep, DGX, DGY, dB, dX, red, cls, total;

  GSCNN_HD Layout(int64_t TH_, int64_t TW_, int64_t R_, bool loss, bool backward, int64_t T,
                  bool conflict_free = false)
      : TH(static_cast<int>(TH_)),
        TW(static_cast<int>(TW_)),
        R(static_cast<int>(R_)),
        h(backward ? 2 * R + 2 : R + 1) {
    const int nT = static_cast<int>(T);
    EH = TH + 2 * h;
    EW = TW + 2 * h;
    XW = EW - 2 * R;
    BH = EH - 2 * R;
    ZH = BH - 2;
    ZW = XW - 2;
    DH = TH + 2 * R;
    DW = TW + 2 * R;
    XG = round4(ZW) / 4 + 1;  // 4 XG >= XW + 2
    // XWs / 4 = xg. Backward: W2 = XG rounded up to even, 2 xg = W2 (mod 8), W2 <= xg <= W2 + 3
    // (at least the walk of the two-row phases, whose last group's lanes store zeros: with
    // xg = XG < W2, for odd XG, they wrote past the row). Forward: xg = XG (the row blur's walk),
    // and the column blur, its one two-row phase, walks W2 >= XG groups with W2 = 2 XG (mod 8)
    // (its lanes past XG do nothing; 32 x 32, R = 3: XG = 9, W2 = 10).
    W2 = XG;
    if (conflict_free && backward) W2 = (XG + 1) / 2 * 2;
    if (conflict_free && !backward)
      while ((W2 - 2 * XG) % 8 != 0) ++W2;
    int xg = backward ? W2 : XG;
    while (conflict_free && backward && (2 * xg - W2) % 8 != 0) ++xg;
    XWs = 4 * xg;
    ZWs = XWs;
    // E: room for the row blur's last group (round4(2R) past 4 XG), in whole 8 groups if
    // conflict-free
    EG = XG + round4(2 * R) / 4;
    EWs = conflict_free ? 4 * XG + (round4(2 * R) + 31) / 32 * 32 : 4 * EG;
    DWs = round4(TW) + round4(2 * R);
    int o = 0;
    const auto region = [&o](bool used, int size) {
      const int at = o;
      if (used) o += round4(size);
      return at;
    };
    L = region(loss, EH * EWs);
    P = region(true, EH * EWs);
    X = region(true, EH * XWs);
    Xh = region(loss, EH * XWs);
    B = region(true, BH * XWs);
    Bh = region(loss, BH * XWs);
    keep = region(loss, ZH * ZWs);
    DGX = region(backward, ZH * ZWs);
    DGY = region(backward, ZH * ZWs);
    dB = region(backward, DH * DWs);
    dX = region(backward, TH * DWs);
    red = region(loss && !backward, 3 * nT);  // per thread: sum, count, bad labels
    // loss: the classes present in E, as two 32-bit words per thread, then per group
    cls = region(loss, 2 * nT + 2 * static_cast<int>(kClassGroups));
    total = o;
  }
};


}  // namespace dtl
}  // namespace gscnn
