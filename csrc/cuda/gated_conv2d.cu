// CUDA kernels of the Gated Convolutional Layer (see common/gated_conv2d_math.h for the math).
//
// One thread per pixel. Forward: the thread loads its pixel's channels into a column of a
// shared-memory tile [channel][thread] (read once from global memory, then reused by every output
// channel), computes the gate and writes out and alpha: nothing of size N*C*H*W besides the
// output touches global memory. Backward: each block walks a fixed set of tiles; per tile the
// threads compute ds and dr for their pixels, then the block adds the tile's contribution to the
// parameter gradients (one entry per thread, fixed order) into a per-block row of partial sums;
// the rows are summed in order afterwards. No atomics: results are bitwise reproducible.
//
// Status: compiled in CI (sm_90); see benchmarks/RESULTS.md for where it has run on a GPU.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "../common/gated_conv2d_checks.h"
#include "../common/gated_conv2d_grads.h"
#include "../common/gated_conv2d_math.h"
#include "../common/strided.h"

namespace gscnn {
namespace {

constexpr const char* kForwardOp = "gscnn_ops.gated_conv2d";
constexpr const char* kMlpOp = "gscnn_ops.gated_conv2d_mlp";
constexpr const char* kBackwardOp = "gscnn_ops.gated_conv2d_backward";
constexpr size_t kDefaultSharedBytes = 48 * 1024;

struct LaunchConfig {
  int threads;
  size_t shared_bytes;
};

// The largest block (256 down to 32 threads) whose shared memory fits the default 48 KiB. Wider
// layers opt in to the device's larger shared memory, up to its limit.
template <typename Kernel, typename SharedBytes>
LaunchConfig pick_block(Kernel kernel, SharedBytes shared_bytes, const char* op, int device) {
  for (int threads : {256, 128, 64, 32}) {
    if (shared_bytes(threads) <= kDefaultSharedBytes) return {threads, shared_bytes(threads)};
  }
  const size_t need = shared_bytes(32);
  int optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  TORCH_CHECK(need <= static_cast<size_t>(optin), op,
              ": too many channels for the CUDA kernel: it needs ", need,
              " bytes of shared memory per block and the device allows ", optin);
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(need)));
  return {32, need};
}

