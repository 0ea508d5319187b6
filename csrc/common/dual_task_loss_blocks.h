#pragma once
// The boundary potential and dual-task loss of Gated-SCNN (paper eq. 4-5) as a tiled stencil
// pipeline, written once for the CPU kernels, the CUDA kernels and the CPU emulation of the CUDA
// kernels.
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
// Tiling. A block owns one image n and one TH x TW tile of pixels, and loops over the K channels
// (so the labels and the keep mask are loaded and computed once per tile). It loads its tile plus
// a halo of h pixels (clamped coordinates: the replicate border), blurs rows, then columns, and
// takes the gradient, all in a local ("shared") buffer. Regions, as offsets from the tile:
//   E  = tile + h              probabilities (and labels) as loaded
//   X  = rows of E, columns tile + (h - R)       after the row blur
//   B  = tile + (h - R)                           after the column blur
//   Z  = tile + (h - R - 1)                       where zeta is evaluated
// Forward: h = R + 1, so Z is the tile. Backward: h = 2R + 2, so Z = tile + (R + 1), every pixel
// whose zeta depends on a pixel of the tile; the adjoints are then gathered (no scatter, so no
// races on the GPU): dB on tile + R, dX on tile rows x (tile + R) columns, dP on the tile.
//
// Each kernel is a sequence of per-thread phases separated by block barriers. CUDA runs a phase
// on every thread with __syncthreads() between phases (cuda/dual_task_loss.cu); the CPU emulator
// (cpu/dual_task_loss_block_emulation.cpp) runs each phase for every thread of a block before
// the next; the CPU kernels run the same phases with one "thread" per block (T = 1), where every
// phase is a plain nested loop over its region.

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

GSCNN_HD int64_t clampi(int64_t v, int64_t hi) { return v < 0 ? 0 : (v > hi ? hi : v); }

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
template <typename acc_t, typename At>
GSCNN_HD acc_t central_difference_adjoint(int64_t j, int64_t n, At at) {
  acc_t s = 0;
  if (j >= 1) s += at(j - 1);
  if (j == n - 1) s += at(j);
  if (j + 1 <= n - 1) s -= at(j + 1);
  if (j == 0) s -= at(j);
  return acc_t(0.5) * s;
}

// Elements e = t, t + T, ... of a rows x cols region in row-major order, as (row, col). With one
// thread (the CPU kernels) a plain nested loop; on the GPU consecutive threads take consecutive
// columns (coalesced global loads, conflict-free shared memory).
template <typename F>
GSCNN_HD void for_each_2d(int64_t rows, int64_t cols, int64_t t, int64_t T, F&& f) {
  if (T == 1) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) f(r, c);
    return;
  }
  if (cols <= 0) return;
  int64_t r = t / cols, c = t % cols;
  const int64_t dr = T / cols, dc = T % cols;
  while (r < rows) {
    f(r, c);
    r += dr;
    c += dc;
    if (c >= cols) {
      c -= cols;
      ++r;
    }
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
};

struct Labels {
  const int64_t* data;
  int64_t sN, sH, sW;
  GSCNN_HD int64_t at(int64_t n, int64_t i, int64_t j) const {
    return data[n * sN + i * sH + j * sW];
  }
};

// Offsets (in acc_t elements) of the block's buffers, for a tile TH x TW, radius R, halo h.
struct Layout {
  int64_t TH, TW, R, h;
  int64_t EH, EW, XW, BH, ZH, ZW, DH, DW;  // region sizes (D = tile + R, for the backward)
  int64_t L, P, X, Xh, B, Bh, keep, DGX, DGY, dB, dX, red, total;

