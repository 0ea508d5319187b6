#pragma once
// The arithmetic of the Gated Convolutional Layer (paper eq. 1-2), written once for the CPU and
// the CUDA kernels. Everything here works on one pixel (or one reduction entry) at a time, in the
// accumulation type acc_t (float for float/half/bfloat16 inputs, double for double).
//
//   x      = [s || r]                         (D = C + Cr channels at one pixel)
//   z      = gate logit of x                  (linear: w_g . x + b_g; mlp: see MlpGate)
//   alpha  = sigmoid(z)
//   out_o  = b_o + sum_c W_oc * s_c * (1 + alpha) = b_o + (1 + alpha) * (W s)_o
//
// Backward, for g_o = dL/dout_o and g_alpha = dL/dalpha at the pixel:
//   gu_c   = sum_o W_oc g_o                   (gradient w.r.t. u = s * (1 + alpha))
//   dalpha = g_alpha + sum_c gu_c s_c
//   dz     = dalpha * alpha * (1 - alpha)
//   ds_c   = gu_c (1 + alpha) + dz * w_g[c]   dr_j = dz * w_g[C + j]
//   dW_oc  = sum_pixels g_o u_c               db_o = sum_pixels g_o
//   dw_g_d = sum_pixels dz x_d                db_g = sum_pixels dz

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "device_intrinsics.h"
#include "host_device.h"

