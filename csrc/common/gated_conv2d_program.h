#pragma once
// The block programs of the CUDA gated_conv2d kernels (common/exec.h): the code each block of
// cuda/gated_conv2d.cu runs, and that the emulator of the tests runs on the CPU. Shared-memory
// pointers are a template parameter (Ptr): a plain pointer on the GPU, a recording pointer in the
// emulator.

#include <ATen/OpMathType.h>

#include "exec.h"
#include "gated_conv2d_math.h"
#include "strided.h"

namespace gscnn {
namespace gcl {

// ---------------------------------------------------------------------------------------------
// Forward: one thread per pixel, grid-stride over the pixels. Staged: the thread's column of the
// shared tile X holds its pixel's C + Cr input channels (read once from global memory, reused by
// the gate and every output channel). Direct (layers too wide for the shared memory of any block
// size): the channels are read from global memory where they are used. Threads only touch their
// own column: no barrier.

// Channel d of the thread's pixel, from its column of the shared tile.
template <typename acc_t, typename Ptr>
struct StagedColumn {
  Ptr X;
  int64_t T, t;
  GSCNN_HD acc_t operator()(int64_t d) const { return static_cast<acc_t>(X[d * T + t]); }
};

// Channel d of the thread's pixel, from the inputs.
template <typename acc_t, typename scalar_t>
struct DirectColumn {
  const Strided4d<const scalar_t>& s;
  const Strided4d<const scalar_t>& r;
  int64_t so, ro, C;
  GSCNN_HD acc_t operator()(int64_t d) const {
    return static_cast<acc_t>(d < C ? s.at(so, d) : r.at(ro, d - C));
  }
};

template <typename scalar_t, typename Gate>
struct ForwardProgram {
  using acc_t = at::opmath_type<scalar_t>;
  static constexpr int kMaxThreads = 256;

  Gate gate;
  Strided4d<const scalar_t> s, r;
  Strided4d<scalar_t> out, alpha;
  const scalar_t* W;  // Cout x C
  const scalar_t* b;  // Cout, or null
  int64_t P, C, Cr, Cout;
  bool staged;

  // Shared memory of a staged block of T threads, in acc_t elements.
  static GSCNN_HD int64_t shared_elems(int64_t C, int64_t Cr, int64_t T) { return (C + Cr) * T; }

  template <typename Exec>
  GSCNN_HD void operator()(Exec& ex) const {
    auto X = ex.template shared<acc_t>();
    const int64_t T = ex.threads(), first = ex.block() * T, step = ex.grid() * T;
    ex.for_each_thread([&](int64_t t) {
      for (int64_t p = first + t; p < P; p += step) {
        const Pixel q = Pixel::of(p, s.px.HW, s.px.W);  // every tensor has the same N, H, W
        const int64_t so = s.px.offset(q), ro = r.px.offset(q);
        if (staged) {
          for (int64_t c = 0; c < C; ++c) X[c * T + t] = static_cast<acc_t>(s.at(so, c));
          for (int64_t j = 0; j < Cr; ++j) X[(C + j) * T + t] = static_cast<acc_t>(r.at(ro, j));
          pixel(StagedColumn<acc_t, decltype(X)>{X, T, t}, q);
        } else {
          pixel(DirectColumn<acc_t, scalar_t>{s, r, so, ro, C}, q);
        }
      }
    });
  }

  // alpha and out at pixel q; x(d) is input channel d of the pixel.
  template <typename Column>
  GSCNN_HD void pixel(const Column& x, const Pixel& q) const {
    const acc_t a = sigmoid(gate.logit(x, C + Cr));
    const acc_t f = acc_t(1) + a;
    alpha.at(alpha.px.offset(q), 0) = static_cast<scalar_t>(a);
    // out_o = b_o + (1 + alpha) * (W s)_o, four output channels per pass over the column.
    const int64_t oo = out.px.offset(q);
    int64_t o = 0;
    for (; o + 4 <= Cout; o += 4) {
      acc_t y[4] = {0, 0, 0, 0};
      const scalar_t* w = W + o * C;
      for (int64_t c = 0; c < C; ++c) {
        const acc_t u = x(c);
        y[0] += static_cast<acc_t>(w[c]) * u;
        y[1] += static_cast<acc_t>(w[C + c]) * u;
        y[2] += static_cast<acc_t>(w[2 * C + c]) * u;
        y[3] += static_cast<acc_t>(w[3 * C + c]) * u;
      }
      for (int k = 0; k < 4; ++k) store_out(oo, o + k, f, y[k]);
    }
    for (; o < Cout; ++o) {
      acc_t y = 0;
      for (int64_t c = 0; c < C; ++c) y += static_cast<acc_t>(W[o * C + c]) * x(c);
      store_out(oo, o, f, y);
    }
  }

