#pragma once
// The block program of the boundary_potential and dual_task_loss kernels (common/exec.h), forward
// and backward: the tiled stencil pipeline of common/boundary_potential_math.h, which the CUDA
// kernels and the emulated GPU of the tests run. The CPU kernels (cpu/boundary_potential_kernels.h)
// compute the same tiles from the same struct (views, taps, tile shape) with code for a CPU core.

#include <ATen/OpMathType.h>

#include <cstdint>

#include "boundary_potential_math.h"
#include "exec.h"
#include "label_errors.h"
#include "vector_access.h"

namespace gscnn {
namespace dtl {

// Per-thread state of the loss (registers on the GPU): the thread's share of sum |zeta - zeta_hat|
// and |P+| over the tile (forward), the bad labels it met, whether its part of the halo rules
// out skipping the current class, and the classes present in the tile's halo (a bit mask, the
// same in every thread once ORed over the block: see kClassGroups).
template <typename acc_t>
struct LossState {
  acc_t sum, count, bad;
  bool need;
  uint32_t lo, hi;  // classes 0..31, 32..63
  GSCNN_HD bool present(int64_t k) const {
    return k >= kMaskClasses || (((k < 32 ? lo >> k : hi >> (k - 32)) & 1u) != 0);
  }
};

// One kernel of the family: kLoss (dual-task loss) or not (boundary potential), kBackward or not.
// Every phase takes the block's buffer `sm` (Ptr: a pointer, or the emulator's recording
// pointer), the block's tile (n, i0, j0), and (t, T).
// kR > 0: the Gaussian radius as a compile-time constant (the paper's sigma = 1 gives R = 3), so
// that every loop over the taps unrolls and the taps live in registers, not in indexed parameter
// (constant-bank) loads; kR = 0: the radius of `taps`, any sigma.
template <typename scalar_t, bool kLoss, bool kBackward, int kR = 0>
struct Pipeline {
  using acc_t = at::opmath_type<scalar_t>;
  using scalar_type = scalar_t;
  static constexpr int kMaxThreads = 256;
  static constexpr bool is_loss = kLoss, is_backward = kBackward;
  static constexpr int kRadius = kR;  // 0: the radius of `taps`
  // kR > 0: the row and column blurs work on groups of four consecutive values of a buffer row
  // (vector loads and stores of shared memory: per four outputs of the row blur ceil((4 + 2R) / 4)
  // loads instead of 4 (2R + 1), of the column blur 2R + 1 instead of 4 (2R + 1)); the E buffers
  // then hold padding columns past EW (0 and label -1), which only padding outputs read.
  static constexpr bool kVector = kR > 0;
  static constexpr int kColumnRows = 2;  // rows per thread in the column blur
  // Blocks per SM the registers must allow (launch bounds; at most 64 / 128 registers): the
  // forward's shared buffers allow five 256-thread blocks per SM at 32 x 32 tiles, the
  // backward's two.
  static constexpr int kMinBlocks = kBackward ? 2 : 4;
  static constexpr bool kGlobalScratch = true;  // large problems: buffers in global memory
  View4<const scalar_t> prob;
  Labels target;             // kLoss
  View4<scalar_t> out;       // zeta (potential forward) or grad_prob (backward)
  View4<const scalar_t> grad_zeta;  // potential backward
  const double* scale;       // loss backward: grad_loss / max(|P+|, 1), one value on the device
  double* partials;          // loss forward: (sum |zeta - zeta_hat|, |P+|, bad labels) per tile
  uint64_t* status;          // loss: where bad labels are recorded (common/label_errors.h)
  int64_t N, K, H, W, TH, TW, tiles_h, tiles_w;
  int64_t ignore_index;
  acc_t threshold;
  bool conflict_free;  // the buffers' conflict-free row strides (Layout), or the compact ones
  Taps<acc_t> taps;

  GSCNN_HD int64_t num_tiles() const { return N * tiles_h * tiles_w; }
  GSCNN_HD int radius() const {
    if constexpr (kR > 0) {
      return kR;
    } else {
      return taps.R;
    }
  }
  GSCNN_HD Layout layout(int64_t T) const {
    return Layout(TH, TW, radius(), kLoss, kBackward, T, conflict_free);
  }

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

  // Labels of E (clamped) as acc_t: the class, or -1 at ignore pixels and at bad labels (neither
  // a class index nor ignore_index), which are recorded in `status` (the first one of the image
  // in (n, y, x) order wins, whatever the schedule) and counted in the thread's `bad`. The
  // classes this thread met go to its slot of the class masks (all present beyond kMaskClasses).
  template <typename Ptr, typename UPtr>
  GSCNN_HD void load_labels(Ptr sm, UPtr smu, const Layout& Lo, Tile tl, int64_t t, int64_t T,
                            acc_t& bad) const {
    const Ptr Lb = sm + Lo.L;
    const int64_t oi = tl.i0 - Lo.h, oj = tl.j0 - Lo.h;
    const Span ys(oi, H, Lo.EH), xs(oj, W, Lo.EW);
    const int64_t* plane = target.plane(tl.n);
    uint32_t lo = K > kMaskClasses ? ~0u : 0u, hi = lo;
    with_plane_offsets(H, W, target.sH, target.sW, oi, oj, [&](auto po) {
      using I = decltype(po.sH);
      for_each_2d(Lo.EH, kVector ? 4 * Lo.EG : Lo.EW, t, T, [&](int r, int c) {
        if (c >= Lo.EW) {  // padding
          Lb[r * Lo.EWs + c] = acc_t(-1);
          return;
        }
        const I i = po.i0 + ys.clamp(r), j = po.j0 + xs.clamp(c);  // clamped: the replicate border
        const int64_t y = plane[i * po.sH + j * po.sW];
        const bool valid = y >= 0 && y < K;
        if (!valid && y != ignore_index) {
          labels::record(status, tl.n, i, j, y);
          bad += acc_t(1);
        }
        if (valid && y < 32) lo |= 1u << y;
        if (valid && y >= 32 && y < kMaskClasses) hi |= 1u << (y - 32);
        Lb[r * Lo.EWs + c] = valid ? static_cast<acc_t>(y) : acc_t(-1);
      });
    });
    const UPtr m = smu + class_words(Lo) + 2 * t;
    m[0] = lo;
    m[1] = hi;
  }

  // Where the class masks start, in 32-bit words: T per-thread masks, then kClassGroups.
  GSCNN_HD int64_t class_words(const Layout& Lo) const {
    return Lo.cls * static_cast<int64_t>(sizeof(acc_t) / sizeof(uint32_t));
  }
  // The first step of ORing the masks: thread g < kClassGroups ORs those of threads g, g + G, ...
  template <typename UPtr>
  GSCNN_HD void group_classes(UPtr smu, const Layout& Lo, int64_t t, int64_t T) const {
    const int64_t G = T < kClassGroups ? T : kClassGroups;
    if (t >= G) return;
    const UPtr m = smu + class_words(Lo);
    uint32_t lo = 0, hi = 0;
    for (int64_t u = t; u < T; u += G) {
      lo |= m[2 * u];
      hi |= m[2 * u + 1];
    }
    m[2 * T + 2 * t] = lo;
    m[2 * T + 2 * t + 1] = hi;
  }
  // The second: every thread ORs the groups' masks into its registers.
  template <typename UPtr>
  GSCNN_HD void tile_classes(UPtr smu, const Layout& Lo, int64_t T, LossState<acc_t>& st) const {
    const int64_t G = T < kClassGroups ? T : kClassGroups;
    const UPtr m = smu + class_words(Lo) + 2 * T;
    st.lo = 0;
    st.hi = 0;
    for (int64_t g = 0; g < G; ++g) {
      st.lo |= m[2 * g];
      st.hi |= m[2 * g + 1];
    }
  }

