// The CPU kernels of boundary_potential and dual_task_loss, compiled once per instruction set:
// the including file defines GSCNN_CPU_ISA (the namespace) and GSCNN_CPU_VECTOR_BYTES (for
// simd_impl.h) after including boundary_potential_kernels.h and, for the AVX builds, after
// `#pragma GCC target`.
// No #include here but simd_impl.h (ours, itself without #include): every header must come
// before the pragma (see gated_conv2d_kernels.h).
//
// The math is that of common/boundary_potential_math.h; the geometry of a tile is the GPU
// program's (regions E, X, B, Z, D of the Layout there), with the tile clipped to the image:
//   E = tile + h (h = R + 1 forward, 2R + 2 backward), loaded with clamped coordinates
//   X = E rows x (tile + h - R) columns    row blur          B = tile + h - R   column blur
//   Z = tile + h - R - 1                  zeta (forward: the tile; backward: tile + R + 1)
//   D = tile + R                          dB (backward), then dX on D columns, one row at a time
// Every pass is a loop over a buffer row with unit stride, which the compiler vectorises. Borders:
// B rows and columns outside the image are overwritten with the edge row / column, so the
// central differences need no clamping (the forward's replicate border); in the backward the
// adjoints of that replication are folded back onto the edge, and the blurs' adjoints use the
// interior weights everywhere except on the image's first and last row and column, which get the
// replicate-border weights of blur_adjoint_weight.

#if !defined(GSCNN_CPU_ISA) || !defined(GSCNN_CPU_VECTOR_BYTES)
#error "define GSCNN_CPU_ISA and GSCNN_CPU_VECTOR_BYTES before including boundary_potential_kernels_impl.h"
#endif

// The build passes -fno-math-errno (setup.py, CMakeLists.txt): the loops that take zeta's square
// root vectorise only without errno.