namespace gscnn {
namespace gcl {


template <typename acc_t>
GSCNN_HD acc_t sigmoid(acc_t z) {
  // Through e = exp(-|z|) <= 1, which never overflows; one division, no branch.
  const acc_t az = z < acc_t(0) ? -z : z;
  const acc_t e = hd::exp_nonpositive(-az);
  const acc_t num = z >= acc_t(0) ? acc_t(1) : e;
  return num / (acc_t(1) + e);
}

// d sigmoid(z) / dz expressed through alpha = sigmoid(z), times the incoming gradient.
template <typename acc_t>
GSCNN_HD acc_t gate_logit_grad(acc_t dalpha, acc_t alpha) {
  return dalpha * alpha * (acc_t(1) - alpha);
}

// Gradient w.r.t. one shape channel: through the modulation s * (1 + alpha) and through the gate.
template <typename acc_t>
GSCNN_HD acc_t shape_grad(acc_t gu, acc_t one_plus_alpha, acc_t dz, acc_t gate_w) {
  return gu * one_plus_alpha + dz * gate_w;
}

// Pixel p of an (N, ., H, W) tensor, pixels numbered in (n, h, w) order. Found once per pixel
// (two integer divisions, slow on GPUs) and then used for every tensor of the same N, H, W.
struct Pixel {
  int64_t n, h, w;
  GSCNN_HD static Pixel of(int64_t p, int64_t HW, int64_t W) {
    const int64_t n = p / HW;
    const int64_t hw = p - n * HW;
    const int64_t h = hw / W;
    return Pixel{n, h, hw - h * W};
  }
};

// Element offset of channel 0 of a pixel. Reading through the strides lets the kernels take
// NCHW, channels_last and sliced views without a copy.
struct PixelIndexer {
  int64_t HW, W, sN, sH, sW;
  GSCNN_HD int64_t offset(const Pixel& q) const { return q.n * sN + q.h * sH + q.w * sW; }
  GSCNN_HD int64_t offset(int64_t p) const { return offset(Pixel::of(p, HW, W)); }
};

// Input channel d = [s || r]_d of pixel t of a tile held in [channel][pixel] buffers with
// leading dimension ld (Ptr: a pointer, or the emulator's recording pointer). The gates read
// their input through this.
template <typename acc_t, typename Ptr = const acc_t*>
struct TileColumn {
  Ptr S;  // C rows
  Ptr R;  // Cr rows
  int64_t C, ld, t;
  GSCNN_HD acc_t operator()(int64_t d) const {
    return d < C ? static_cast<acc_t>(S[d * ld + t]) : static_cast<acc_t>(R[(d - C) * ld + t]);
  }
};

// Linear gate of the paper: z = w_g . x + b_g. `x(d)` returns input channel d at the pixel.
template <typename acc_t, typename w_t>
struct LinearGate {
  using weight_type = w_t;
  const w_t* weight;  // D entries
  const w_t* bias;    // 1 entry (read in the kernel: no host synchronisation)
  template <typename X>
  GSCNN_HD acc_t logit(const X& x, int64_t D) const {
    acc_t z = static_cast<acc_t>(bias[0]);
    for (int64_t d = 0; d < D; ++d) z += static_cast<acc_t>(weight[d]) * x(d);
    return z;
  }
  // The same for the T pixels of a tile (CPU kernels: pixels innermost, so the loops vectorise):
  // channel c of s at S + c * ldS, channel j of r at R + j * ldR.
  void logit_tile(const acc_t* S, int64_t ldS, const acc_t* R, int64_t ldR, int64_t C, int64_t Cr,
                  int64_t T, acc_t* Z, acc_t* /*scratch*/) const {
    for (int64_t t = 0; t < T; ++t) Z[t] = static_cast<acc_t>(bias[0]);
    for (int64_t d = 0; d < C + Cr; ++d) {
      const acc_t w = static_cast<acc_t>(weight[d]);
      const acc_t* x = d < C ? S + d * ldS : R + (d - C) * ldR;
      for (int64_t t = 0; t < T; ++t) Z[t] += w * x[t];
    }
  }
};

// The dtype of the tensors a gate (and the kernel it is handed to) works on.
template <typename Gate>
using gate_scalar_t = typename std::decay_t<Gate>::weight_type;

// The authors' gate with its BatchNorms folded in (eval mode): z = w2 . relu(W1 x + b1) + b2,
// W1 of shape (M, D).
template <typename acc_t, typename w_t>
struct MlpGate {
  using weight_type = w_t;
  const w_t* w1;  // M x D, row-major
  const w_t* b1;  // M
  const w_t* w2;  // M
  const w_t* b2;  // 1
  int64_t M;
  template <typename X>
  GSCNN_HD acc_t logit(const X& x, int64_t D) const {
    acc_t z = static_cast<acc_t>(b2[0]);
    for (int64_t m = 0; m < M; ++m) {
      acc_t h = static_cast<acc_t>(b1[m]);
      const w_t* row = w1 + m * D;
      for (int64_t d = 0; d < D; ++d) h += static_cast<acc_t>(row[d]) * x(d);
      z += static_cast<acc_t>(w2[m]) * (h > acc_t(0) ? h : acc_t(0));
    }
    return z;
  }
  // The same for the T pixels of a tile (channels as in LinearGate::logit_tile); scratch holds T
  // values.
  void logit_tile(const acc_t* S, int64_t ldS, const acc_t* R, int64_t ldR, int64_t C, int64_t Cr,
                  int64_t T, acc_t* Z, acc_t* H) const {
    const int64_t D = C + Cr;
    for (int64_t t = 0; t < T; ++t) Z[t] = static_cast<acc_t>(b2[0]);
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t t = 0; t < T; ++t) H[t] = static_cast<acc_t>(b1[m]);
      for (int64_t d = 0; d < D; ++d) {
        const acc_t w = static_cast<acc_t>(w1[m * D + d]);
        const acc_t* x = d < C ? S + d * ldS : R + (d - C) * ldR;
        for (int64_t t = 0; t < T; ++t) H[t] += w * x[t];
      }
      // relu(h) = (h + |h|) / 2, exact, and written so that it vectorises (a max would not).
      const acc_t w = static_cast<acc_t>(w2[m]);
      for (int64_t t = 0; t < T; ++t) {
        const acc_t h = H[t], ah = h < acc_t(0) ? -h : h;
        Z[t] += w * (acc_t(0.5) * (h + ah));
      }
    }
  }
};