  GSCNN_HD Layout(int64_t TH_, int64_t TW_, int64_t R_, bool loss, bool backward, int64_t T)
      : TH(TH_), TW(TW_), R(R_), h(backward ? 2 * R_ + 2 : R_ + 1) {
    EH = TH + 2 * h;
    EW = TW + 2 * h;
    XW = EW - 2 * R;
    BH = EH - 2 * R;
    ZH = BH - 2;
    ZW = XW - 2;
    DH = TH + 2 * R;
    DW = TW + 2 * R;
    int64_t o = 0;
    L = o;
    if (loss) o += EH * EW;
    P = o;
    o += EH * EW;
    X = o;
    o += EH * XW;
    Xh = o;
    if (loss) o += EH * XW;
    B = o;
    o += BH * XW;
    Bh = o;
    if (loss) o += BH * XW;
    keep = o;
    if (loss) o += ZH * ZW;
    DGX = o;
    if (backward) o += ZH * ZW;
    DGY = o;
    if (backward) o += ZH * ZW;
    dB = o;
    if (backward) o += DH * DW;
    dX = o;
    if (backward) o += TH * DW;
    red = o;
    if (loss && !backward) o += 2 * T;
    total = o;
  }
};

// One kernel of the family: kLoss (dual-task loss) or not (boundary potential), kBackward or not.
// Every phase takes the block's buffer `sm`, the block's tile (n, i0, j0), and (t, T).
template <typename scalar_t, typename acc_t, bool kLoss, bool kBackward>
struct Pipeline {
  static constexpr bool is_loss = kLoss, is_backward = kBackward;
  using acc_type = acc_t;
  View4<const scalar_t> prob;
  Labels target;             // kLoss
  View4<scalar_t> out;       // zeta (potential forward) or grad_prob (backward)
  View4<const scalar_t> grad_zeta;  // potential backward
  const double* scale;       // loss backward: grad_loss / max(|P+|, 1), one value on the device
  double* partials;          // loss forward: (sum |zeta - zeta_hat|, |P+|) per block
  int64_t N, K, H, W, TH, TW, tiles_h, tiles_w;
  int64_t ignore_index;
  acc_t threshold;
  Taps<acc_t> taps;

  GSCNN_HD int64_t num_blocks() const { return N * tiles_h * tiles_w; }
  GSCNN_HD Layout layout(int64_t T) const { return Layout(TH, TW, taps.R, kLoss, kBackward, T); }

  struct Tile {
    int64_t n, i0, j0;
  };
  GSCNN_HD Tile tile_of(int64_t blk) const {
    const int64_t per_image = tiles_h * tiles_w;
    const int64_t n = blk / per_image, rem = blk - n * per_image;
    const int64_t ty = rem / tiles_w, tx = rem - ty * tiles_w;
    return {n, ty * TH, tx * TW};
  }

  // --- phases shared by every kernel ------------------------------------------------------

  // Labels of E (clamped) as acc_t: the class, or -1 at ignore pixels.
  GSCNN_HD void load_labels(acc_t* sm, const Layout& Lo, Tile tl, int64_t t, int64_t T) const {
    acc_t* Lb = sm + Lo.L;
    const int64_t oi = tl.i0 - Lo.h, oj = tl.j0 - Lo.h;
    for_each_2d(Lo.EH, Lo.EW, t, T, [&](int64_t r, int64_t c) {
      const int64_t y = target.at(tl.n, clampi(oi + r, H - 1), clampi(oj + c, W - 1));
      Lb[r * Lo.EW + c] = y == ignore_index ? acc_t(-1) : static_cast<acc_t>(y);
    });
  }

  // keep on Z: in the image and no ignore pixel within Chebyshev distance R + 1 (E holds exactly
  // the clamped (2R + 3)^2 neighbourhood of every Z pixel; clamping only repeats image pixels of
  // that neighbourhood).
  GSCNN_HD void keep_mask(acc_t* sm, const Layout& Lo, Tile tl, int64_t t, int64_t T) const {
    const acc_t* Lb = sm + Lo.L;
    acc_t* keep = sm + Lo.keep;
    const int64_t d = 2 * Lo.R + 3, off = Lo.h - Lo.R - 1;  // Z row zr <-> E rows zr + off...
    const int64_t zi = tl.i0 - off, zj = tl.j0 - off;
    for_each_2d(Lo.ZH, Lo.ZW, t, T, [&](int64_t r, int64_t c) {
      bool ok = zi + r >= 0 && zi + r < H && zj + c >= 0 && zj + c < W;
      // Z pixel (r, c) is E pixel (r + R + 1 + off - off, ...) = (r + R + 1, c + R + 1) shifted
      // by the ball: E rows r .. r + 2R + 2.
      for (int64_t a = 0; a < d && ok; ++a)
        for (int64_t b = 0; b < d; ++b)
          if (Lb[(r + a) * Lo.EW + c + b] < acc_t(0)) {
            ok = false;
            break;
          }
      keep[r * Lo.ZW + c] = ok ? acc_t(1) : acc_t(0);
    });
  }