namespace gscnn {
namespace cpu {
namespace GSCNN_CPU_ISA {

#include "simd_impl.h"  // Simd, vload, stream_row, stream_fence (no #include of its own)

namespace {

// out[c] = sum_i w[i] * src[i * step + c] for c < n: the blurs and their adjoints. kNt > 0: the
// number of taps at compile time (accumulator in a register, taps unrolled); else nt at run time
// (tap-outer loop over the row, the same order of summation).
template <int kNt, typename acc_t>
inline void weighted_rows(acc_t* __restrict out, const acc_t* __restrict src, int64_t step,
                          const acc_t* __restrict w, int64_t nt, int64_t n) {
  if constexpr (kNt > 0) {
    acc_t wr[kNt];
    for (int i = 0; i < kNt; ++i) wr[i] = w[i];
    for (int64_t c = 0; c < n; ++c) {
      acc_t s = 0;
      for (int i = 0; i < kNt; ++i) s += wr[i] * src[i * step + c];
      out[c] = s;
    }
  } else {
    for (int64_t c = 0; c < n; ++c) out[c] = acc_t(0);
    for (int64_t i = 0; i < nt; ++i) {
      const acc_t wi = w[i];
      const acc_t* __restrict s = src + i * step;
      for (int64_t c = 0; c < n; ++c) out[c] += wi * s[c];
    }
  }
}

// One row of a strided tensor, columns x0 .. x0 + n - 1 clamped to [0, W): the replicate border.
template <typename T, typename D>
inline void load_clamped_row(D* __restrict dst, const T* row, int64_t sW, int64_t x0, int64_t n,
                             int64_t W) {
  const int64_t lo = std::clamp<int64_t>(-x0, 0, n);          // dst[c < lo]: column 0
  const int64_t hi = std::clamp<int64_t>(W - x0, lo, n);      // dst[lo <= c < hi]: in the image
  const D first = static_cast<D>(row[0]), last = static_cast<D>(row[(W - 1) * sW]);
  for (int64_t c = 0; c < lo; ++c) dst[c] = first;
  const T* src = row + (x0 + lo) * sW;
  if (sW == 1) {
    for (int64_t c = lo; c < hi; ++c) dst[c] = static_cast<D>(src[c - lo]);
  } else {
    for (int64_t c = lo; c < hi; ++c) dst[c] = static_cast<D>(src[(c - lo) * sW]);
  }
  for (int64_t c = hi; c < n; ++c) dst[c] = last;
}

// Sum of row[0 .. n) in a fixed order (lane-blocked, so that it vectorises without reassociating
// anything at run time): deterministic for a given build.
template <typename acc_t>
inline acc_t row_sum(const acc_t* __restrict row, int64_t n) {
  constexpr int kLanes = 16;
  acc_t lane[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] += row[c + l];
  for (int l = 0; c < n; ++c, ++l) lane[l] += row[c];
  acc_t s = 0;
  for (int l = 0; l < kLanes; ++l) s += lane[l];
  return s;
}

// Min and max of the rows handed to add() (explicit vectors for unit-stride rows of acc_t, else
// scalar over 16 rotating lanes); finite() is false if any value was a NaN or an infinity (then
// min and max are meaningless).
template <typename acc_t>
struct RowRange {
  static constexpr int kLanes = 16;
  acc_t lo[kLanes], hi[kLanes], nonfinite[kLanes];
  RowRange() {
    for (int l = 0; l < kLanes; ++l) {
      lo[l] = std::numeric_limits<acc_t>::infinity();
      hi[l] = -lo[l];
      nonfinite[l] = 0;
    }
  }
  // n values row[0], row[s], ... (any scalar type). A unit-stride row of acc_t goes through
  // explicit vectors (lanes 0 .. VL - 1): written as lane loops, GCC left the selects scalar (a
  // compare and a conditional move per value, ~half the loss's forward on scene-like labels,
  // where most classes are absent from a tile and only this range is taken).
  template <typename T>
  void add(const T* __restrict row, int64_t s, int64_t n) {
    int64_t c = 0;
    if constexpr (std::is_same_v<T, acc_t>) {
      using V = typename Simd<acc_t>::type;
      constexpr int64_t VL = Simd<acc_t>::lanes;
      static_assert(VL <= kLanes, "RowRange: fewer lanes than a vector");
      if (s == 1 && n >= VL) {
        V vlo = vload(lo), vhi = vload(hi), vnf = vload(nonfinite);
        for (; c + VL <= n; c += VL) {
          const V x = vload(row + c);
          vlo = x < vlo ? x : vlo;
          vhi = x > vhi ? x : vhi;
          vnf += x - x;  // NaN for a NaN or an infinity
        }
        std::memcpy(lo, &vlo, sizeof(V));
        std::memcpy(hi, &vhi, sizeof(V));
        std::memcpy(nonfinite, &vnf, sizeof(V));
      }
    }
    for (int l = 0; c < n; ++c, l = (l + 1) % kLanes) {
      const acc_t v = static_cast<acc_t>(row[c * s]);
      lo[l] = v < lo[l] ? v : lo[l];
      hi[l] = v > hi[l] ? v : hi[l];
      nonfinite[l] += v - v;
    }
  }
  acc_t min() const { return *std::min_element(lo, lo + kLanes); }
  acc_t max() const { return *std::max_element(hi, hi + kLanes); }
  bool finite() const {
    acc_t nf = 0;
    for (int l = 0; l < kLanes; ++l) nf += nonfinite[l];
    return nf == acc_t(0);
  }
};

// The adjoint of zeta = |grad B| / sqrt(2) at one pixel: d zeta / d grad B = grad B / (2 zeta), so
// (fx, fy) = (gx, gy) * f with f = dz / (2 zeta), 0 where zeta = 0 (its subgradient). The
// denominator is made safe before the select so that the row loops have no branch to keep them
// from vectorising; the value is that of the plain division.
template <typename acc_t>
inline acc_t zeta_adjoint_factor(acc_t zeta, acc_t dz) {
  const acc_t safe = zeta > acc_t(0) ? zeta : acc_t(1);
  return zeta > acc_t(0) ? dz / (acc_t(2) * safe) : acc_t(0);
}

template <typename Program>
struct TileKernel {
  using scalar_t = typename Program::scalar_type;
  using acc_t = typename Program::acc_t;
  static constexpr bool kLoss = Program::is_loss, kBackward = Program::is_backward;

  const Program& p;
  int64_t R, nt, h;
  acc_t g[2 * dtl::kMaxRadius + 1];