  GSCNN_HD void store_out(int64_t oo, int64_t o, acc_t f, acc_t y) const {
    const acc_t bo = b ? static_cast<acc_t>(b[o]) : acc_t(0);
    out.at(oo, o) = static_cast<scalar_t>(bo + f * y);
  }
};

// ---------------------------------------------------------------------------------------------
// Forward for the shape stream's layers: linear gate, C = C_out = kC in {8, 16, 32}. The block
// first stages the parameters in shared memory (W transposed to [c][o], so that each step of the
// inner loop reads four output channels' weights with one vector load that every thread of the
// warp shares: a broadcast), then each thread takes its pixels grid-stride: the kC channels of s
// into registers (read once), the gate logit, then out = b + (1 + alpha) * W s with kC
// accumulators in registers. Per pixel: kC + Cr global loads, kC + 1 global stores, and
// kC * kC / 4 shared loads against kC * kC FMAs -- the generic program issued four global
// (uniform-address) weight loads and a shared load per channel per four outputs.

template <typename scalar_t, int kC>
struct ForwardProgramSmallC {
  using acc_t = at::opmath_type<scalar_t>;
  static constexpr int kMaxThreads = 256;
  // Registers: kC channels and kC accumulators per thread. Four blocks of 256 threads per SM
  // (64 registers each) where that fits them (kC <= 16), two (128) for kC = 32: a memory-bound
  // kernel wants many warps in flight.
  static constexpr int kMinBlocks = kC <= 16 ? 4 : 2;
  static_assert(kC % 4 == 0, "four output channels per vector load");

  Strided4d<const scalar_t> s, r;
  Strided4d<scalar_t> out, alpha;
  const scalar_t* W;   // kC x kC, [o][c]
  const scalar_t* b;   // kC, or null
  const scalar_t* wg;  // kC + Cr
  const scalar_t* bg;  // 1
  int64_t P, Cr;

  // Shared memory, in acc_t elements: Wt[c][o] (kC * kC), bias (kC), gate weights (kC + Cr),
  // gate bias (1).
  static GSCNN_HD int64_t shared_elems(int64_t Cr) { return kC * kC + kC + kC + Cr + 1; }

  template <typename Exec>
  GSCNN_HD void operator()(Exec& ex) const {
    auto sm = ex.template shared<acc_t>();
    const auto Wt = sm, B = sm + kC * kC, WG = sm + kC * kC + kC;
    const int64_t T = ex.threads(), first = ex.block() * T, step = ex.grid() * T;
    const int64_t n_params = shared_elems(Cr);
    ex.for_each_thread([&](int64_t t) {
      for (int64_t e = t; e < n_params; e += T) {
        acc_t v;
        if (e < kC * kC) {
          v = static_cast<acc_t>(W[(e % kC) * kC + e / kC]);  // Wt[c][o] = W[o][c], c = e / kC
        } else if (e < kC * kC + kC) {
          v = b ? static_cast<acc_t>(b[e - kC * kC]) : acc_t(0);
        } else if (e < n_params - 1) {
          v = static_cast<acc_t>(wg[e - kC * kC - kC]);
        } else {
          v = static_cast<acc_t>(bg[0]);
        }
        sm[e] = v;
      }
    });
    ex.sync();  // every thread reads every parameter
    ex.for_each_thread([&](int64_t t) {
      for (int64_t p = first + t; p < P; p += step) pixel(Wt, B, WG, p);
    });
  }