  // keep on Z: in the image and no ignore pixel within Chebyshev distance R + 1 (E holds exactly
  // the clamped (2R + 3)^2 neighbourhood of every Z pixel; clamping only repeats image pixels of
  // that neighbourhood). Z pixel (r, c)'s window is E rows r .. r + 2R + 2, columns c .. c + 2R + 2.
  // Separable, in two phases a barrier apart: keep_rows marks each (E row, Z column) whose 2R + 3
  // labels include no ignore pixel, in the X buffer (free until the first class's row blur, a
  // barrier later); keep_mask ANDs 2R + 3 such marks down each column (2 (2R + 3) loads per pixel,
  // not (2R + 3)^2).
  template <typename Ptr>
  GSCNN_HD void keep_rows(Ptr sm, const Layout& Lo, int64_t t, int64_t T) const {
    const Ptr Lb = sm + Lo.L;
    const Ptr rows = sm + Lo.X;  // E rows x Z columns, row stride XWs
    const int d = 2 * Lo.R + 3;
    for_each_2d(Lo.EH, Lo.ZW, t, T, [&](int r, int c) {
      const Ptr l = Lb + r * Lo.EWs + c;
      bool ok = true;
      for (int b = 0; b < d; ++b) ok = ok && !(l[b] < acc_t(0));
      rows[r * Lo.XWs + c] = ok ? acc_t(1) : acc_t(0);
    });
  }
  template <typename Ptr>
  GSCNN_HD void keep_mask(Ptr sm, const Layout& Lo, Tile tl, int64_t t, int64_t T) const {
    const Ptr rows = sm + Lo.X;
    const Ptr keep = sm + Lo.keep;
    const int d = 2 * Lo.R + 3, off = Lo.h - Lo.R - 1;  // Z row zr <-> E rows zr + off...
    const int64_t zi = tl.i0 - off, zj = tl.j0 - off;
    // the padding columns too (0): the backward's vector differences read whole groups of four
    for_each_2d(Lo.ZH, kVector && kBackward ? round4(Lo.ZW) : Lo.ZW, t, T, [&](int r, int c) {
      bool ok = c < Lo.ZW && zi + r >= 0 && zi + r < H && zj + c >= 0 && zj + c < W;
      for (int a = 0; a < d && ok; ++a) ok = rows[(r + a) * Lo.XWs + c] != acc_t(0);
      keep[r * Lo.ZWs + c] = ok ? acc_t(1) : acc_t(0);
    });
  }

  // The loss's skip test (kVector) keeps a thread's first kHeldGroups groups of four of E in
  // registers across its barrier, and stores them to P only for a class that is not skipped
  // (store_held, then a barrier before the row blur): on street scenes most (tile, class) pairs
  // are skipped, and their stores were a third of the forward's shared-memory wavefronts. The
  // production launch (256 threads, 32 x 32 tiles: E 40 x 44 values forward, 48 x 52 backward,
  // with the padding) holds them all; a smaller block stores the rest at once.
  static constexpr int kHeldGroups = kBackward ? 3 : 2;
  struct Held {
    acc_t v[kHeldGroups][4];
  };

  // Channel k of P over E (clamped coordinates: the replicate border). Loss: returns whether
  // this thread's part of E rules out skipping class k (flat_within_threshold,
  // common/boundary_potential_math.h): a probability farther than the bound allows from v0, the
  // probability at E's origin, which every thread reads. (A label of class k in E also rules
  // it out: the tile's class mask says so.) held (kVector loss): where the thread's first
  // kHeldGroups groups go instead of P (store_held writes them there).
  template <typename Ptr>
  GSCNN_HD bool load_prob(Ptr sm, const Layout& Lo, Tile tl, int64_t k, int64_t t, int64_t T,
                          Held* held = nullptr) const {
    const Ptr Pb = sm + Lo.P;
    const int64_t oi = tl.i0 - Lo.h, oj = tl.j0 - Lo.h;
    // E's rows and columns clamped into the image (the replicate border) as 32-bit positions,
    // the element's offset in the (n, k) plane from them: no 64-bit clamps per element
    const Span ys(oi, H, Lo.EH), xs(oj, W, Lo.EW);
    const scalar_t* plane = prob.plane(tl.n, k);
    const int R = radius();
    bool need = false;
    with_plane_offsets(H, W, prob.sH, prob.sW, oi, oj, [&](auto po) {
      const auto at = [&](int r, int c) -> acc_t {
        return static_cast<acc_t>(plane[po.offset(ys.clamp(r), xs.clamp(c))]);
      };
      const acc_t v0 = kLoss ? at(0, 0) : acc_t(0);
      const auto check = [&](acc_t v) {
        if (kLoss) {
          const acc_t dev = v > v0 ? v - v0 : v0 - v;  // NaN stays NaN: never flat
          need = need || !flat_within_threshold(dev, v0, threshold, R);
        }
      };
      if constexpr (kVector) {
        // Groups of four columns of E (and its padding, 0): one vector load of global memory where
        // the group's four pixels are consecutive, aligned and inside the image (every group away
        // from the image's left and right edges when rows are contiguous, 4-aligned, and E starts
        // on a multiple of 4), one vector store of shared memory, one address per group.
        const bool vector = po.groups_of_four_aligned(plane);
        const auto group = [&](int r, int q, acc_t(&v)[4]) {
          const int c0 = 4 * q;
          const scalar_t* const row = plane + po.row(ys.clamp(r));
          if (vector && c0 >= xs.first && c0 + 3 <= xs.last && c0 + 3 < Lo.EW) {
            scalar_t in[4];
            load_vector<4>(row + (po.j0 + c0), in);  // po.sW == 1
            GSCNN_UNROLL
            for (int u = 0; u < 4; ++u) v[u] = static_cast<acc_t>(in[u]);
          } else {
            GSCNN_UNROLL
            for (int u = 0; u < 4; ++u) {
              const int c = c0 + u;
              v[u] = c < Lo.EW ? static_cast<acc_t>(row[po.column(xs.clamp(c))]) : acc_t(0);
            }
          }
          GSCNN_UNROLL
          for (int u = 0; u < 4; ++u)
            if (c0 + u < Lo.EW) check(v[u]);
        };
        Walk2d w(Lo.EG, t, T);
        if (kLoss && held != nullptr) {
          GSCNN_UNROLL
          for (int i = 0; i < kHeldGroups; ++i, w.next())
            if (w.r < Lo.EH) group(w.r, w.c, held->v[i]);
        }
        for (; w.r < Lo.EH; w.next()) {
          acc_t v[4];
          group(w.r, w.c, v);
          store_vector<4>(Pb + w.r * Lo.EWs + 4 * w.c, v);
        }
        return;
      }
      for_each_2d(Lo.EH, Lo.EW, t, T, [&](int r, int c) {
        const acc_t v = at(r, c);
        Pb[r * Lo.EWs + c] = v;
        check(v);
      });
    });
    return need;
  }