  // Per-core buffers (row-major, the row strides below). Whole regions: X, B (and their one-hot
  // twins Xh, Bh), FX, FY, dB. Single rows: in (a row of P or of the one-hot labels, blurred
  // along the row as soon as it is made), dx (a row of the column blur's adjoint, blurred back
  // along the row at once), tmp, tmp2, hat (scratch): each region pass that is not written whole
  // is a trip through L2 saved (the backward's ten regions of 48 x 272 floats did not fit in it).
  std::vector<acc_t> X, B, Xh, Bh, FX, FY, dB, in, dx, tmp, tmp2, hat;
  // Rows of zeros (1) in the blur's middle region and in its output, by row (blur): the one-hot
  // labels' rows without the class, and what they blur to (see blur).
  std::vector<uint8_t> mid_zero, out_zero;
  std::vector<int32_t> lab;       // E: class, or -1 (ignore or bad)
  std::vector<acc_t> keep;        // Z: 1 where the loss may count the pixel, else 0 (acc_t, not
                                  // uint8: the row loops that test it then vectorise)
  std::vector<uint8_t> present;  // present[k + 1]: class k in E (present[0] takes the -1s)
  std::vector<uint8_t> ignore_rows;  // E rows x Z columns: an ignore label in the row window

  explicit TileKernel(const Program& prog) : p(prog) {
    R = p.radius();
    nt = 2 * R + 1;
    h = kBackward ? 2 * R + 2 : R + 1;
    for (int64_t i = 0; i < nt; ++i) g[i] = p.taps.g[i];
    const int64_t EH = p.TH + 2 * h, EW = p.TW + 2 * h;
    X.resize(EH * EW);
    B.resize(EH * EW);
    in.resize(EW);
    mid_zero.resize(EH);
    out_zero.resize(EH);
    tmp.resize(EW);
    tmp2.resize(EW);
    if (kLoss) {
      Xh.resize(EH * EW);
      Bh.resize(EH * EW);
      lab.resize(EH * EW);
      keep.resize(EH * EW);
      ignore_rows.resize(EH * EW);
      present.resize(p.K + 1);
    }
    if (kBackward) {
      FX.resize(EH * EW);
      FY.resize(EH * EW);
      dB.resize(EH * EW);
      dx.resize(EW);
      hat.resize(3 * EW);
    }
  }

  // Separable blur of the EH rows (EW values each) that make_row(r, buffer) returns, made in the
  // row buffer `in` or found in place: mid (EH x XW) = each row blurred as soon as it is made, out
  // (BH x XW) = the columns of mid blurred. make_row returns nullptr for a row of zeros (a row of
  // the one-hot labels without the class: most of them where a class covers a small part of a
  // tile): its blur is a row of +0 (the weighted sum of +0 is +0), written as such without the
  // taps, and so is an output row whose 2R + 1 rows of mid are all zero; out_zero[r] records which
  // (the same values bit for bit as blurring them).
  template <int kNt, typename MakeRow>
  void blur(MakeRow&& make_row, acc_t* mid, acc_t* out, int64_t EH, int64_t XW, int64_t ld) {
    for (int64_t r = 0; r < EH; ++r) {
      const acc_t* row = make_row(r, in.data());
      mid_zero[r] = row == nullptr;
      if (mid_zero[r]) {
        std::fill_n(mid + r * ld, XW, acc_t(0));
      } else {
        weighted_rows<kNt>(mid + r * ld, row, 1, g, nt, XW);
      }
    }
    int64_t zeros = 0;  // zero rows of mid among r .. r + 2R - 1 (then r + 2R joins)
    for (int64_t i = 0; i < 2 * R && i < EH; ++i) zeros += mid_zero[i];
    for (int64_t r = 0; r + 2 * R < EH; ++r) {
      zeros += mid_zero[r + 2 * R];
      out_zero[r] = zeros == nt;
      if (out_zero[r]) {
        std::fill_n(out + r * ld, XW, acc_t(0));
      } else {
        weighted_rows<kNt>(out + r * ld, mid + r * ld, ld, g, nt, XW);
      }
      zeros -= mid_zero[r];
    }
  }

  // Whether the three rows of a blurred map around Z row r are zero: then so are its central
  // differences and zeta there (sqrt(+0) = +0).
  bool zero_around(int64_t r) const { return out_zero[r] && out_zero[r + 1] && out_zero[r + 2]; }