int multiprocessor_count(int device) {
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

template <typename acc_t>
__device__ acc_t* shared_buffer() {
  extern __shared__ __align__(sizeof(double)) unsigned char shared_raw[];
  return reinterpret_cast<acc_t*>(shared_raw);
}

// ---------------------------------------------------------------------------------------------
// Forward

template <typename scalar_t, typename acc_t, typename Gate>
__global__ void forward_kernel(Gate gate, Strided4d<const scalar_t> sv, Strided4d<const scalar_t> rv,
                               Strided4d<scalar_t> ov, Strided4d<scalar_t> av,
                               const scalar_t* __restrict__ W, const scalar_t* __restrict__ b,
                               int64_t P, int64_t C, int64_t Cr, int64_t Cout) {
  acc_t* X = shared_buffer<acc_t>();  // (C + Cr) x blockDim, this thread's column only
  const int64_t T = blockDim.x, t = threadIdx.x;
  const gcl::TileColumn<acc_t> x{X, X + C * T, C, T, t};
  for (int64_t p = blockIdx.x * T + t; p < P; p += static_cast<int64_t>(gridDim.x) * T) {
    const int64_t so = sv.px.offset(p), ro = rv.px.offset(p);
    for (int64_t c = 0; c < C; ++c) X[c * T + t] = static_cast<acc_t>(sv.at(so, c));
    for (int64_t j = 0; j < Cr; ++j) X[(C + j) * T + t] = static_cast<acc_t>(rv.at(ro, j));
    const acc_t a = gcl::sigmoid(gate.logit(x, C + Cr));
    const acc_t f = acc_t(1) + a;
    av.at(av.px.offset(p), 0) = static_cast<scalar_t>(a);

    // out_o = b_o + (1 + alpha) * (W s)_o, four output channels per pass over s.
    const int64_t oo = ov.px.offset(p);
    int64_t o = 0;
    for (; o + 4 <= Cout; o += 4) {
      acc_t y0 = 0, y1 = 0, y2 = 0, y3 = 0;
      const scalar_t* w = W + o * C;
      for (int64_t c = 0; c < C; ++c) {
        const acc_t u = X[c * T + t];
        y0 += static_cast<acc_t>(w[c]) * u;
        y1 += static_cast<acc_t>(w[C + c]) * u;
        y2 += static_cast<acc_t>(w[2 * C + c]) * u;
        y3 += static_cast<acc_t>(w[3 * C + c]) * u;
      }
      const acc_t ys[4] = {y0, y1, y2, y3};
      for (int k = 0; k < 4; ++k) {
        const acc_t bo = b ? static_cast<acc_t>(b[o + k]) : acc_t(0);
        ov.at(oo, o + k) = static_cast<scalar_t>(bo + f * ys[k]);
      }
    }
    for (; o < Cout; ++o) {
      acc_t y = 0;
      for (int64_t c = 0; c < C; ++c) y += static_cast<acc_t>(W[o * C + c]) * X[c * T + t];
      const acc_t bo = b ? static_cast<acc_t>(b[o]) : acc_t(0);
      ov.at(oo, o) = static_cast<scalar_t>(bo + f * y);
    }
  }
}

template <typename scalar_t, typename MakeGate>
std::tuple<at::Tensor, at::Tensor> launch_forward(const char* op, const GclSizes& z,
                                                  const at::Tensor& s, const at::Tensor& r,
                                                  const at::Tensor& weight,
                                                  const std::optional<at::Tensor>& bias,
                                                  MakeGate make_gate) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto opts = s.options().memory_format(output_memory_format(s));
  auto out = at::empty({z.N, z.Cout, z.H, z.W}, opts);
  auto alpha = at::empty({z.N, 1, z.H, z.W}, opts);
  if (z.pixels() == 0) return {out, alpha};

  const auto w = weight.contiguous();
  const auto b = bias.has_value() ? bias->contiguous() : at::Tensor();
  const auto gate = make_gate();
  auto kernel = forward_kernel<scalar_t, acc_t, std::decay_t<decltype(gate)>>;
  const int device = s.get_device();
  const auto cfg = pick_block(
      kernel, [&](int threads) { return static_cast<size_t>(z.D() * threads) * sizeof(acc_t); },
      op, device);
  const int64_t blocks = std::min<int64_t>((z.pixels() + cfg.threads - 1) / cfg.threads,
                                           static_cast<int64_t>(multiprocessor_count(device)) * 32);
  kernel<<<blocks, cfg.threads, cfg.shared_bytes, c10::cuda::getCurrentCUDAStream()>>>(
      gate, strided4d<const scalar_t>(s), strided4d<const scalar_t>(r), strided4d<scalar_t>(out),
      strided4d<scalar_t>(alpha), w.const_data_ptr<scalar_t>(),
      b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, z.pixels(), z.C, z.Cr, z.Cout);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, alpha};
}

std::tuple<at::Tensor, at::Tensor> gated_conv2d_cuda(const at::Tensor& s, const at::Tensor& r,
                                                     const at::Tensor& gate_weight,
                                                     const at::Tensor& gate_bias,
                                                     const at::Tensor& weight,
                                                     const std::optional<at::Tensor>& bias) {
  const GclSizes z = check_gated_conv2d(kForwardOp, s, r, std::nullopt, std::nullopt, gate_weight,
                                        gate_bias, weight, bias);
  const c10::cuda::CUDAGuard guard(s.device());
  const auto gw = gate_weight.contiguous(), gb = gate_bias.contiguous();
  std::tuple<at::Tensor, at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), kForwardOp, [&] {
    using acc_t = at::opmath_type<scalar_t>;
    result = launch_forward<scalar_t>(kForwardOp, z, s, r, weight, bias, [&] {
      return gcl::LinearGate<acc_t, scalar_t>{gw.const_data_ptr<scalar_t>(),
                                              gb.const_data_ptr<scalar_t>()};
    });
  });
  return result;
}