  // The groups load_prob held (the same walk): into P.
  template <typename Ptr>
  GSCNN_HD void store_held(Ptr sm, const Layout& Lo, int64_t t, int64_t T,
                           const Held& held) const {
    Walk2d w(Lo.EG, t, T);
    GSCNN_UNROLL
    for (int i = 0; i < kHeldGroups; ++i, w.next())
      if (w.r < Lo.EH) store_vector<4>(sm + Lo.P + w.r * Lo.EWs + 4 * w.c, held.v[i]);
  }

  // The loss backward's gradient of a skipped (tile, class): 0. kVector: groups of four pixels
  // of a row, one 16-byte store (8 for the half types) where they are consecutive, aligned and
  // inside the tile and the image (store_group, as backward_blur_rows stores a gradient).
  GSCNN_HD void write_zeros(Tile tl, int64_t k, int64_t t, int64_t T) const {
    scalar_t* const plane = out.plane(tl.n, k);
    with_plane_offsets(H, W, out.sH, out.sW, tl.i0, tl.j0, [&](auto po) {
      const Span ys(tl.i0, H, static_cast<int>(TH)), xs(tl.j0, W, static_cast<int>(TW));
      if constexpr (kVector) {
        const bool vector = po.groups_of_four_aligned(plane);
        const int tw = static_cast<int>(TW);
        for_each_2d(static_cast<int>(TH), (tw + 3) / 4, t, T, [&](int r, int q) {
          const int c0 = 4 * q;
          if (r > ys.last || c0 > xs.last) return;  // nothing of the group in the image
          const scalar_t zero[4] = {scalar_t(0), scalar_t(0), scalar_t(0), scalar_t(0)};
          store_group<false>(plane + po.offset(r, c0), po.sW, vector, c0, tw, xs, zero);
        });
        return;
      }
      for_each_2d(TH, TW, t, T, [&](int r, int c) {
        if (r <= ys.last && c <= xs.last) plane[po.offset(r, c)] = scalar_t(0);
      });
    });
  }

  // Row blur: X(r, c) = sum_i g[i] P(r, c + i) (and the one-hot of class k if it is present in E;
  // if not, its blur is 0 and nothing reads it).
  template <typename Ptr>
  GSCNN_HD void blur_rows(Ptr sm, const Layout& Lo, int64_t k, bool present, int64_t t,
                          int64_t T) const {
    const Ptr Pb = sm + Lo.P;
    const Ptr Lb = sm + Lo.L;
    const Ptr X = sm + Lo.X;
    const Ptr Xh = sm + Lo.Xh;
    const acc_t kk = static_cast<acc_t>(k);
    if constexpr (kVector) {
      // Four outputs per thread from the 4 + 2R inputs after them, read as kGroups groups of 4.
      constexpr int kTaps = 2 * kR + 1, kGroups = (4 + 2 * kR + 3) / 4;
      for_each_2d(Lo.EH, Lo.XG, t, T, [&](int r, int q) {
        acc_t in[4 * kGroups], out[4];
        const Ptr p = Pb + r * Lo.EWs + 4 * q;
        GSCNN_UNROLL
        for (int j = 0; j < kGroups; ++j) load_quad(p + 4 * j, in, 4 * j);
        blur_four<kTaps>(in, out);
        store_vector<4>(X + r * Lo.XWs + 4 * q, out);
        if (kLoss && present) {
          const Ptr l = Lb + r * Lo.EWs + 4 * q;
          GSCNN_UNROLL
          for (int j = 0; j < kGroups; ++j) load_quad(l + 4 * j, in, 4 * j);
          GSCNN_UNROLL
          for (int j = 0; j < 4 * kGroups; ++j) in[j] = in[j] == kk ? acc_t(1) : acc_t(0);
          blur_four<kTaps>(in, out);  // g[i] * 1 or g[i] * 0 added: the scalar form's sums
          store_vector<4>(Xh + r * Lo.XWs + 4 * q, out);
        }
      });
      return;
    }
    const int nt = 2 * radius() + 1;
    for_each_2d(Lo.EH, Lo.XW, t, T, [&](int r, int c) {
      const Ptr p = Pb + r * Lo.EWs + c;
      acc_t s = 0;
      GSCNN_UNROLL
      for (int i = 0; i < nt; ++i) s += taps.g[i] * p[i];
      X[r * Lo.XWs + c] = s;
      if (kLoss && present) {
        const Ptr l = Lb + r * Lo.EWs + c;
        acc_t sh = 0;
        GSCNN_UNROLL
        for (int i = 0; i < nt; ++i) sh += l[i] == kk ? taps.g[i] : acc_t(0);
        Xh[r * Lo.XWs + c] = sh;
      }
    });
  }

  // Four neighbouring outputs of the row blur, out[u] = sum_i g[i] in[u + i], in the order of
  // the scalar form's sums.
  template <int kTaps, int N>
  GSCNN_HD void blur_four(const acc_t (&in)[N], acc_t (&out)[4]) const {
    static_assert(N >= kTaps + 3, "the inputs of four outputs");
    GSCNN_UNROLL
    for (int u = 0; u < 4; ++u) {
      out[u] = 0;
      GSCNN_UNROLL
      for (int i = 0; i < kTaps; ++i) out[u] += taps.g[i] * in[u + i];
    }
  }

  // Four values of a buffer row (an aligned group) into in[at .. at + 3].
  template <typename Ptr, int N>
  static GSCNN_HD void load_quad(const Ptr& p, acc_t (&in)[N], int at) {
    acc_t v[4];
    load_vector<4>(p, v);
    GSCNN_UNROLL
    for (int u = 0; u < 4; ++u) in[at + u] = v[u];
  }

  // Column blur: B(r, c) = sum_i g[i] X(r + i, c) (and of the one-hot's row blur if present).
  template <typename Ptr>
  GSCNN_HD void blur_cols(Ptr sm, const Layout& Lo, bool present, int64_t t, int64_t T) const {
    if constexpr (kVector) {
      // Four neighbouring columns and kColumnRows neighbouring rows per thread: the
      // 2R + kColumnRows groups of four of X they need are loaded once (each output's sum keeps
      // its order): per two outputs 2R + 2 loads instead of 2 (2R + 1). The forward (64
      // registers) keeps the loop free of local accesses at two rows, not at four (measured in
      // its sm_90 SASS: four rows spilled the keep mask's loops).
      constexpr int kTaps = 2 * kR + 1, kRows = kColumnRows;
      const auto blur = [&](Ptr src, Ptr dst, int r, int q) {
        const int rows = Lo.BH - r < kRows ? Lo.BH - r : kRows;
        acc_t out[kRows][4], v[4];
        GSCNN_UNROLL
        for (int j = 0; j < kRows; ++j)
          GSCNN_UNROLL
          for (int u = 0; u < 4; ++u) out[j][u] = 0;
        GSCNN_UNROLL
        for (int i = 0; i < kTaps + kRows - 1; ++i) {
          // B's last row of an odd count has no partner: its partner's last tap re-reads X's
          // last row (its sums are not stored), so that every thread runs the same straight code
          const int xr = r + i < Lo.EH - 1 ? r + i : Lo.EH - 1;
          load_vector<4>(src + xr * Lo.XWs + 4 * q, v);
          GSCNN_UNROLL
          for (int j = 0; j < kRows; ++j)
            GSCNN_UNROLL
            for (int u = 0; u < 4; ++u)
              if (i - j >= 0 && i - j < kTaps) out[j][u] += taps.g[i - j] * v[u];
        }
        GSCNN_UNROLL
        for (int j = 0; j < kRows; ++j)
          if (j < rows) store_vector<4>(dst + (r + j) * Lo.XWs + 4 * q, out[j]);
      };
      // W2 >= XG groups per row (Layout: conflict-free strides); the lanes past XG idle
      for_each_2d((Lo.BH + kRows - 1) / kRows, Lo.W2, t, T, [&](int rr, int q) {
        if (q >= Lo.XG) return;
        blur(sm + Lo.X, sm + Lo.B, kRows * rr, q);
        if (kLoss && present) blur(sm + Lo.Xh, sm + Lo.Bh, kRows * rr, q);
      });
      return;
    }
    const int nt = 2 * radius() + 1;
    for_each_2d(Lo.BH, Lo.XW, t, T, [&](int r, int c) {
      const Ptr x = sm + Lo.X + r * Lo.XWs + c;
      acc_t s = 0;
      GSCNN_UNROLL
      for (int i = 0; i < nt; ++i) s += taps.g[i] * x[i * Lo.XWs];
      sm[Lo.B + r * Lo.XWs + c] = s;
      if (kLoss && present) {
        const Ptr xh = sm + Lo.Xh + r * Lo.XWs + c;
        acc_t sh = 0;
        GSCNN_UNROLL
        for (int i = 0; i < nt; ++i) sh += taps.g[i] * xh[i * Lo.XWs];
        sm[Lo.Bh + r * Lo.XWs + c] = sh;
      }
    });
  }