  // B holds BH x XW values with origin (by0, bx0): rows / columns outside the image become copies
  // of the image's edge row / column (the replicate border of the central differences).
  void replicate_border(acc_t* Bb, int64_t BH, int64_t XW, int64_t ld, int64_t by0,
                        int64_t bx0) const {
    const int64_t H = p.H, W = p.W;
    const int64_t cl = std::clamp<int64_t>(-bx0, 0, XW), ch = std::clamp<int64_t>(W - bx0, cl, XW);
    for (int64_t r = 0; r < BH; ++r) {
      const int64_t y = by0 + r;
      if (y < 0 || y >= H) continue;
      acc_t* row = Bb + r * ld;
      for (int64_t c = 0; c < cl; ++c) row[c] = row[cl];
      for (int64_t c = ch; c < XW; ++c) row[c] = row[ch - 1];
    }
    const int64_t rl = std::clamp<int64_t>(-by0, 0, BH), rh = std::clamp<int64_t>(H - by0, rl, BH);
    for (int64_t r = 0; r < rl; ++r) std::copy_n(Bb + rl * ld, XW, Bb + r * ld);
    for (int64_t r = rh; r < BH; ++r) std::copy_n(Bb + (rh - 1) * ld, XW, Bb + r * ld);
  }
  // The same for the zero-row flags of the last blur (the copied rows are zero where their
  // originals are).
  void replicate_zero_rows(int64_t BH, int64_t by0) {
    const int64_t rl = std::clamp<int64_t>(-by0, 0, BH);
    const int64_t rh = std::clamp<int64_t>(p.H - by0, rl, BH);
    for (int64_t r = 0; r < rl; ++r) out_zero[r] = out_zero[rl];
    for (int64_t r = rh; r < BH; ++r) out_zero[r] = out_zero[rh - 1];
  }

  // Labels of E, their bad values recorded; the classes present; the keep mask on Z (no ignore
  // pixel within Chebyshev distance R + 1, as a separable box test); returns the bad count.
  int64_t load_labels(int64_t n, int64_t ey0, int64_t ex0, int64_t EH, int64_t EW, int64_t ZH,
                      int64_t ZW, int64_t zy0, int64_t zx0, int64_t ld) {
    const int64_t H = p.H, W = p.W, K = p.K;
    std::fill(present.begin(), present.end(), uint8_t(0));
    int64_t bad = 0;
    bool any_ignore = false;
    const int64_t sW = p.target.sW;
    // class(v): v if it is a class, else -1. Columns outside the image repeat the edge label (the
    // replicate border), those inside are converted with unit stride where the labels allow:
    // branch-free, so vectorised; the rare rows with a -1 are then looked at one label at a time.
    auto class_of = [K](int64_t v) {
      return static_cast<uint64_t>(v) < static_cast<uint64_t>(K) ? static_cast<int32_t>(v)
                                                                  : int32_t(-1);
    };
    const int64_t lo = std::clamp<int64_t>(-ex0, 0, EW), hi = std::clamp<int64_t>(W - ex0, lo, EW);
    for (int64_t r = 0; r < EH; ++r) {
      const int64_t y = std::clamp<int64_t>(ey0 + r, 0, H - 1);
      const int64_t* t = p.target.data + n * p.target.sN + y * p.target.sH;
      int32_t* __restrict row = lab.data() + r * ld;
      const int32_t first = class_of(t[0]), last = class_of(t[(W - 1) * sW]);
      for (int64_t c = 0; c < lo; ++c) row[c] = first;
      const int64_t* __restrict src = t + (ex0 + lo) * sW;
      if (sW == 1) {
        for (int64_t c = lo; c < hi; ++c) row[c] = class_of(src[c - lo]);
      } else {
        for (int64_t c = lo; c < hi; ++c) row[c] = class_of(src[(c - lo) * sW]);
      }
      for (int64_t c = hi; c < EW; ++c) row[c] = last;
      int32_t any = 0;
      for (int64_t c = 0; c < EW; ++c) any |= row[c];  // negative iff a -1 is in the row
      if (any < 0) {
        any_ignore = true;
        for (int64_t c = 0; c < EW; ++c) {
          if (row[c] >= 0) continue;
          const int64_t x = std::clamp<int64_t>(ex0 + c, 0, W - 1);
          const int64_t v = p.target.at(n, y, x);
          if (v != p.ignore_index) {
            labels::record(p.status, n, y, x, v);
            ++bad;
          }
        }
      }
      for (int64_t c = 0; c < EW; ++c) present[row[c] + 1] = 1;
    }
    const int64_t d = 2 * R + 3;
    for (int64_t r = 0; r < ZH; ++r) {
      const int64_t y = zy0 + r;
      acc_t* k = keep.data() + r * ld;
      for (int64_t c = 0; c < ZW; ++c) {
        const int64_t x = zx0 + c;
        k[c] = y >= 0 && y < H && x >= 0 && x < W ? acc_t(1) : acc_t(0);
      }
    }
    if (!any_ignore) return bad;
    for (int64_t r = 0; r < EH; ++r) {  // ignore_rows(r, c): an ignore label in E row r, cols c .. c + d
      const int32_t* row = lab.data() + r * ld;
      uint8_t* o = ignore_rows.data() + r * ld;
      for (int64_t c = 0; c < ZW; ++c) {
        uint8_t any = 0;
        for (int64_t b = 0; b < d; ++b) any |= row[c + b] < 0;
        o[c] = any;
      }
    }
    for (int64_t r = 0; r < ZH; ++r) {
      acc_t* k = keep.data() + r * ld;
      for (int64_t a = 0; a < d; ++a) {
        const uint8_t* o = ignore_rows.data() + (r + a) * ld;
        for (int64_t c = 0; c < ZW; ++c) k[c] = o[c] ? acc_t(0) : k[c];
      }
    }
    return bad;
  }