  template <typename Ptr>
  GSCNN_HD void pixel(const Ptr& Wt, const Ptr& B, const Ptr& WG, int64_t p) const {
    const Pixel q = Pixel::of(p, s.px.HW, s.px.W);  // every tensor has the same N, H, W
    const int64_t so = s.px.offset(q), ro = r.px.offset(q);
    acc_t x[kC];  // in registers: every loop over it below is unrolled
    acc_t z = static_cast<acc_t>(WG[kC + Cr]);
    GSCNN_UNROLL
    for (int c = 0; c < kC; ++c) {
      x[c] = static_cast<acc_t>(s.at(so, c));
      z += static_cast<acc_t>(WG[c]) * x[c];
    }
    for (int64_t j = 0; j < Cr; ++j)
      z += static_cast<acc_t>(WG[kC + j]) * static_cast<acc_t>(r.at(ro, j));
    const acc_t a = sigmoid(z);
    const acc_t f = acc_t(1) + a;
    alpha.at(alpha.px.offset(q), 0) = static_cast<scalar_t>(a);
    acc_t y[kC];
    GSCNN_UNROLL
    for (int o = 0; o < kC; ++o) y[o] = acc_t(0);
    GSCNN_UNROLL
    for (int c = 0; c < kC; ++c) {
      const Ptr w = Wt + c * kC;
      GSCNN_UNROLL
      for (int o = 0; o < kC; ++o) y[o] += static_cast<acc_t>(w[o]) * x[c];
    }
    const int64_t oo = out.px.offset(q);
    GSCNN_UNROLL
    for (int o = 0; o < kC; ++o)
      out.at(oo, o) = static_cast<scalar_t>(static_cast<acc_t>(B[o]) + f * y[o]);
  }
};

// ---------------------------------------------------------------------------------------------
// Backward (linear gate). The grid has one block per row of `partials` (gcl::num_partials); block
// blk walks tiles blk, blk + grid, ... of T pixels:
//   pixel phase  (thread t, pixel tile*T + t): load g, s, r into the shared tiles, compute ds and
//                dr, leave 1 + alpha and dz in the shared rows F and DZ (0 at padding pixels);
//   barrier      (the reduce phase reads every thread's column);
//   reduce phase (thread t owns partial-sum entries t, t + T, ...): add the tile's contribution
//                to the block's row of `partials` (global memory; only thread t ever touches
//                entry t, so no atomics and no size limit from shared memory);
// and a barrier between two tiles (the next pixel phase overwrites what the reduce phase read).

// Shared memory of the backward block, in acc_t elements: tiles G (Cout rows), S (C), R (Cr), F and
// DZ (one row each), rows padded to T + 1 so that the reduce phase, where a warp reads one pixel
// of 32 different rows, hits 32 different banks.
struct BackwardShared {
  int64_t ld, G, S, R, F, DZ, total;
  GSCNN_HD BackwardShared(const GradLayout& L, int64_t T) : ld(T + 1) {
    G = 0;
    S = G + L.Cout * ld;
    R = S + L.C * ld;
    F = R + L.Cr * ld;
    DZ = F + ld;
    total = DZ + ld;
  }
};

template <typename scalar_t>
struct BackwardProgram {
  using acc_t = at::opmath_type<scalar_t>;
  static constexpr int kMaxThreads = 256;
  static constexpr bool kGlobalScratch = true;  // large problems: buffers in global memory

  Strided4d<const scalar_t> g, g_alpha, s, r;  // g_alpha.data is null when alpha got no gradient
  Strided4d<scalar_t> ds, dr;
  const scalar_t* wg;  // C + Cr
  const scalar_t* bg;  // 1
  const scalar_t* W;   // Cout x C
  acc_t* partials;     // (grid, L.size())
  int64_t P;
  GradLayout L;

  GSCNN_HD int64_t num_tiles(int64_t T) const { return (P + T - 1) / T; }

  template <typename Exec>
  GSCNN_HD void operator()(Exec& ex) const {
    auto smem = ex.template shared<acc_t>();
    const int64_t T = ex.threads();
    acc_t* row = partials + ex.block() * L.size();
    ex.for_each_thread([&](int64_t t) {
      for (int64_t e = t; e < L.size(); e += T) row[e] = acc_t(0);
    });
    for (int64_t tile = ex.block(); tile < num_tiles(T); tile += ex.grid()) {
      if (tile != ex.block()) ex.sync();  // the last reduce phase read what this one overwrites
      ex.for_each_thread([&](int64_t t) { pixel_phase(smem, tile, t, T); });
      ex.sync();
      ex.for_each_thread([&](int64_t t) { reduce_phase(smem, row, t, T); });
    }
  }