  // Central differences at the Z pixel (r, c) of the tile, image coordinates (y, x) (in the
  // image), from the buffer B (origin: Z origin - 1, so the pixel is B(r + 1, c + 1)). The
  // replicate border sends a neighbour beyond the image's edge onto the pixel itself.
  struct Diff {
    acc_t gx, gy;
  };
  template <typename Ptr>
  GSCNN_HD Diff diff(Ptr Bb, const Layout& Lo, int r, int c, int64_t y, int64_t x) const {
    const Ptr p = Bb + (r + 1) * Lo.XWs + c + 1;
    const int east = x + 1 < W ? 1 : 0, west = x > 0 ? -1 : 0;
    const int south = y + 1 < H ? Lo.XWs : 0, north = y > 0 ? -Lo.XWs : 0;
    const acc_t gx = acc_t(0.5) * (p[east] - p[west]);
    const acc_t gy = acc_t(0.5) * (p[south] - p[north]);
    return {gx, gy};
  }

  // kVector backward: the central differences of kRows x 4 Z pixels, rows r .. r + rows - 1
  // (rows <= kRows) and columns 4q .. 4q + 3, from the buffer Bb (row stride XWs; Z pixel (r, c)
  // is Bb(r + 1, c + 1)): its rows r .. r + rows + 1, columns 4q .. 4q + 7, are read as two
  // aligned groups of four each (2 (kRows + 2) vector loads for 4 kRows pixels, not 16 kRows
  // scalar ones; the same bytes at kRows = 2). ys, xs: where the image's edges fall in Z. The
  // same sums as diff(), bit for bit. (The forward keeps diff(): with its one row per thread, the
  // groups would read half as many bytes again, and its 64 registers leave no room for two.)
  // kInterior: the caller knows that every pixel lies strictly inside the image (no edge's
  // replicate border to apply, all rows present).
  template <int kRows, bool kInterior = false, typename Ptr>
  GSCNN_HD void diff_group(Ptr Bb, const Layout& Lo, int r, int q, int rows, Span ys, Span xs,
                           acc_t (&gx)[kRows][4], acc_t (&gy)[kRows][4]) const {
    acc_t v[kRows + 2][8];
    GSCNN_UNROLL
    for (int i = 0; i < kRows + 2; ++i) {
      if (kInterior || i < rows + 2) {
        const Ptr p = Bb + (r + i) * Lo.XWs + 4 * q;
        load_quad(p, v[i], 0);
        load_quad(p + 4, v[i], 4);
      } else {
        GSCNN_UNROLL
        for (int u = 0; u < 8; ++u) v[i][u] = 0;
      }
    }
    GSCNN_UNROLL
    for (int j = 0; j < kRows; ++j) {
      const int zr = r + j;
      GSCNN_UNROLL
      for (int u = 0; u < 4; ++u) {
        const int c = 4 * q + u;
        const acc_t self = v[j + 1][u + 1];
        const acc_t east = !kInterior && c == xs.last ? self : v[j + 1][u + 2];
        const acc_t west = !kInterior && c == xs.first ? self : v[j + 1][u];
        const acc_t south = !kInterior && zr == ys.last ? self : v[j + 2][u + 1];
        const acc_t north = !kInterior && zr == ys.first ? self : v[j][u + 1];
        gx[j][u] = acc_t(0.5) * (east - west);
        gy[j][u] = acc_t(0.5) * (south - north);
      }
    }
  }
  // The keep mask of the same pixels (one aligned group of four per row).
  template <int kRows, bool kInterior = false, typename Ptr>
  GSCNN_HD void keep_group(Ptr sm, const Layout& Lo, int r, int q, int rows,
                           acc_t (&kp)[kRows][4]) const {
    GSCNN_UNROLL
    for (int j = 0; j < kRows; ++j) {
      if (kInterior || j < rows) {
        load_quad(sm + Lo.keep + (r + j) * Lo.ZWs + 4 * q, kp[j], 0);
      } else {
        GSCNN_UNROLL
        for (int u = 0; u < 4; ++u) kp[j][u] = 0;
      }
    }
  }

  // --- forward --------------------------------------------------------------------------------

  // Forward, on Z = the tile: write zeta (potential) or add to the thread's (sum, count) (loss).
  // zeta_hat of a class absent from E is 0: its blurred one-hot is exactly 0 everywhere.
  template <typename Ptr>
  GSCNN_HD void forward_zeta(Ptr sm, const Layout& Lo, Tile tl, int64_t k, bool present,
                             int64_t t, int64_t T, acc_t& sum, acc_t& count) const {
    for_each_2d(Lo.TH, Lo.TW, t, T, [&](int r, int c) {
      const int64_t y = tl.i0 + r, x = tl.j0 + c;
      if (y >= H || x >= W) return;
      const Diff d = diff(sm + Lo.B, Lo, r, c, y, x);
      const acc_t zeta = potential(d.gx, d.gy);
      if (!kLoss) {
        out.at(tl.n, k, y, x) = static_cast<scalar_t>(zeta);
        return;
      }
      if (sm[Lo.keep + r * Lo.ZWs + c] == acc_t(0)) return;
      acc_t zeta_hat = 0;
      if (present) {
        const Diff dh = diff(sm + Lo.Bh, Lo, r, c, y, x);
        zeta_hat = potential(dh.gx, dh.gy);
      }
      if (in_band(zeta, zeta_hat, threshold)) {
        sum += zeta > zeta_hat ? zeta - zeta_hat : zeta_hat - zeta;
        count += acc_t(1);
      }
    });
  }

