#pragma once
// The bodies of the CUDA gated_conv2d kernels, written as per-thread phases that only meet at
// block barriers. The CUDA kernels (cuda/gated_conv2d.cu) run each phase on every thread with
// __syncthreads() between phases; the CPU emulator (cpu/gated_conv2d_block_emulation.cpp) runs
// each phase for every thread of a block in turn, with `smem` a per-block array. So the CPU test
// suite runs the GPU kernels' own indexing, tiling, padding and reduction code. Races and memory
// model errors are beyond its reach: those need compute-sanitizer on a GPU.

#include "gated_conv2d_math.h"
#include "strided.h"

#include <ATen/OpMathType.h>

namespace gscnn {
namespace gcl {

// ---------------------------------------------------------------------------------------------
// Forward: one thread per pixel; the thread's column of the shared tile X holds its pixel's
// C + Cr input channels (read once from global memory, reused by every output channel).

template <typename scalar_t, typename acc_t, typename Gate>
struct ForwardBlock {
  Gate gate;
  Strided4d<const scalar_t> s, r;
  Strided4d<scalar_t> out, alpha;
  const scalar_t* W;  // Cout x C
  const scalar_t* b;  // Cout, or null
  int64_t P, C, Cr, Cout;

  static GSCNN_HD int64_t shared_elems(int64_t C, int64_t Cr, int64_t T) { return (C + Cr) * T; }

  GSCNN_HD void pixel(acc_t* X, int64_t p, int64_t t, int64_t T) const {
    const Pixel q = Pixel::of(p, s.px.HW, s.px.W);  // every tensor here has the same N, H, W
    const int64_t so = s.px.offset(q), ro = r.px.offset(q);
    for (int64_t c = 0; c < C; ++c) X[c * T + t] = static_cast<acc_t>(s.at(so, c));
    for (int64_t j = 0; j < Cr; ++j) X[(C + j) * T + t] = static_cast<acc_t>(r.at(ro, j));
    const acc_t a = sigmoid(gate.logit(TileColumn<acc_t>{X, X + C * T, C, T, t}, C + Cr));
    const acc_t f = acc_t(1) + a;
    alpha.at(alpha.px.offset(q), 0) = static_cast<scalar_t>(a);

    // out_o = b_o + (1 + alpha) * (W s)_o, four output channels per pass over the column.
    const int64_t oo = out.px.offset(q);
    int64_t o = 0;
    for (; o + 4 <= Cout; o += 4) {
      acc_t y[4] = {0, 0, 0, 0};
      const scalar_t* w = W + o * C;
      for (int64_t c = 0; c < C; ++c) {
        const acc_t u = X[c * T + t];
        y[0] += static_cast<acc_t>(w[c]) * u;
        y[1] += static_cast<acc_t>(w[C + c]) * u;
        y[2] += static_cast<acc_t>(w[2 * C + c]) * u;
        y[3] += static_cast<acc_t>(w[3 * C + c]) * u;
      }
      for (int k = 0; k < 4; ++k) store_out(oo, o + k, f, y[k]);
    }
    for (; o < Cout; ++o) {
      acc_t y = 0;
      for (int64_t c = 0; c < C; ++c) y += static_cast<acc_t>(W[o * C + c]) * X[c * T + t];
      store_out(oo, o, f, y);
    }
  }

  GSCNN_HD void store_out(int64_t oo, int64_t o, acc_t f, acc_t y) const {
    const acc_t bo = b ? static_cast<acc_t>(b[o]) : acc_t(0);
    out.at(oo, o) = static_cast<scalar_t>(bo + f * y);
  }
};

// ---------------------------------------------------------------------------------------------
// Backward (linear gate). Block `blk` walks tiles blk, blk + blocks, ... of T pixels. Per tile:
//   pixel phase  (thread t, pixel tile*T + t): load g, s, r into the shared tiles, compute ds and
//                dr, leave 1 + alpha and dz in the shared rows F and DZ (0 at padding pixels);
//   barrier;
//   reduce phase (thread t owns partial-sum entries t, t + T, ...): add the tile's contribution
//                to the block's row of `partials` (global memory; only thread t ever touches
//                entry t, so no atomics and no size limit from shared memory);
//   barrier (the next tile overwrites the shared tiles).

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

template <typename scalar_t, typename acc_t>
struct BackwardBlock {
  Strided4d<const scalar_t> g, g_alpha, s, r;  // g_alpha.data is null when alpha got no gradient
  Strided4d<scalar_t> ds, dr;
  const scalar_t* wg;  // C + Cr
  const scalar_t* bg;  // 1
  const scalar_t* W;   // Cout x C
  int64_t P;
  GradLayout L;