  // --- one tile ---------------------------------------------------------------------------------

  // zeta at Z row r, columns [c0, c1), of the blurred map Bb (origin: Z origin - 1).
  static inline void zeta_row(const acc_t* __restrict Bb, int64_t ld, int64_t r, int64_t c0,
                              int64_t c1, acc_t* __restrict gx, acc_t* __restrict gy,
                              acc_t* __restrict zeta) {
    const acc_t* up = Bb + r * ld + 1;
    const acc_t* mid = Bb + (r + 1) * ld;
    const acc_t* down = Bb + (r + 2) * ld + 1;
    for (int64_t c = c0; c < c1; ++c) {
      const acc_t x = acc_t(0.5) * (mid[c + 2] - mid[c]);
      const acc_t y = acc_t(0.5) * (down[c] - up[c]);
      gx[c] = x;
      gy[c] = y;
      zeta[c] = std::sqrt(x * x + y * y) * acc_t(0.70710678118654752440);
    }
  }

  // The loss's terms on one row of the tile: a = |zeta - zeta_hat| and m = 1 on P+ (a kept pixel
  // where zeta or zeta_hat exceeds the threshold), else 0. Selects, no branches: vectorised.
  static inline void loss_row(const acc_t* __restrict keep, const acc_t* __restrict zeta,
                              const acc_t* __restrict zh, acc_t thr, int64_t n,
                              acc_t* __restrict a, acc_t* __restrict m) {
    for (int64_t c = 0; c < n; ++c) {
      const bool in = (keep[c] > acc_t(0)) & ((zeta[c] > thr) | (zh[c] > thr));
      const acc_t d = zeta[c] > zh[c] ? zeta[c] - zh[c] : zh[c] - zeta[c];
      a[c] = in ? d : acc_t(0);
      m[c] = in ? acc_t(1) : acc_t(0);
    }
  }

  // (fx, fy) *= the adjoint factor of zeta on Z row columns [c0, c1), for the loss: dz = scale *
  // sign(zeta - zeta_hat) on P+, else 0; kHat = false: zeta_hat = 0 (no pixel of the class).
  template <bool kHat>
  static inline void zeta_adjoint_loss_row(const acc_t* __restrict keep,
                                           const acc_t* __restrict zeta,
                                           const acc_t* __restrict zh, acc_t thr, acc_t scale,
                                           int64_t c0, int64_t c1, acc_t* __restrict fx,
                                           acc_t* __restrict fy) {
    for (int64_t c = c0; c < c1; ++c) {
      const acc_t hat = kHat ? zh[c] : acc_t(0);
      const bool in = (keep[c] > acc_t(0)) & ((zeta[c] > thr) | (hat > thr));
      const acc_t dz = in ? scale * dtl::abs_grad(zeta[c], hat) : acc_t(0);
      const acc_t f = zeta_adjoint_factor(zeta[c], dz);
      fx[c] *= f;
      fy[c] *= f;
    }
  }

  // The same for the potential, dz the upstream gradient.
  static inline void zeta_adjoint_row(const acc_t* __restrict zeta, const acc_t* __restrict dz,
                                      int64_t c0, int64_t c1, acc_t* __restrict fx,
                                      acc_t* __restrict fy) {
    for (int64_t c = c0; c < c1; ++c) {
      const acc_t f = zeta_adjoint_factor(zeta[c], dz[c]);
      fx[c] *= f;
      fy[c] *= f;
    }
  }