  // Block reduction of the loss partials of a tile, in a fixed order (deterministic): every
  // thread publishes its (sum, count, bad), then thread 0 adds them in thread order into the
  // tile's row of `partials`.
  template <typename Ptr>
  GSCNN_HD void publish(Ptr sm, const Layout& Lo, int64_t t, int64_t T,
                        const LossState<acc_t>& st) const {
    sm[Lo.red + t] = st.sum;
    sm[Lo.red + T + t] = st.count;
    sm[Lo.red + 2 * T + t] = st.bad;
  }
  template <typename Ptr>
  GSCNN_HD void reduce(Ptr sm, const Layout& Lo, int64_t tile, int64_t t, int64_t T) const {
    if (t != 0) return;
    double s = 0, c = 0, b = 0;
    for (int64_t i = 0; i < T; ++i) {
      s += static_cast<double>(static_cast<acc_t>(sm[Lo.red + i]));
      c += static_cast<double>(static_cast<acc_t>(sm[Lo.red + T + i]));
      b += static_cast<double>(static_cast<acc_t>(sm[Lo.red + 2 * T + i]));
    }
    partials[3 * tile] = s;
    partials[3 * tile + 1] = c;
    partials[3 * tile + 2] = b;
  }

  // --- backward -------------------------------------------------------------------------------

  // kVector backward: (DGX, DGY) of kColumnRows x 4 Z pixels, rows r .. r + rows - 1, columns
  // 4q .. 4q + 3 < round4(ZW) (0 for the pixels outside the image or past ZW). kInterior: every
  // pixel strictly inside the image and the region (no edge's replicate border, all rows
  // present). s: the loss's d loss / d zeta on P+ up to its sign.
  template <bool kInterior, typename Ptr>
  GSCNN_HD void zeta_group(Ptr sm, const Layout& Lo, Tile tl, int64_t k, bool present, acc_t s,
                           int r, int q, int rows, Span ys, Span xs) const {
    constexpr int kRows = kColumnRows;
    acc_t fx[kRows][4], fy[kRows][4];
    GSCNN_UNROLL
    for (int j = 0; j < kRows; ++j)
      GSCNN_UNROLL
      for (int u = 0; u < 4; ++u) fx[j][u] = fy[j][u] = 0;
    acc_t gx[kRows][4], gy[kRows][4], hx[kRows][4], hy[kRows][4], kp[kRows][4];
    diff_group<kRows, kInterior>(sm + Lo.B, Lo, r, q, rows, ys, xs, gx, gy);
    if (kLoss) {
      keep_group<kRows, kInterior>(sm, Lo, r, q, rows, kp);
      if (present) diff_group<kRows, kInterior>(sm + Lo.Bh, Lo, r, q, rows, ys, xs, hx, hy);
    }
    GSCNN_UNROLL
    for (int j = 0; j < kRows; ++j) {
      GSCNN_UNROLL
      for (int u = 0; u < 4; ++u) {
        const int c = 4 * q + u;
        if (!kInterior && (j >= rows || c >= Lo.ZW || !ys.inside(r + j) || !xs.inside(c)))
          continue;
        const acc_t zeta = potential(gx[j][u], gy[j][u]);
        acc_t dzeta = 0;
        if (kLoss) {
          if (kp[j][u] != acc_t(0)) {
            const acc_t zeta_hat = present ? potential(hx[j][u], hy[j][u]) : acc_t(0);
            if (in_band(zeta, zeta_hat, threshold)) dzeta = s * abs_grad(zeta, zeta_hat);
          }
        } else {
          const int64_t zi0 = tl.i0 - Lo.R - 1, zj0 = tl.j0 - Lo.R - 1;
          dzeta = static_cast<acc_t>(grad_zeta.at(tl.n, k, zi0 + r + j, zj0 + c));
        }
        const acc_t f = potential_grad_factor(dzeta, zeta);
        fx[j][u] = f * gx[j][u];
        fy[j][u] = f * gy[j][u];
      }
    }
    store_adjoints(sm, Lo, r, q, kInterior ? kRows : rows, fx, fy);
  }
  // (DGX, DGY) of rows r .. r + rows - 1 of a group: one 16-byte store each.
  template <typename Ptr>
  GSCNN_HD void store_adjoints(Ptr sm, const Layout& Lo, int r, int q, int rows,
                               const acc_t (&fx)[kColumnRows][4],
                               const acc_t (&fy)[kColumnRows][4]) const {
    GSCNN_UNROLL
    for (int j = 0; j < kColumnRows; ++j) {
      if (j >= rows) break;
      store_vector<4>(sm + Lo.DGX + (r + j) * Lo.ZWs + 4 * q, fx[j]);
      store_vector<4>(sm + Lo.DGY + (r + j) * Lo.ZWs + 4 * q, fy[j]);
    }
  }
  // The other groups of pixels (the image's edges, the region's odd last row): cold. It builds
  // the Layout again from T rather than take the caller's (a reference or a copy would move the
  // caller's to local memory, and its fields would be reloaded in the hot loop).
  template <typename Ptr>
  GSCNN_HD_COLD void zeta_group_edge(Ptr sm, int64_t T, Tile tl, int64_t k, bool present,
                                     acc_t s, int r, int q, int rows, Span ys, Span xs) const {
    zeta_group<false>(sm, layout(T), tl, k, present, s, r, q, rows, ys, xs);
  }

  // d zeta on Z, turned into (DGX, DGY), the adjoints of the central differences (0 outside the
  // image and, for the loss, outside P+).
  template <typename Ptr>
  GSCNN_HD void backward_zeta(Ptr sm, const Layout& Lo, Tile tl, int64_t k, bool present,
                              int64_t t, int64_t T) const {
    const int64_t zi0 = tl.i0 - Lo.R - 1, zj0 = tl.j0 - Lo.R - 1;
    const acc_t s = kLoss ? static_cast<acc_t>(*scale) : acc_t(0);
    if constexpr (kVector) {
      // kColumnRows rows of four pixels per thread; the padding columns past ZW get 0 (the vector
      // adjoint of the differences reads whole groups of four). Groups strictly inside the image
      // and the region (every group of a tile away from the image's edges) take the straight
      // code; the rest a cold function of their own (edge selects, per-pixel bounds tests).
      constexpr int kRows = kColumnRows;
      const Span ys(zi0, H, Lo.ZH), xs(zj0, W, Lo.ZW);
      for_each_2d((Lo.ZH + kRows - 1) / kRows, Lo.W2, t, T, [&](int p, int q) {
        const int r = kRows * p, rows = Lo.ZH - r < kRows ? Lo.ZH - r : kRows;
        if (4 * q >= Lo.ZW) {  // padding (a few lanes of every warp: not the cold function)
          const acc_t zero[kRows][4] = {};
          store_adjoints(sm, Lo, r, q, rows, zero, zero);
        } else if (4 * q + 3 < Lo.ZW && rows == kRows && r > ys.first &&
                   r + kRows - 1 < ys.last && 4 * q > xs.first && 4 * q + 3 < xs.last) {
          zeta_group<true>(sm, Lo, tl, k, present, s, r, q, rows, ys, xs);
        } else {
          zeta_group_edge(sm, T, tl, k, present, s, r, q, rows, ys, xs);
        }
      });
      return;
    }
    for_each_2d(Lo.ZH, Lo.ZW, t, T, [&](int r, int c) {
      const int64_t y = zi0 + r, x = zj0 + c;
      acc_t fx = 0, fy = 0;
      if (y >= 0 && y < H && x >= 0 && x < W) {
        const Diff d = diff(sm + Lo.B, Lo, r, c, y, x);
        const acc_t zeta = potential(d.gx, d.gy);
        acc_t dzeta = 0;
        if (kLoss) {
          if (sm[Lo.keep + r * Lo.ZWs + c] != acc_t(0)) {
            acc_t zeta_hat = 0;  // 0 for a class absent from E (forward_zeta)
            if (present) {
              const Diff dh = diff(sm + Lo.Bh, Lo, r, c, y, x);
              zeta_hat = potential(dh.gx, dh.gy);
            }
            if (in_band(zeta, zeta_hat, threshold)) dzeta = s * abs_grad(zeta, zeta_hat);
          }
        } else {
          dzeta = static_cast<acc_t>(grad_zeta.at(tl.n, k, y, x));
        }
        const acc_t f = potential_grad_factor(dzeta, zeta);
        fx = f * d.gx;
        fy = f * d.gy;
      }
      sm[Lo.DGX + r * Lo.ZWs + c] = fx;
      sm[Lo.DGY + r * Lo.ZWs + c] = fy;
    });
  }