  template <typename Ptr>
  GSCNN_HD void pixel_phase(Ptr smem, int64_t tile, int64_t t, int64_t T) const {
    const BackwardShared sh(L, T);
    const auto G = smem + sh.G, S = smem + sh.S, R = smem + sh.R;
    const int64_t C = L.C, Cr = L.Cr, Cout = L.Cout, ld = sh.ld;
    const int64_t p = tile * T + t;
    acc_t f = 0, dz = 0;
    if (p < P) {
      const Pixel q = Pixel::of(p, s.px.HW, s.px.W);  // every tensor has the same N, H, W
      const int64_t go = g.px.offset(q), so = s.px.offset(q), ro = r.px.offset(q);
      for (int64_t o = 0; o < Cout; ++o) G[o * ld + t] = static_cast<acc_t>(g.at(go, o));
      for (int64_t c = 0; c < C; ++c) S[c * ld + t] = static_cast<acc_t>(s.at(so, c));
      for (int64_t j = 0; j < Cr; ++j) R[j * ld + t] = static_cast<acc_t>(r.at(ro, j));
      const LinearGate<acc_t, scalar_t> gate{wg, bg};
      const acc_t a = sigmoid(gate.logit(TileColumn<acc_t, decltype(S)>{S, R, C, ld, t}, C + Cr));
      f = acc_t(1) + a;

      // dalpha = g_alpha + sum_c gu_c s_c with gu = W^T g; gu is recomputed for ds rather than
      // stored (it would need another C rows of shared memory).
      acc_t dalpha = g_alpha.data ? static_cast<acc_t>(g_alpha.at(g_alpha.px.offset(q), 0))
                                  : acc_t(0);
      for (int64_t c = 0; c < C; ++c)
        dalpha += shape_column_grad(G, c, ld, t) * static_cast<acc_t>(S[c * ld + t]);
      dz = gate_logit_grad(dalpha, a);

      const int64_t dso = ds.px.offset(q), dro = dr.px.offset(q);
      for (int64_t c = 0; c < C; ++c) {
        const acc_t gu = shape_column_grad(G, c, ld, t);
        ds.at(dso, c) = static_cast<scalar_t>(shape_grad(gu, f, dz, static_cast<acc_t>(wg[c])));
      }
      for (int64_t j = 0; j < Cr; ++j)
        dr.at(dro, j) = static_cast<scalar_t>(dz * static_cast<acc_t>(wg[C + j]));
    } else {  // padding pixel of the last tile: contributes nothing to the reduction
      for (int64_t o = 0; o < Cout; ++o) G[o * ld + t] = acc_t(0);
      for (int64_t c = 0; c < C; ++c) S[c * ld + t] = acc_t(0);
      for (int64_t j = 0; j < Cr; ++j) R[j * ld + t] = acc_t(0);
    }
    smem[sh.F + t] = f;
    smem[sh.DZ + t] = dz;
  }

  // gu_c = (W^T g)_c for the pixel in column t of G.
  template <typename Ptr>
  GSCNN_HD acc_t shape_column_grad(const Ptr& G, int64_t c, int64_t ld, int64_t t) const {
    acc_t gu = 0;
    for (int64_t o = 0; o < L.Cout; ++o)
      gu += static_cast<acc_t>(W[o * L.C + c]) * static_cast<acc_t>(G[o * ld + t]);
    return gu;
  }

  template <typename Ptr>
  GSCNN_HD void reduce_phase(Ptr smem, acc_t* row, int64_t t, int64_t T) const {
    const BackwardShared sh(L, T);
    for (int64_t e = t; e < L.size(); e += T) {
      tile_entry_accumulate<1, acc_t>(L, e, smem + sh.G, smem + sh.S, smem + sh.R, smem + sh.F,
                                      smem + sh.DZ, sh.ld, T, row + e);
    }
  }
};

}  // namespace gcl
}  // namespace gscnn