  GSCNN_HD int64_t num_tiles(int64_t T) const { return (P + T - 1) / T; }

  // row: this block's row of the partial sums (global memory).
  GSCNN_HD void zero_partials(acc_t* row, int64_t t, int64_t T) const {
    for (int64_t e = t; e < L.size(); e += T) row[e] = acc_t(0);
  }

  GSCNN_HD void pixel_phase(acc_t* smem, int64_t tile, int64_t t, int64_t T) const {
    const BackwardShared sh(L, T);
    acc_t *G = smem + sh.G, *S = smem + sh.S, *R = smem + sh.R;
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
      const acc_t a = sigmoid(gate.logit(TileColumn<acc_t>{S, R, C, ld, t}, C + Cr));
      f = acc_t(1) + a;

      // dalpha = g_alpha + sum_c gu_c s_c with gu = W^T g; gu is recomputed for ds rather than
      // stored (it would need another C rows of shared memory).
      acc_t dalpha = g_alpha.data ? static_cast<acc_t>(g_alpha.at(g_alpha.px.offset(q), 0))
                                  : acc_t(0);
      for (int64_t c = 0; c < C; ++c) dalpha += shape_column_grad(G, c, ld, t) * S[c * ld + t];
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
  GSCNN_HD acc_t shape_column_grad(const acc_t* G, int64_t c, int64_t ld, int64_t t) const {
    acc_t gu = 0;
    for (int64_t o = 0; o < L.Cout; ++o) gu += static_cast<acc_t>(W[o * L.C + c]) * G[o * ld + t];
    return gu;
  }

  GSCNN_HD void reduce_phase(const acc_t* smem, acc_t* row, int64_t t, int64_t T) const {
    const BackwardShared sh(L, T);
    for (int64_t e = t; e < L.size(); e += T) {
      tile_entry_accumulate<1>(L, e, smem + sh.G, smem + sh.S, smem + sh.R, smem + sh.F,
                               smem + sh.DZ, sh.ld, T, row + e);
    }
  }
};

}  // namespace gcl
}  // namespace gscnn

namespace gscnn {
namespace gcl {

// Host-side construction of the block descriptions from tensors (shared by the CUDA launchers and
// the CPU emulator). Weights must be contiguous; b, g_alpha may be undefined.
template <typename scalar_t, typename Gate>
ForwardBlock<scalar_t, at::opmath_type<scalar_t>, Gate> make_forward_block(
    const Gate& gate, const at::Tensor& s, const at::Tensor& r, const at::Tensor& out,
    const at::Tensor& alpha, const at::Tensor& W, const at::Tensor& b) {
  return {gate,
          strided4d<const scalar_t>(s),
          strided4d<const scalar_t>(r),
          strided4d<scalar_t>(out),
          strided4d<scalar_t>(alpha),
          W.const_data_ptr<scalar_t>(),
          b.defined() ? b.const_data_ptr<scalar_t>() : nullptr,
          s.size(0) * s.size(2) * s.size(3),
          s.size(1),
          r.size(1),
          W.size(0)};
}

template <typename scalar_t>
BackwardBlock<scalar_t, at::opmath_type<scalar_t>> make_backward_block(
    const at::Tensor& g, const at::Tensor& g_alpha, const at::Tensor& s, const at::Tensor& r,
    const at::Tensor& ds, const at::Tensor& dr, const at::Tensor& wg, const at::Tensor& bg,
    const at::Tensor& W) {
  return {strided4d<const scalar_t>(g),
          g_alpha.defined() ? strided4d<const scalar_t>(g_alpha)
                            : Strided4d<const scalar_t>{nullptr, 0, PixelIndexer{1, 1, 0, 0, 0}},
          strided4d<const scalar_t>(s),
          strided4d<const scalar_t>(r),
          strided4d<scalar_t>(ds),
          strided4d<scalar_t>(dr),
          wg.const_data_ptr<scalar_t>(),
          bg.const_data_ptr<scalar_t>(),
          W.const_data_ptr<scalar_t>(),
          s.size(0) * s.size(2) * s.size(3),
          GradLayout{s.size(1), r.size(1), W.size(0)}};
}

}  // namespace gcl
}  // namespace gscnn