  template <int kNt>
  void run_tile(int64_t tile) {
    const auto tl = p.tile_of(tile);
    const int64_t n = tl.n, i0 = tl.i0, j0 = tl.j0, H = p.H, W = p.W;
    const int64_t th = std::min(p.TH, H - i0), tw = std::min(p.TW, W - j0);
    const int64_t ld = p.TW + 2 * h;  // row stride of every buffer
    const int64_t EH = th + 2 * h, EW = tw + 2 * h, XW = EW - 2 * R, BH = EH - 2 * R;
    const int64_t ZH = BH - 2, ZW = XW - 2;
    const int64_t ey0 = i0 - h, ex0 = j0 - h;   // E origin
    const int64_t by0 = ey0 + R, bx0 = ex0 + R;  // B origin
    const int64_t zy0 = by0 + 1, zx0 = bx0 + 1;  // Z origin
    const acc_t thr = p.threshold;
    int64_t bad = 0;
    if (kLoss) bad = load_labels(n, ey0, ex0, EH, EW, ZH, ZW, zy0, zx0, ld);
    double sum = 0, count = 0;
    const acc_t scale = kLoss && kBackward ? static_cast<acc_t>(*p.scale) : acc_t(0);
    // Z columns [zc0, zc1) are in the image.
    const int64_t zc0 = std::clamp<int64_t>(-zx0, 0, ZW), zc1 = std::clamp<int64_t>(W - zx0, zc0, ZW);

    for (int64_t k = 0; k < p.K; ++k) {
      // Row r of P over E (the replicate border's clamped coordinates).
      const scalar_t* base = p.prob.data + n * p.prob.sN + k * p.prob.sK;
      // Rows wholly inside the image's columns of a unit-stride tensor of acc_t are read where
      // they are (the copies of every row were ~20 % of the loss's samples in `perf` on
      // scene-like labels); the rest are copied into `row` with the border's clamping.
      const bool in_place = std::is_same_v<scalar_t, acc_t> && p.prob.sW == 1 && ex0 >= 0 &&
                            ex0 + EW <= W;
      auto prob_row = [&](int64_t r, acc_t* row) -> const acc_t* {
        const scalar_t* src = base + std::clamp<int64_t>(ey0 + r, 0, H - 1) * p.prob.sH;
        if constexpr (std::is_same_v<scalar_t, acc_t>) {
          if (in_place) return src + ex0;
        }
        load_clamped_row(row, src, p.prob.sW, ex0, EW, W);
        return row;
      };
      const bool has_class = kLoss && present[k + 1];
      if (kLoss && !has_class) {
        // Exact skip: zeta_hat = 0 on the whole tile, and zeta <= (max - min) / 2 (a blur is an
        // average, a central difference half a difference of two averages, zeta <= max(|gx|,
        // |gy|)), so if that bound is <= threshold no pixel of the tile is in P+. The margin
        // covers the rounding of the blurs, differences and square root. (The range is taken
        // only here: a class present in the tile is never skipped.)
        // Over E's rows and columns in the image, read in place: the replicate border's copies
        // of the edge values change neither the range nor its finiteness.
        RowRange<acc_t> range;
        const int64_t y0 = std::max<int64_t>(ey0, 0), y1 = std::min<int64_t>(ey0 + EH, H);
        const int64_t x0 = std::max<int64_t>(ex0, 0), x1 = std::min<int64_t>(ex0 + EW, W);
        for (int64_t y = y0; y < y1; ++y)
          range.add(base + y * p.prob.sH + x0 * p.prob.sW, p.prob.sW, x1 - x0);
        const acc_t mn = range.min(), mx = range.max();
        const acc_t eps = std::numeric_limits<acc_t>::epsilon();
        const acc_t margin = acc_t(8 * R + 16) * eps * (std::max(std::abs(mn), std::abs(mx)) +
                                                        std::abs(thr));
        if (range.finite() && acc_t(0.5) * (mx - mn) + margin <= thr) {
          if (kBackward) {
            std::fill_n(tmp.data(), tw, acc_t(0));
            for (int64_t r = 0; r < th; ++r) write_out_row(n, k, i0 + r, j0, tmp.data(), tw);
          }
          continue;
        }
      }
      blur<kNt>(prob_row, X.data(), B.data(), EH, XW, ld);
      replicate_border(B.data(), BH, XW, ld, by0, bx0);
      if (has_class) {
        const int32_t kk = static_cast<int32_t>(k);
        auto one_hot_row = [&](int64_t r, acc_t* __restrict o) -> const acc_t* {
          const int32_t* __restrict l = lab.data() + r * ld;
          int32_t any = 0;
          for (int64_t c = 0; c < EW; ++c) {
            const int32_t on = l[c] == kk;
            o[c] = on ? acc_t(1) : acc_t(0);
            any |= on;
          }
          return any != 0 ? o : nullptr;
        };
        blur<kNt>(one_hot_row, Xh.data(), Bh.data(), EH, XW, ld);
        replicate_border(Bh.data(), BH, XW, ld, by0, bx0);
        replicate_zero_rows(BH, by0);
      }

      if (!kBackward) {
        // Z is the tile (ZH = th, ZW = tw).
        acc_t* gx = FXrow();
        acc_t* gy = gx + ld;
        acc_t* zeta = gy + ld;
        for (int64_t r = 0; r < th; ++r) {
          zeta_row(B.data(), ld, r, 0, tw, gx, gy, zeta);
          if (!kLoss) {
            write_out_row(n, k, i0 + r, j0, zeta, tw);
            continue;
          }
          acc_t* zh = tmp2.data();
          if (has_class && !zero_around(r)) {
            zeta_row(Bh.data(), ld, r, 0, tw, gx, gy, zh);
          } else {  // no pixel of the class in the tile's E, or none near this row
            std::fill_n(zh, tw, acc_t(0));
          }
          acc_t* a = tmp.data();
          acc_t* m = gx;  // 1 on P+, else 0 (gx, gy are no longer needed)
          loss_row(keep.data() + r * ld, zeta, zh, thr, tw, a, m);
          sum += static_cast<double>(row_sum(a, tw));
          count += static_cast<double>(row_sum(m, tw));
        }
        continue;
      }

      // Backward. (FX, FY) on Z: the adjoint of zeta, times the central differences.
      const scalar_t* gz_base =
          kLoss ? nullptr : p.grad_zeta.data + n * p.grad_zeta.sN + k * p.grad_zeta.sK;
      for (int64_t r = 0; r < ZH; ++r) {
        acc_t* fx = FX.data() + r * ld;
        acc_t* fy = FY.data() + r * ld;
        const int64_t y = zy0 + r;
        std::fill_n(fx, ZW, acc_t(0));
        std::fill_n(fy, ZW, acc_t(0));
        if (y < 0 || y >= H || zc0 == zc1) continue;
        acc_t* zeta = tmp.data();
        zeta_row(B.data(), ld, r, zc0, zc1, fx, fy, zeta);
        if (kLoss) {
          const acc_t* kp = keep.data() + r * ld;
          if (has_class && !zero_around(r)) {
            acc_t* zh = hat.data();
            acc_t* hx = zh + EW;
            acc_t* hy = hx + EW;
            zeta_row(Bh.data(), ld, r, zc0, zc1, hx, hy, zh);
            zeta_adjoint_loss_row<true>(kp, zeta, zh, thr, scale, zc0, zc1, fx, fy);
          } else {  // zeta_hat = 0 on this row (as in the forward)
            zeta_adjoint_loss_row<false>(kp, zeta, nullptr, thr, scale, zc0, zc1, fx, fy);
          }
        } else {
          acc_t* dz = tmp2.data();
          load_clamped_row(dz + zc0, gz_base + y * p.grad_zeta.sH, p.grad_zeta.sW, zx0 + zc0,
                           zc1 - zc0, W);
          zeta_adjoint_row(zeta, dz, zc0, zc1, fx, fy);
        }
      }
      // dB on D = Z shrunk by 1 (origin dy0, dx0): the transposed central differences, with the
      // replicate border's adjoint folded onto the image's edge; 0 outside the image.
      const int64_t DH = th + 2 * R, DW = tw + 2 * R, dy0 = zy0 + 1, dx0 = zx0 + 1;
      const int64_t dc0 = std::clamp<int64_t>(-dx0, 0, DW), dc1 = std::clamp<int64_t>(W - dx0, dc0, DW);
      for (int64_t r = 0; r < DH; ++r) {
        acc_t* d = dB.data() + r * ld;
        const int64_t y = dy0 + r;
        std::fill_n(d, DW, acc_t(0));
        if (y < 0 || y >= H) continue;
        const acc_t* fx = FX.data() + (r + 1) * ld;
        const acc_t* fyu = FY.data() + r * ld + 1;
        const acc_t* fy = FY.data() + (r + 1) * ld + 1;
        const acc_t* fyd = FY.data() + (r + 2) * ld + 1;
        for (int64_t c = dc0; c < dc1; ++c)
          d[c] = acc_t(0.5) * (fx[c] - fx[c + 2]) + acc_t(0.5) * (fyu[c] - fyd[c]);
        if (y == 0)
          for (int64_t c = dc0; c < dc1; ++c) d[c] -= acc_t(0.5) * fy[c];
        if (y == H - 1)
          for (int64_t c = dc0; c < dc1; ++c) d[c] += acc_t(0.5) * fy[c];
        if (dx0 + dc0 == 0) d[dc0] -= acc_t(0.5) * fx[dc0 + 1];
        if (dx0 + dc1 == W) d[dc1 - 1] += acc_t(0.5) * fx[dc1];
      }
      // Row by row: a row of dX on D columns (transposed column blur), then that row of dP
      // (transposed row blur); the image's first and last row / column take the replicate
      // border's weights.
      acc_t w[2 * dtl::kMaxRadius + 1];
      auto edge_weights = [&](int64_t at, int64_t len) {
        for (int64_t i = 0; i < nt; ++i) {
          const int64_t src = at - R + i;
          w[i] = src < 0 || src >= len ? acc_t(0) : dtl::blur_adjoint_weight(p.taps, at, src, len);
        }
      };
      for (int64_t r = 0; r < th; ++r) {
        const int64_t y = i0 + r;
        acc_t* d = dx.data();
        if (y == 0 || y == H - 1) {
          edge_weights(y, H);
          weighted_rows<0>(d, dB.data() + r * ld, ld, w, nt, DW);
        } else {
          weighted_rows<kNt>(d, dB.data() + r * ld, ld, g, nt, DW);
        }
        acc_t* v = tmp.data();
        weighted_rows<kNt>(v, d, 1, g, nt, tw);
        if (j0 == 0) {
          edge_weights(0, W);
          weighted_rows<0>(v, d, 1, w, nt, 1);
        }
        if (j0 + tw == W) {
          edge_weights(W - 1, W);
          weighted_rows<0>(v + tw - 1, d + tw - 1, 1, w, nt, 1);
        }
        write_out_row(n, k, i0 + r, j0, v, tw);
      }
    }
    if (kLoss && !kBackward) {
      p.partials[3 * tile] = sum;
      p.partials[3 * tile + 1] = count;
      p.partials[3 * tile + 2] = static_cast<double>(bad);
    }
  }