// Where each parameter gradient lives in the vector of per-block partial sums that the backward
// kernels reduce deterministically (every block writes its own row; rows are summed in order).
struct GradLayout {
  int64_t C, Cr, Cout;
  GSCNN_HD int64_t weight_offset() const { return 0; }                 // Cout x C
  GSCNN_HD int64_t bias_offset() const { return Cout * C; }            // Cout
  GSCNN_HD int64_t gate_weight_offset() const { return Cout * C + Cout; }  // C + Cr
  GSCNN_HD int64_t gate_bias_offset() const { return Cout * C + Cout + C + Cr; }  // 1
  GSCNN_HD int64_t size() const { return Cout * C + Cout + C + Cr + 1; }
};

// One entry e of the parameter-gradient partial sums of the GPU backward (generic program),
// accumulated over the T pixels of a tile held in [channel][pixel] buffers with leading dimension
// ld: G = grad_out, S = s, R = r, F = 1 + alpha and DZ = dL/dz (F and DZ are 0 at padding pixels,
// which so add nothing), added in pixel order to *sum. Ptr: a pointer, or the emulator's recording
// pointer. (The CPU kernels compute the same sums as outer products:
// cpu/gated_conv2d_kernels_impl.h.)
template <typename acc_t, typename Ptr>
GSCNN_HD void tile_entry_accumulate(const GradLayout& Ly, int64_t e, Ptr G, Ptr S, Ptr R, Ptr F,
                                    Ptr DZ, int64_t ld, int64_t T, acc_t* sum) {
  acc_t v = *sum;  // a local copy: the compiler may keep it in a register (sum could alias G...)
  auto at = [](const Ptr& p, int64_t i) { return static_cast<acc_t>(p[i]); };
  if (e < Ly.bias_offset()) {  // dW[o][c] = sum g_o * s_c * (1 + alpha)
    const Ptr g = G + (e / Ly.C) * ld;
    const Ptr x = S + (e % Ly.C) * ld;
    for (int64_t t = 0; t < T; ++t) v += at(g, t) * at(x, t) * at(F, t);
  } else if (e < Ly.gate_weight_offset()) {  // db[o] = sum g_o
    const Ptr g = G + (e - Ly.bias_offset()) * ld;
    for (int64_t t = 0; t < T; ++t) v += at(g, t);
  } else if (e < Ly.gate_bias_offset()) {  // dw_g[d] = sum dz * x_d
    const int64_t d = e - Ly.gate_weight_offset();
    const Ptr x = d < Ly.C ? S + d * ld : R + (d - Ly.C) * ld;
    for (int64_t t = 0; t < T; ++t) v += at(DZ, t) * at(x, t);
  } else {  // db_g = sum dz
    for (int64_t t = 0; t < T; ++t) v += at(DZ, t);
  }
  *sum = v;
}

// The most rows of `entries` partial sums a backward pass may use: at most 2^25 partial sums in
// all (128 MiB in float32), so that very wide layers still fit. At least 1.
GSCNN_HD int64_t max_partial_rows(int64_t entries) {
  constexpr int64_t kMaxSums = int64_t(1) << 25;
  const int64_t budget = kMaxSums / (entries > 0 ? entries : 1);
  return budget > 1 ? budget : 1;
}

// Rows of per-block partial sums of a GPU backward pass over P pixels, each row holding the
// `entries` = GradLayout::size() parameter-gradient sums: one per 256 pixels, at most 1024 and at
// most max_partial_rows. A function of the problem only (neither of the thread count nor of the
// device).
GSCNN_HD int64_t num_partials(int64_t P, int64_t entries) {
  constexpr int64_t kMaxRows = 1024;
  int64_t rows = (P + 255) / 256;
  rows = rows < kMaxRows ? rows : kMaxRows;
  const int64_t budget = max_partial_rows(entries);
  rows = rows < budget ? rows : budget;
  return rows > 1 ? rows : 1;
}

}  // namespace gcl
}  // namespace gscnn