  // Channel k of P over E (clamped coordinates: the replicate border).
  GSCNN_HD void load_prob(acc_t* sm, const Layout& Lo, Tile tl, int64_t k, int64_t t,
                          int64_t T) const {
    acc_t* Pb = sm + Lo.P;
    const int64_t oi = tl.i0 - Lo.h, oj = tl.j0 - Lo.h;
    for_each_2d(Lo.EH, Lo.EW, t, T, [&](int64_t r, int64_t c) {
      Pb[r * Lo.EW + c] =
          static_cast<acc_t>(prob.at(tl.n, k, clampi(oi + r, H - 1), clampi(oj + c, W - 1)));
    });
  }

  // Row blur: X(r, c) = sum_i g[i] P(r, c + i) (and the one-hot of class k).
  GSCNN_HD void blur_rows(acc_t* sm, const Layout& Lo, int64_t k, int64_t t, int64_t T) const {
    const acc_t* Pb = sm + Lo.P;
    const acc_t* Lb = sm + Lo.L;
    acc_t* X = sm + Lo.X;
    acc_t* Xh = sm + Lo.Xh;
    const int64_t nt = 2 * taps.R + 1;
    const acc_t kk = static_cast<acc_t>(k);
    for_each_2d(Lo.EH, Lo.XW, t, T, [&](int64_t r, int64_t c) {
      const acc_t* p = Pb + r * Lo.EW + c;
      acc_t s = 0;
      for (int64_t i = 0; i < nt; ++i) s += taps.g[i] * p[i];
      X[r * Lo.XW + c] = s;
      if (kLoss) {
        const acc_t* l = Lb + r * Lo.EW + c;
        acc_t sh = 0;
        for (int64_t i = 0; i < nt; ++i) sh += l[i] == kk ? taps.g[i] : acc_t(0);
        Xh[r * Lo.XW + c] = sh;
      }
    });
  }

  // Column blur: B(r, c) = sum_i g[i] X(r + i, c).
  GSCNN_HD void blur_cols(acc_t* sm, const Layout& Lo, int64_t t, int64_t T) const {
    const int64_t nt = 2 * taps.R + 1;
    for_each_2d(Lo.BH, Lo.XW, t, T, [&](int64_t r, int64_t c) {
      const acc_t* x = sm + Lo.X + r * Lo.XW + c;
      acc_t s = 0;
      for (int64_t i = 0; i < nt; ++i) s += taps.g[i] * x[i * Lo.XW];
      sm[Lo.B + r * Lo.XW + c] = s;
      if (kLoss) {
        const acc_t* xh = sm + Lo.Xh + r * Lo.XW + c;
        acc_t sh = 0;
        for (int64_t i = 0; i < nt; ++i) sh += taps.g[i] * xh[i * Lo.XW];
        sm[Lo.Bh + r * Lo.XW + c] = sh;
      }
    });
  }

  // Central differences at the Z pixel with image coordinates (y, x) (in the image) from the
  // buffer B (origin: Z origin - 1).
  struct Diff {
    acc_t gx, gy;
  };
  GSCNN_HD Diff diff(const acc_t* Bb, const Layout& Lo, int64_t bi0, int64_t bj0, int64_t y,
                     int64_t x) const {
    const acc_t* row = Bb + (y - bi0) * Lo.XW;
    const acc_t gx = acc_t(0.5) * (row[clampi(x + 1, W - 1) - bj0] - row[clampi(x - 1, W - 1) - bj0]);
    const acc_t gy = acc_t(0.5) * (Bb[(clampi(y + 1, H - 1) - bi0) * Lo.XW + x - bj0] -
                                   Bb[(clampi(y - 1, H - 1) - bi0) * Lo.XW + x - bj0]);
    return {gx, gy};
  }

