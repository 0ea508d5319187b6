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

#include "host_device.h"


namespace gscnn {
namespace gcl {

#if !defined(__CUDA_ARCH__)
// exp(x) for x <= 0 in float: relative error below 1e-7 for x >= -87, about 1e-38 absolute below.
// Branch-free (the clamp is written with fabs, not as a max, which GCC will not vectorise without
// -ffinite-math-only), so that the CPU loops over the pixels of a tile vectorise.
inline float exp_nonpositive(float x) {
  const float d = x + 87.0f;
  x -= 0.5f * (d - __builtin_fabsf(d));  // x = max(x, -87), exact for x >= -87
  const int32_t n = static_cast<int32_t>(x * 1.44269504088896341f - 0.5f);  // round(x / ln 2)
  const float nf = static_cast<float>(n);
  const float r = (x - nf * 0.693359375f) + nf * 2.12194440e-4f;  // x - n ln 2, two-part ln 2
  float p = 1.9875691500e-4f;  // Cephes expf polynomial on [-ln2/2, ln2/2]
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * __builtin_bit_cast(float, (n + 127) << 23);  // times 2^n
}
#endif

template <typename acc_t>
GSCNN_HD acc_t sigmoid(acc_t z) {
  // Through e = exp(-|z|) <= 1, which never overflows; one division, no branch.
  const acc_t az = z < acc_t(0) ? -z : z;
#if defined(__CUDA_ARCH__)
  const acc_t e = exp(-az);
#else
  acc_t e;
  if constexpr (std::is_same_v<acc_t, float>) {
    e = exp_nonpositive(-az);
  } else {
    e = std::exp(-az);
  }
#endif
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
// leading dimension ld. The gates read their input through this.
template <typename acc_t>
struct TileColumn {
  const acc_t* S;  // C rows
  const acc_t* R;  // Cr rows
  int64_t C, ld, t;
  GSCNN_HD acc_t operator()(int64_t d) const { return d < C ? S[d * ld + t] : R[(d - C) * ld + t]; }
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
  // The same for the T pixels of a tile (CPU kernels: pixels innermost, so the loops vectorise).
  void logit_tile(const acc_t* S, const acc_t* R, int64_t C, int64_t Cr, int64_t ld, int64_t T,
                  acc_t* Z, acc_t* /*scratch*/) const {
    for (int64_t t = 0; t < T; ++t) Z[t] = static_cast<acc_t>(bias[0]);
    for (int64_t d = 0; d < C + Cr; ++d) {
      const acc_t w = static_cast<acc_t>(weight[d]);
      const acc_t* x = d < C ? S + d * ld : R + (d - C) * ld;
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
  // The same for the T pixels of a tile; scratch holds T values.
  void logit_tile(const acc_t* S, const acc_t* R, int64_t C, int64_t Cr, int64_t ld, int64_t T,
                  acc_t* Z, acc_t* H) const {
    const int64_t D = C + Cr;
    for (int64_t t = 0; t < T; ++t) Z[t] = static_cast<acc_t>(b2[0]);
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t t = 0; t < T; ++t) H[t] = static_cast<acc_t>(b1[m]);
      for (int64_t d = 0; d < D; ++d) {
        const acc_t w = static_cast<acc_t>(w1[m * D + d]);
        const acc_t* x = d < C ? S + d * ld : R + (d - C) * ld;
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

// One entry e of the parameter-gradient partial sums, accumulated over the T pixels of a tile
// held in [channel][pixel] buffers with leading dimension ld: G = grad_out, S = s, R = r,
// F = 1 + alpha and DZ = dL/dz (F and DZ are 0 at padding pixels, which so add nothing).
// `lanes[l]` receives the sum over pixels t = l (mod L) (T a multiple of L): L = 1 on the GPU
// (one running sum per thread), a vector width on the CPU, where lane-wise adds vectorise without
// reassociating a sum; the lanes are added once, at the end.
template <int L, typename acc_t>
GSCNN_HD void tile_entry_accumulate(const GradLayout& Ly, int64_t e, const acc_t* G,
                                    const acc_t* S, const acc_t* R, const acc_t* F,
                                    const acc_t* DZ, int64_t ld, int64_t T, acc_t* lanes) {
  acc_t v[L];  // a local copy: the compiler may keep it in registers (lanes could alias G...)
  for (int l = 0; l < L; ++l) v[l] = lanes[l];
  if (e < Ly.bias_offset()) {  // dW[o][c] = sum g_o * s_c * (1 + alpha)
    const acc_t* g = G + (e / Ly.C) * ld;
    const acc_t* x = S + (e % Ly.C) * ld;
    for (int64_t t = 0; t < T; t += L)
      for (int l = 0; l < L; ++l) v[l] += g[t + l] * x[t + l] * F[t + l];
  } else if (e < Ly.gate_weight_offset()) {  // db[o] = sum g_o
    const acc_t* g = G + (e - Ly.bias_offset()) * ld;
    for (int64_t t = 0; t < T; t += L)
      for (int l = 0; l < L; ++l) v[l] += g[t + l];
  } else if (e < Ly.gate_bias_offset()) {  // dw_g[d] = sum dz * x_d
    const int64_t d = e - Ly.gate_weight_offset();
    const acc_t* x = d < Ly.C ? S + d * ld : R + (d - Ly.C) * ld;
    for (int64_t t = 0; t < T; t += L)
      for (int l = 0; l < L; ++l) v[l] += DZ[t + l] * x[t + l];
  } else {  // db_g = sum dz
    for (int64_t t = 0; t < T; t += L)
      for (int l = 0; l < L; ++l) v[l] += DZ[t + l];
  }
  for (int l = 0; l < L; ++l) lanes[l] = v[l];
}

// Number of partial-sum rows for a backward pass over `num_tiles` tiles of pixels. A function of
// the problem size only (never of the thread count or the GPU), so results are reproducible.
GSCNN_HD int64_t num_partials(int64_t num_tiles) {
  constexpr int64_t kMaxPartials = 1024;
  return num_tiles < kMaxPartials ? num_tiles : kMaxPartials;
}

}  // namespace gcl
}  // namespace gscnn