  // Output row (n, k, y), columns x0 .. x0 + len - 1 = v[0 .. len): streamed where unit-stride
  // (stream_row; run_pipeline fences), else one strided store per value.
  void write_out_row(int64_t n, int64_t k, int64_t y, int64_t x0, const acc_t* v, int64_t len) {
    scalar_t* out = &p.out.at(n, k, y, x0);
    if (p.out.sW == 1) {
      stream_row(out, v, len);
    } else {
      for (int64_t c = 0; c < len; ++c) out[c * p.out.sW] = static_cast<scalar_t>(v[c]);
    }
  }

  // Three rows of scratch for the forward's (gx, gy, zeta): the backward's FX buffer, or X's
  // spare space after the blurs (X is rewritten by the next class's blur).
  acc_t* FXrow() { return kBackward ? FX.data() : X.data(); }
};

}  // namespace

template <typename Program>
void run_pipeline(const Program& program) {
  const int64_t tiles = program.num_tiles();
  constexpr int kNt = Program::kRadius > 0 ? 2 * Program::kRadius + 1 : 0;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    TileKernel<Program> kernel(program);
    for (int64_t tile = begin; tile < end; ++tile) kernel.template run_tile<kNt>(tile);
    stream_fence();
  });
}

#define GSCNN_INSTANTIATE_PIPELINE(T, kLoss, kBackward, kR)                      \
  template void run_pipeline<dtl::Pipeline<T, kLoss, kBackward, kR>>(            \
      const dtl::Pipeline<T, kLoss, kBackward, kR>&);
GSCNN_FOR_EACH_PIPELINE(GSCNN_INSTANTIATE_PIPELINE)
#undef GSCNN_INSTANTIATE_PIPELINE

}  // namespace GSCNN_CPU_ISA
}  // namespace cpu
}  // namespace gscnn