  // kVector: dB at D row r (in the image), columns 4q .. 4q + 3 (some in the image and before
  // DW: the caller stores the other groups' zeros itself): DGX's Z row
  // r + 1 and DGY's Z rows r and r + 2 (and r + 1 at the image's first and last row), columns
  // 4q .. 4q + 7, as aligned groups of four; 0 at the padding columns past DW and outside the
  // image. kInterior: the caller knows the row is not the image's first or last and no column of
  // the group is the image's first or last or outside it (the padding's select stays).
  template <bool kInterior, typename Ptr>
  GSCNN_HD void diff_adjoint_group(Ptr sm, const Layout& Lo, int r, int q, Span ys,
                                   Span xs) const {
    const bool first = !kInterior && r == ys.first, last = !kInterior && r == ys.last;
    acc_t a[8], n[8], m[8], so[8], out[4] = {0, 0, 0, 0};
    const Ptr px = sm + Lo.DGX + (r + 1) * Lo.ZWs + 4 * q;
    const Ptr py = sm + Lo.DGY + r * Lo.ZWs + 4 * q;
    load_quad(px, a, 0);
    load_quad(px + 4, a, 4);
    load_quad(py, n, 0);
    load_quad(py + 4, n, 4);
    load_quad(py + 2 * Lo.ZWs, so, 0);
    load_quad(py + 2 * Lo.ZWs + 4, so, 4);
    if (first || last) {  // the adjoint of the pixel's own value: the image's edge rows
      load_quad(py + Lo.ZWs, m, 0);
      load_quad(py + Lo.ZWs + 4, m, 4);
    } else {
      GSCNN_UNROLL
      for (int u = 0; u < 8; ++u) m[u] = 0;
    }
    GSCNN_UNROLL
    for (int u = 0; u < 4; ++u) {
      const int c = 4 * q + u;  // Z column c + 1: a[u + 1]
      if (c >= Lo.DW || (!kInterior && !xs.inside(c))) continue;
      out[u] = central_difference_adjoint_at<acc_t>(!kInterior && c == xs.first,
                                                    !kInterior && c == xs.last, a[u], a[u + 1],
                                                    a[u + 2]) +
               central_difference_adjoint_at<acc_t>(first, last, n[u + 1], m[u + 1], so[u + 1]);
    }
    store_vector<4>(sm + Lo.dB + r * Lo.DWs + 4 * q, out);
  }
  // The groups at the image's edges: cold (the Layout built again from T: see zeta_group_edge).
  template <typename Ptr>
  GSCNN_HD_COLD void diff_adjoint_group_edge(Ptr sm, int64_t T, Tile tl, int r, int q) const {
    const Layout Lo = layout(T);
    const Span ys(tl.i0 - Lo.R, H, Lo.DH), xs(tl.j0 - Lo.R, W, Lo.DW);
    diff_adjoint_group<false>(sm, Lo, r, q, ys, xs);
  }

  // dB on D = tile + R: transpose of the central differences (gather form).
  template <typename Ptr>
  GSCNN_HD void backward_diff(Ptr sm, const Layout& Lo, Tile tl, int64_t t, int64_t T) const {
    const int64_t di0 = tl.i0 - Lo.R, dj0 = tl.j0 - Lo.R;
    if constexpr (kVector) {
      // Four pixels of kColumnRows rows per thread (each row on its own: they share no loads);
      // the padding columns past DW get 0 (the vector adjoint of the column blur reads them).
      // Groups strictly inside the image (every group of a tile away from the image's edges, the
      // last one's padding columns included) take the straight code; the rest a cold function
      // (edge selects, the pixel's own adjoint at the image's edge rows). The walk is the W2
      // groups of the two-row phases (the lanes past DWs / 4 idle): with the conflict-free
      // strides consecutive lanes then reach distinct bank groups across a row pair's end too, in
      // DGX and DGY (pair step 2 ZWs / 4 = W2 mod 8) and in dB (the active lanes' count is its
      // stride). One row of DWs / 4 = 10 groups at stride 14 put half again as many wavefronts
      // on this phase.
      constexpr int kRows = kColumnRows;
      const int walk = Lo.W2 > Lo.DWs / 4 ? Lo.W2 : Lo.DWs / 4;
      const Span ys(di0, H, Lo.DH), xs(dj0, W, Lo.DW);
      for_each_2d((Lo.DH + kRows - 1) / kRows, walk, t, T, [&](int p, int q) {
        if (4 * q >= Lo.DWs) return;
        const int c_last = 4 * q + 3 < Lo.DW ? 4 * q + 3 : Lo.DW - 1;
        const bool columns_inside = 4 * q > xs.first && c_last < xs.last;
        GSCNN_UNROLL
        for (int j = 0; j < kRows; ++j) {
          const int r = kRows * p + j;
          if (r >= Lo.DH) break;
          if (4 * q >= Lo.DW || 4 * q > xs.last || c_last < xs.first || !ys.inside(r)) {
            // padding, groups and rows outside the image: zeros
            const acc_t zero[4] = {0, 0, 0, 0};
            store_vector<4>(sm + Lo.dB + r * Lo.DWs + 4 * q, zero);
          } else if (columns_inside && r > ys.first && r < ys.last) {
            diff_adjoint_group<true>(sm, Lo, r, q, ys, xs);
          } else {
            diff_adjoint_group_edge(sm, T, tl, r, q);
          }
        }
      });
      return;
    }
    for_each_2d(Lo.DH, Lo.DW, t, T, [&](int r, int c) {
      const int64_t y = di0 + r, x = dj0 + c;
      acc_t v = 0;
      if (y >= 0 && y < H && x >= 0 && x < W) {
        // D pixel (r, c) is Z pixel (r + 1, c + 1); the adjoints of its neighbours along x and y
        const int z = (r + 1) * Lo.ZWs + c + 1;
        const Ptr px = sm + Lo.DGX + z;
        const Ptr py = sm + Lo.DGY + z;
        v = central_difference_adjoint<acc_t>(
                x, W, [&](int64_t j) -> acc_t { return px[static_cast<int>(j - x)]; }) +
            central_difference_adjoint<acc_t>(
                y, H, [&](int64_t i) -> acc_t { return py[static_cast<int>(i - y) * Lo.ZWs]; });
      }
      sm[Lo.dB + r * Lo.DWs + c] = v;
    });
  }