  // --- forward --------------------------------------------------------------------------------

  // Forward, on Z = the tile: write zeta (potential) or add to the thread's (sum, count) (loss).
  GSCNN_HD void forward_zeta(acc_t* sm, const Layout& Lo, Tile tl, int64_t k, int64_t t,
                             int64_t T, acc_t& sum, acc_t& count) const {
    const int64_t bi0 = tl.i0 - 1, bj0 = tl.j0 - 1;  // B origin
    for_each_2d(Lo.TH, Lo.TW, t, T, [&](int64_t r, int64_t c) {
      const int64_t y = tl.i0 + r, x = tl.j0 + c;
      if (y >= H || x >= W) return;
      const Diff d = diff(sm + Lo.B, Lo, bi0, bj0, y, x);
      const acc_t zeta = potential(d.gx, d.gy);
      if (!kLoss) {
        out.at(tl.n, k, y, x) = static_cast<scalar_t>(zeta);
        return;
      }
      if (sm[Lo.keep + r * Lo.ZW + c] == acc_t(0)) return;
      const Diff dh = diff(sm + Lo.Bh, Lo, bi0, bj0, y, x);
      const acc_t zeta_hat = potential(dh.gx, dh.gy);
      if (in_band(zeta, zeta_hat, threshold)) {
        sum += zeta > zeta_hat ? zeta - zeta_hat : zeta_hat - zeta;
        count += acc_t(1);
      }
    });
  }

  // Block reduction of the loss partials, in a fixed order (deterministic): every thread
  // publishes its (sum, count), then thread 0 adds them in thread order.
  GSCNN_HD void publish(acc_t* sm, const Layout& Lo, int64_t t, int64_t T, acc_t sum,
                        acc_t count) const {
    sm[Lo.red + t] = sum;
    sm[Lo.red + T + t] = count;
  }
  GSCNN_HD void reduce(const acc_t* sm, const Layout& Lo, int64_t blk, int64_t t,
                       int64_t T) const {
    if (t != 0) return;
    double s = 0, c = 0;
    for (int64_t i = 0; i < T; ++i) {
      s += static_cast<double>(sm[Lo.red + i]);
      c += static_cast<double>(sm[Lo.red + T + i]);
    }
    partials[2 * blk] = s;
    partials[2 * blk + 1] = c;
  }

  // --- backward -------------------------------------------------------------------------------

  // d zeta on Z, turned into (DGX, DGY), the adjoints of the central differences (0 outside the
  // image and, for the loss, outside P+).
  GSCNN_HD void backward_zeta(acc_t* sm, const Layout& Lo, Tile tl, int64_t k, int64_t t,
                              int64_t T) const {
    const int64_t zi0 = tl.i0 - Lo.R - 1, zj0 = tl.j0 - Lo.R - 1;
    const int64_t bi0 = zi0 - 1, bj0 = zj0 - 1;
    const acc_t s = kLoss ? static_cast<acc_t>(*scale) : acc_t(0);
    for_each_2d(Lo.ZH, Lo.ZW, t, T, [&](int64_t r, int64_t c) {
      const int64_t y = zi0 + r, x = zj0 + c;
      acc_t fx = 0, fy = 0;
      if (y >= 0 && y < H && x >= 0 && x < W) {
        const Diff d = diff(sm + Lo.B, Lo, bi0, bj0, y, x);
        const acc_t zeta = potential(d.gx, d.gy);
        acc_t dzeta = 0;
        if (kLoss) {
          if (sm[Lo.keep + r * Lo.ZW + c] != acc_t(0)) {
            const Diff dh = diff(sm + Lo.Bh, Lo, bi0, bj0, y, x);
            const acc_t zeta_hat = potential(dh.gx, dh.gy);
            if (in_band(zeta, zeta_hat, threshold)) dzeta = s * abs_grad(zeta, zeta_hat);
          }
        } else {
          dzeta = static_cast<acc_t>(grad_zeta.at(tl.n, k, y, x));
        }
        const acc_t f = potential_grad_factor(dzeta, zeta);
        fx = f * d.gx;
        fy = f * d.gy;
      }
      sm[Lo.DGX + r * Lo.ZW + c] = fx;
      sm[Lo.DGY + r * Lo.ZW + c] = fy;
    });
  }