std::tuple<at::Tensor, at::Tensor> gated_conv2d_mlp_cuda(
    const at::Tensor& s, const at::Tensor& r, const at::Tensor& hidden_weight,
    const at::Tensor& hidden_bias, const at::Tensor& gate_weight, const at::Tensor& gate_bias,
    const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const GclSizes z = check_gated_conv2d(kMlpOp, s, r, hidden_weight, hidden_bias, gate_weight,
                                        gate_bias, weight, bias);
  const c10::cuda::CUDAGuard guard(s.device());
  const auto hw = hidden_weight.contiguous(), hb = hidden_bias.contiguous();
  const auto gw = gate_weight.contiguous(), gb = gate_bias.contiguous();
  std::tuple<at::Tensor, at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), kMlpOp, [&] {
    using acc_t = at::opmath_type<scalar_t>;
    result = launch_forward<scalar_t>(kMlpOp, z, s, r, weight, bias, [&] {
      return gcl::MlpGate<acc_t, scalar_t>{
          hw.const_data_ptr<scalar_t>(), hb.const_data_ptr<scalar_t>(),
          gw.const_data_ptr<scalar_t>(), gb.const_data_ptr<scalar_t>(), z.M};
    });
  });
  return result;
}

// ---------------------------------------------------------------------------------------------
// Backward (linear gate)

// Shared memory of the backward block, in acc_t elements: tiles G (Cout), S (C), R (Cr), F and
// DZ (one row each) with rows padded to T + 1 so that the reduction, where a warp reads one pixel
// of 32 different rows, hits 32 different banks; then the block's partial sums.
struct BackwardShared {
  int64_t ld, G, S, R, F, DZ, acc, total;
  GSCNN_HD BackwardShared(const gcl::GradLayout& L, int64_t T) : ld(T + 1) {
    G = 0;
    S = G + L.Cout * ld;
    R = S + L.C * ld;
    F = R + L.Cr * ld;
    DZ = F + ld;
    acc = DZ + ld;
    total = acc + L.size();
  }
};