  // The adjoint of the replicate-padded blur at position y of an axis of n (`at` captures by
  // value: it reaches the cold edge path): sum over the taps
  // i = -R..R of w(y, y + i) at(i), at(i) the incoming adjoint at y + i, which the earlier phase
  // wrote as 0 outside the image. Away from the two edge positions every weight is g(-i) (taps
  // beyond the image meet those zeros); at an edge the clamp sent the taps beyond it onto it.
  template <typename At>
  GSCNN_HD acc_t blur_adjoint(int64_t y, int64_t n, At at) const {
    if (y == 0 || y == n - 1) return blur_adjoint_edge(y, n, at);
    const int R = radius();
    acc_t v = 0;
    GSCNN_UNROLL
    for (int i = -R; i <= R; ++i) v += taps.g[R - i] * at(i);
    return v;
  }
  // The edge positions (cold: two rows and two columns of an image).
  template <typename At>
  GSCNN_HD_COLD acc_t blur_adjoint_edge(int64_t y, int64_t n, At at) const {
    const int R = radius();
    acc_t v = 0;
    for (int i = -R; i <= R; ++i) {
      if (y + i < 0 || y + i >= n) continue;
      v += blur_adjoint_weight(taps, y, y + i, n) * at(i);
    }
    return v;
  }

  // kVector: dX at tile row r, D columns 4q .. 4q + 3 (the padding past DW too), one group of
  // four dB values per tap; the scalar form at the image's first and last row, where the weights
  // differ; 0 at the rows past the image. No select at the columns outside the image: dB is 0
  // there (backward_diff), so are these sums. kInterior: the caller knows the row is strictly
  // inside the image.
  template <bool kInterior, typename Ptr>
  GSCNN_HD void blur_cols_adjoint_group(Ptr sm, const Layout& Lo, int r, int q, Span ys,
                                        int64_t i0) const {
    const Ptr col = sm + Lo.dB + (r + kR) * Lo.DWs + 4 * q;  // dB at row r (D starts R above)
    acc_t out[4] = {0, 0, 0, 0}, v[4];
    if (kInterior || (r <= ys.last && r != ys.first && r != ys.last)) {
      GSCNN_UNROLL
      for (int i = -kR; i <= kR; ++i) {
        load_vector<4>(col + i * Lo.DWs, v);
        GSCNN_UNROLL
        for (int u = 0; u < 4; ++u) out[u] += taps.g[kR - i] * v[u];
      }
    } else if (r <= ys.last) {  // the image's first or last row (by value: GSCNN_HD_COLD)
      const int ld = Lo.DWs;
      GSCNN_UNROLL
      for (int u = 0; u < 4; ++u)
        out[u] = blur_adjoint_edge(i0 + r, H, [col, ld, u](int i) -> acc_t { return col[i * ld + u]; });
    }
    store_vector<4>(sm + Lo.dX + r * Lo.DWs + 4 * q, out);
  }
  // The image's first and last row and the rows past it: cold (the Layout built again from T:
  // see zeta_group_edge).
  template <typename Ptr>
  GSCNN_HD_COLD void blur_cols_adjoint_group_edge(Ptr sm, int64_t T, Tile tl, int r, int q) const {
    const Layout Lo = layout(T);
    blur_cols_adjoint_group<false>(sm, Lo, r, q, Span(tl.i0, H, Lo.TH), tl.i0);
  }

  // dX on tile rows x D columns: transpose of the column blur (0 outside the image). kVector:
  // four neighbouring columns per thread, one group of four dB values per tap (the scalar form
  // at the image's first and last row, where the weights differ).
  template <typename Ptr>
  GSCNN_HD void backward_blur_cols(Ptr sm, const Layout& Lo, Tile tl, int64_t t,
                                   int64_t T) const {
    const int64_t dj0 = tl.j0 - Lo.R;
    const int R = radius();
    if constexpr (kVector) {
      // Rows strictly inside the image (every row of a tile away from the image's top and
      // bottom): straight code; the image's first and last row and the rows past it a cold
      // function.
      const Span ys(tl.i0, H, Lo.TH);
      for_each_2d(Lo.TH, Lo.DWs / 4, t, T, [&](int r, int q) {
        if (r > ys.first && r < ys.last) {
          blur_cols_adjoint_group<true>(sm, Lo, r, q, ys, tl.i0);
        } else {
          blur_cols_adjoint_group_edge(sm, T, tl, r, q);
        }
      });
      return;
    }
    for_each_2d(Lo.TH, Lo.DW, t, T, [&](int r, int c) {
      const int64_t y = tl.i0 + r, x = dj0 + c;
      acc_t v = 0;
      if (y < H && x >= 0 && x < W) {
        const Ptr col = sm + Lo.dB + (r + R) * Lo.DWs + c;  // dB at row y (D starts R above)
        const int ld = Lo.DWs;  // captured by value: see GSCNN_HD_COLD
        v = blur_adjoint(y, H, [col, ld](int i) -> acc_t { return col[i * ld]; });
      }
      sm[Lo.dX + r * Lo.DWs + c] = v;
    });
  }

  // kVector: dP at four neighbouring pixels of a tile row, columns c0 .. c0 + 3 (c0 <= xs.last),
  // from dX's columns c0 .. c0 + 2R + 3 at `row` (D starts R left), written at o (column stride
  // sW; one vector store where `vector` and the four lie in the tile and the image). kInterior:
  // the caller knows that the four lie in the tile and none is the image's first or last column.
  template <bool kInterior, typename Ptr, typename I>
  GSCNN_HD void blur_rows_adjoint_group(Ptr row, scalar_t* o, I sW, bool vector, int c0, int TW,
                                        Span xs, int64_t j0) const {
    constexpr int kTaps = 2 * kR + 1, kGroups = (4 + 2 * kR + 3) / 4;
    acc_t in[4 * kGroups];
    GSCNN_UNROLL
    for (int j = 0; j < kGroups; ++j) load_quad(row + 4 * j, in, 4 * j);
    scalar_t v[4];
    GSCNN_UNROLL
    for (int u = 0; u < 4; ++u) {
      const int c = c0 + u;
      acc_t s = 0;
      if (kInterior || (c != xs.first && c != xs.last)) {
        GSCNN_UNROLL
        for (int i = 0; i < kTaps; ++i) s += taps.g[kTaps - 1 - i] * in[u + i];
      } else if (c < TW && c < xs.last + 1) {
        // the image's first or last column: from shared memory, not `in` (by value)
        const Ptr at = row + u + kR;
        s = blur_adjoint_edge(j0 + c, W, [at](int i) -> acc_t { return at[i]; });
      }
      v[u] = static_cast<scalar_t>(s);
    }
    store_group<kInterior>(o, sW, vector, c0, TW, xs, v);
  }
  // Four gradient values of a tile row, columns c0 .. c0 + 3 (c0 <= xs.last), at o (column
  // stride sW): one vector store where `vector` and the four lie in the tile and the image, else
  // those that do one by one. kInterior: the caller knows that the four lie in the tile and image.
  template <bool kInterior, typename I>
  static GSCNN_HD void store_group(scalar_t* o, I sW, bool vector, int c0, int TW, Span xs,
                                   const scalar_t (&v)[4]) {
    if (vector && (kInterior || (c0 + 3 < TW && c0 + 3 <= xs.last))) {
      store_vector<4>(o, v);
      return;
    }
    GSCNN_UNROLL
    for (int u = 0; u < 4; ++u) {
      const int c = c0 + u;
      if (!kInterior && (c >= TW || c > xs.last)) break;
      o[u * sW] = v[u];
    }
  }
  template <typename Ptr, typename I>
  GSCNN_HD_COLD void blur_rows_adjoint_group_edge(Ptr row, scalar_t* o, I sW, bool vector, int c0,
                                                  int TW, Span xs, int64_t j0) const {
    blur_rows_adjoint_group<false>(row, o, sW, vector, c0, TW, xs, j0);
  }