  // dB on D = tile + R: transpose of the central differences (gather form).
  GSCNN_HD void backward_diff(acc_t* sm, const Layout& Lo, Tile tl, int64_t t, int64_t T) const {
    const int64_t di0 = tl.i0 - Lo.R, dj0 = tl.j0 - Lo.R;
    const int64_t zi0 = di0 - 1, zj0 = dj0 - 1;
    const acc_t* DGX = sm + Lo.DGX;
    const acc_t* DGY = sm + Lo.DGY;
    for_each_2d(Lo.DH, Lo.DW, t, T, [&](int64_t r, int64_t c) {
      const int64_t y = di0 + r, x = dj0 + c;
      acc_t v = 0;
      if (y >= 0 && y < H && x >= 0 && x < W) {
        const acc_t* rowx = DGX + (y - zi0) * Lo.ZW - zj0;
        const acc_t* colx = DGY + (x - zj0) - zi0 * Lo.ZW;
        v = central_difference_adjoint<acc_t>(x, W, [&](int64_t j) { return rowx[j]; }) +
            central_difference_adjoint<acc_t>(y, H, [&](int64_t i) { return colx[i * Lo.ZW]; });
      }
      sm[Lo.dB + r * Lo.DW + c] = v;
    });
  }

  // dX on tile rows x D columns: transpose of the column blur.
  GSCNN_HD void backward_blur_cols(acc_t* sm, const Layout& Lo, Tile tl, int64_t t,
                                   int64_t T) const {
    const int64_t di0 = tl.i0 - Lo.R, dj0 = tl.j0 - Lo.R;
    const int64_t R = Lo.R;
    for_each_2d(Lo.TH, Lo.DW, t, T, [&](int64_t r, int64_t c) {
      const int64_t y = tl.i0 + r, x = dj0 + c;
      acc_t v = 0;
      if (y < H && x >= 0 && x < W) {
        const acc_t* col = sm + Lo.dB + c;
        const bool edge = y == 0 || y == H - 1;
        for (int64_t yp = y - R; yp <= y + R; ++yp) {
          if (yp < 0 || yp >= H) continue;
          const acc_t w = edge ? blur_adjoint_weight(taps, y, yp, H) : taps.g[y - yp + R];
          v += w * col[(yp - di0) * Lo.DW];
        }
      }
      sm[Lo.dX + r * Lo.DW + c] = v;
    });
  }

  // dP on the tile: transpose of the row blur; written to grad_prob.
  GSCNN_HD void backward_blur_rows(const acc_t* sm, const Layout& Lo, Tile tl, int64_t k,
                                   int64_t t, int64_t T) const {
    const int64_t dj0 = tl.j0 - Lo.R;
    const int64_t R = Lo.R;
    for_each_2d(Lo.TH, Lo.TW, t, T, [&](int64_t r, int64_t c) {
      const int64_t y = tl.i0 + r, x = tl.j0 + c;
      if (y >= H || x >= W) return;
      const acc_t* row = sm + Lo.dX + r * Lo.DW - dj0;
      const bool edge = x == 0 || x == W - 1;
      acc_t v = 0;
      for (int64_t xp = x - R; xp <= x + R; ++xp) {
        if (xp < 0 || xp >= W) continue;
        const acc_t w = edge ? blur_adjoint_weight(taps, x, xp, W) : taps.g[x - xp + R];
        v += w * row[xp];
      }
      out.at(tl.n, k, y, x) = static_cast<scalar_t>(v);
    });
  }
};

}  // namespace dtl
}  // namespace gscnn