template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(Strided4d<const scalar_t> gv, Strided4d<const scalar_t> gav,
                                Strided4d<const scalar_t> sv, Strided4d<const scalar_t> rv,
                                Strided4d<scalar_t> dsv, Strided4d<scalar_t> drv,
                                const scalar_t* __restrict__ wg, const scalar_t* __restrict__ bg,
                                const scalar_t* __restrict__ W, int64_t P, gcl::GradLayout L,
                                acc_t* __restrict__ partials) {
  const int64_t T = blockDim.x, t = threadIdx.x;
  const BackwardShared sh(L, T);
  acc_t* base = shared_buffer<acc_t>();
  acc_t *G = base + sh.G, *S = base + sh.S, *R = base + sh.R, *F = base + sh.F, *DZ = base + sh.DZ;
  acc_t* acc = base + sh.acc;
  const int64_t C = L.C, Cr = L.Cr, Cout = L.Cout, ld = sh.ld;
  const gcl::LinearGate<acc_t, scalar_t> gate{wg, bg};
  const gcl::TileColumn<acc_t> x{S, R, C, ld, t};

  for (int64_t e = t; e < L.size(); e += T) acc[e] = acc_t(0);

  const int64_t num_tiles = (P + T - 1) / T;
  // Every thread of the block runs the same number of iterations: the barriers are uniform.
  for (int64_t tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
    const int64_t p = tile * T + t;
    acc_t f = 0, dz = 0;
    if (p < P) {
      const int64_t go = gv.px.offset(p), so = sv.px.offset(p), ro = rv.px.offset(p);
      for (int64_t o = 0; o < Cout; ++o) G[o * ld + t] = static_cast<acc_t>(gv.at(go, o));
      for (int64_t c = 0; c < C; ++c) S[c * ld + t] = static_cast<acc_t>(sv.at(so, c));
      for (int64_t j = 0; j < Cr; ++j) R[j * ld + t] = static_cast<acc_t>(rv.at(ro, j));
      const acc_t a = gcl::sigmoid(gate.logit(x, C + Cr));
      f = acc_t(1) + a;

      // dalpha = g_alpha + sum_c (W^T g)_c s_c; gu is recomputed below rather than stored.
      acc_t dalpha = gav.data ? static_cast<acc_t>(gav.at(gav.px.offset(p), 0)) : acc_t(0);
      for (int64_t c = 0; c < C; ++c) {
        acc_t gu = 0;
        for (int64_t o = 0; o < Cout; ++o) gu += static_cast<acc_t>(W[o * C + c]) * G[o * ld + t];
        dalpha += gu * S[c * ld + t];
      }
      dz = gcl::gate_logit_grad(dalpha, a);

      const int64_t dso = dsv.px.offset(p), dro = drv.px.offset(p);
      for (int64_t c = 0; c < C; ++c) {
        acc_t gu = 0;
        for (int64_t o = 0; o < Cout; ++o) gu += static_cast<acc_t>(W[o * C + c]) * G[o * ld + t];
        dsv.at(dso, c) =
            static_cast<scalar_t>(gcl::shape_grad(gu, f, dz, static_cast<acc_t>(wg[c])));
      }
      for (int64_t j = 0; j < Cr; ++j)
        drv.at(dro, j) = static_cast<scalar_t>(dz * static_cast<acc_t>(wg[C + j]));
    } else {  // padding pixel of the last tile: contributes nothing
      for (int64_t o = 0; o < Cout; ++o) G[o * ld + t] = acc_t(0);
      for (int64_t c = 0; c < C; ++c) S[c * ld + t] = acc_t(0);
      for (int64_t j = 0; j < Cr; ++j) R[j * ld + t] = acc_t(0);
    }
    F[t] = f;
    DZ[t] = dz;
    __syncthreads();
    for (int64_t e = t; e < L.size(); e += T)
      acc[e] += gcl::tile_entry_sum(L, e, G, S, R, F, DZ, ld, T);
    __syncthreads();  // the next tile overwrites G, S, R, F, DZ
  }
  for (int64_t e = t; e < L.size(); e += T) partials[blockIdx.x * L.size() + e] = acc[e];
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gated_conv2d_backward_cuda(const at::Tensor& grad_out,
                           const std::optional<at::Tensor>& grad_alpha, const at::Tensor& s,
                           const at::Tensor& r, const at::Tensor& gate_weight,
                           const at::Tensor& gate_bias, const at::Tensor& weight) {
  const GclSizes z = check_gated_conv2d(kBackwardOp, s, r, std::nullopt, std::nullopt,
                                        gate_weight, gate_bias, weight, std::nullopt);
  check_gated_conv2d_grads(kBackwardOp, z, s, grad_out, grad_alpha);
  const c10::cuda::CUDAGuard guard(s.device());
  auto grad_s = at::empty(s.sizes(), s.options().memory_format(output_memory_format(s)));
  auto grad_r = at::empty(r.sizes(), r.options().memory_format(output_memory_format(r)));
  const gcl::GradLayout layout{z.C, z.Cr, z.Cout};
  const auto acc_type = at::toOpMathType(s.scalar_type());
  at::Tensor partials;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), kBackwardOp, [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto kernel = backward_kernel<scalar_t, acc_t>;
    const auto cfg = pick_block(
        kernel,
        [&](int threads) {
          return static_cast<size_t>(BackwardShared(layout, threads).total) * sizeof(acc_t);
        },
        kBackwardOp, s.get_device());
    const int64_t num_tiles = (z.pixels() + cfg.threads - 1) / cfg.threads;
    const int64_t blocks = gcl::num_partials(num_tiles);
    partials = at::zeros({std::max<int64_t>(blocks, 1), layout.size()},
                         s.options().dtype(acc_type));
    if (blocks == 0) return;  // empty input: all gradients are zero
    const auto gw = gate_weight.contiguous(), gb = gate_bias.contiguous(), w = weight.contiguous();
    const auto gav = grad_alpha.has_value() ? strided4d<const scalar_t>(*grad_alpha)
                                            : Strided4d<const scalar_t>{nullptr, 0, {1, 1, 0, 0, 0}};
    kernel<<<blocks, cfg.threads, cfg.shared_bytes, c10::cuda::getCurrentCUDAStream()>>>(
        strided4d<const scalar_t>(grad_out), gav, strided4d<const scalar_t>(s),
        strided4d<const scalar_t>(r), strided4d<scalar_t>(grad_s), strided4d<scalar_t>(grad_r),
        gw.const_data_ptr<scalar_t>(), gb.const_data_ptr<scalar_t>(),
        w.const_data_ptr<scalar_t>(), z.pixels(), layout, partials.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  auto [grad_gw, grad_gb, grad_w, grad_b] = parameter_grads(partials, layout, s.scalar_type());
  return {grad_s, grad_r, grad_gw, grad_gb, grad_w, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CUDA, m) {
  m.impl("gated_conv2d", &gated_conv2d_cuda);
  m.impl("gated_conv2d_mlp", &gated_conv2d_mlp_cuda);
  m.impl("gated_conv2d_backward", &gated_conv2d_backward_cuda);
}

}  // namespace gscnn