  // dP on the tile: transpose of the row blur; written to grad_prob. kVector: four neighbouring
  // pixels per thread from the 4 + 2R values of dX around them, read as groups of four (the
  // scalar form at the image's first and last column).
  template <typename Ptr>
  GSCNN_HD void backward_blur_rows(Ptr sm, const Layout& Lo, Tile tl, int64_t k,
                                   int64_t t, int64_t T) const {
    const int R = radius();
    if constexpr (kVector) {
      scalar_t* const plane = out.plane(tl.n, k);
      with_plane_offsets(H, W, out.sH, out.sW, tl.i0, tl.j0, [&](auto po) {
        const Span ys(tl.i0, H, Lo.TH), xs(tl.j0, W, Lo.TW);
        // one 16-byte store (8 for the half types) where the four pixels are consecutive and
        // aligned in memory and inside the tile and the image (the loads of load_prob likewise)
        const bool vector = po.groups_of_four_aligned(plane);
        for_each_2d(Lo.TH, (Lo.TW + 3) / 4, t, T, [&](int r, int q) {
          // no pixel of the group in the image: nothing to write (and no address past it, whose
          // 32-bit offset with_plane_offsets does not bound)
          if (r > ys.last || 4 * q > xs.last) return;
          // dX columns 4q .. 4q + 2R + 3: the taps of pixels 4q .. 4q + 3 (D starts R left)
          const Ptr row = sm + Lo.dX + r * Lo.DWs + 4 * q;
          scalar_t* const o = plane + po.offset(r, 4 * q);
          // Groups inside the tile with no column the image's first or last (every group of a
          // tile away from the image's edges): straight code; the rest a cold function.
          if (4 * q > xs.first && 4 * q + 3 < xs.last && 4 * q + 3 < Lo.TW) {
            blur_rows_adjoint_group<true>(row, o, po.sW, vector, 4 * q, Lo.TW, xs, tl.j0);
          } else {
            blur_rows_adjoint_group_edge(row, o, po.sW, vector, 4 * q, Lo.TW, xs, tl.j0);
          }
        });
      });
      return;
    }
    for_each_2d(Lo.TH, Lo.TW, t, T, [&](int r, int c) {
      const int64_t y = tl.i0 + r, x = tl.j0 + c;
      if (y >= H || x >= W) return;
      const Ptr row = sm + Lo.dX + r * Lo.DWs + c + R;  // dX at column x (D starts R left)
      const acc_t v = blur_adjoint(x, W, [row](int i) -> acc_t { return row[i]; });
      out.at(tl.n, k, y, x) = static_cast<scalar_t>(v);
    });
  }

  // --- the block program ----------------------------------------------------------------------
  // Blocks walk the tiles grid-stride. Per tile: (loss) labels, then the keep mask and the
  // classes present in E; per class k: load (the loss: skip the class if no thread needs it, a
  // barrier that ORs the threads' answers; kVector: then store the held groups, a barrier), blur
  // the rows, blur the columns, then the forward's zeta or the backward's four adjoint phases;
  // (loss forward) the tile's block reduction. A barrier separates two phases only where the
  // later one reads what another thread wrote in the earlier one, or overwrites what another
  // thread read there (tests/test_emulator.py removes each barrier in turn and checks that
  // the emulator's race detector objects).
  template <typename Exec>
  GSCNN_HD void operator()(Exec& ex) const {
    auto sm = ex.template shared<acc_t>();
    auto smu = ex.template shared<uint32_t>();
    const int64_t T = ex.threads();
    const Layout Lo = layout(T);
    auto st = ex.template registers<LossState<acc_t>>();
    auto held = ex.template registers<Held>();  // kVector loss: E's groups across the skip test
    for (int64_t tile = ex.block(); tile < num_tiles(); tile += ex.grid()) {
      const Tile tl = tile_of(tile);
      if (kLoss) {
        ex.for_each_thread([&](int64_t t) {
          st(t) = LossState<acc_t>{acc_t(0), acc_t(0), acc_t(0), false, 0u, 0u};
          load_labels(sm, smu, Lo, tl, t, T, st(t).bad);
        });
        ex.sync();
        ex.for_each_thread([&](int64_t t) {
          keep_rows(sm, Lo, t, T);
          group_classes(smu, Lo, t, T);
        });
        ex.sync();
        ex.for_each_thread([&](int64_t t) {
          keep_mask(sm, Lo, tl, t, T);
          tile_classes(smu, Lo, T, st(t));
        });
      }
      for (int64_t k = 0; k < K; ++k) {
        if (kLoss) {
          // Exact skipping: a class that no thread needs is done (backward: gradient 0).
          ex.for_each_thread([&](int64_t t) {
            st(t).need = load_prob(sm, Lo, tl, k, t, T, kVector ? &held(t) : nullptr) ||
                         st(t).present(k);
          });
          if (!ex.sync_any([&](int64_t t) { return st(t).need; })) {
            if (kBackward) ex.for_each_thread([&](int64_t t) { write_zeros(tl, k, t, T); });
            continue;
          }
          if (kVector) {
            ex.for_each_thread([&](int64_t t) { store_held(sm, Lo, t, T, held(t)); });
            ex.sync();
          }
        } else {
          ex.for_each_thread([&](int64_t t) { load_prob(sm, Lo, tl, k, t, T); });
          ex.sync();
        }
        // present: the class occurs in E (the loss's one-hot blur is needed); the same in every
        // thread, so no warp diverges on it.
        const auto present = [&](int64_t t) { return !kLoss || st(t).present(k); };
        ex.for_each_thread([&](int64_t t) { blur_rows(sm, Lo, k, present(t), t, T); });
        ex.sync();
        ex.for_each_thread([&](int64_t t) { blur_cols(sm, Lo, present(t), t, T); });
        ex.sync();
        if (!kBackward) {
          ex.for_each_thread([&](int64_t t) {
            forward_zeta(sm, Lo, tl, k, present(t), t, T, st(t).sum, st(t).count);
          });
        } else {
          ex.for_each_thread([&](int64_t t) { backward_zeta(sm, Lo, tl, k, present(t), t, T); });
          ex.sync();
          ex.for_each_thread([&](int64_t t) { backward_diff(sm, Lo, tl, t, T); });
          ex.sync();
          ex.for_each_thread([&](int64_t t) { backward_blur_cols(sm, Lo, tl, t, T); });
          ex.sync();
          ex.for_each_thread([&](int64_t t) { backward_blur_rows(sm, Lo, tl, k, t, T); });
        }
      }
      if (kLoss && !kBackward) {
        ex.for_each_thread([&](int64_t t) { publish(sm, Lo, t, T, st(t)); });
        ex.sync();
        ex.for_each_thread([&](int64_t t) { reduce(sm, Lo, tile, t, T); });
      }
      // No barrier at the end of a tile or of a class: every buffer the last phases read is next
      // written two or more barriers later.
    }
  }
};

}  // namespace dtl
}  // namespace gscnn
