// CUDA kernels of the Gated Convolutional Layer. The kernel bodies live in
// common/gated_conv2d_blocks.h as per-thread phases (shared with the CPU emulator that the CPU
// tests run); this file launches them.
//
// Forward: one thread per pixel, its input channels staged in a shared-memory column, nothing of
// size N*C*H*W written besides the output. Backward: each block walks a fixed set of pixel tiles,
// computes ds and dr per pixel, and reduces the parameter gradients of its tiles into its own row
// of partial sums, in a fixed order; rows are summed afterwards. No atomics: bitwise
// reproducible.

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <memory>

#include "../common/gated_conv2d_blocks.h"
#include "../common/gated_conv2d_host.h"

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

// Guards the device of s; a CPU s (mixed devices) is left to the argument checks to report.
std::unique_ptr<c10::cuda::CUDAGuard> device_guard(const at::Tensor& s) {
  return s.is_cuda() ? std::make_unique<c10::cuda::CUDAGuard>(s.device()) : nullptr;
}

template <typename acc_t>
__device__ acc_t* shared_buffer() {
  extern __shared__ __align__(sizeof(double)) unsigned char shared_raw[];
  return reinterpret_cast<acc_t*>(shared_raw);
}

template <typename Block, typename acc_t>
__global__ void forward_kernel(Block block) {
  acc_t* X = shared_buffer<acc_t>();
  const int64_t T = blockDim.x, t = threadIdx.x;
  for (int64_t p = blockIdx.x * T + t; p < block.P; p += static_cast<int64_t>(gridDim.x) * T) {
    block.pixel(X, p, t, T);
  }
}

template <typename Block, typename acc_t>
__global__ void backward_kernel(Block block, acc_t* __restrict__ partials) {
  acc_t* smem = shared_buffer<acc_t>();
  acc_t* row = partials + blockIdx.x * block.L.size();
  const int64_t T = blockDim.x, t = threadIdx.x;
  block.zero_partials(row, t, T);
  // Every thread of the block runs the same number of iterations: the barriers are uniform.
  for (int64_t tile = blockIdx.x; tile < block.num_tiles(T); tile += gridDim.x) {
    block.pixel_phase(smem, tile, t, T);
    __syncthreads();
    block.reduce_phase(smem, row, t, T);
    __syncthreads();  // the next tile overwrites the shared tiles
  }
}

auto forward_launch(const char* op) {
  return [op](const auto& gate, const GclSizes& z, const at::Tensor& s, const at::Tensor& r,
              const at::Tensor& weight, const at::Tensor& bias, at::Tensor& out,
              at::Tensor& alpha) {
    using scalar_t = gcl::gate_scalar_t<decltype(gate)>;
    using acc_t = at::opmath_type<scalar_t>;
    const auto block = gcl::make_forward_block<scalar_t>(gate, s, r, out, alpha, weight, bias);
    using Block = std::decay_t<decltype(block)>;
    auto kernel = forward_kernel<Block, acc_t>;
    const int device = s.get_device();
    const auto cfg = pick_block(
        kernel,
        [&](int threads) { return Block::shared_elems(z.C, z.Cr, threads) * sizeof(acc_t); }, op,
        device);
    int sms = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    const int64_t blocks = std::min<int64_t>((z.pixels() + cfg.threads - 1) / cfg.threads,
                                             static_cast<int64_t>(sms) * 32);
    kernel<<<blocks, cfg.threads, cfg.shared_bytes, c10::cuda::getCurrentCUDAStream()>>>(block);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
}

std::tuple<at::Tensor, at::Tensor> gated_conv2d_cuda(const at::Tensor& s, const at::Tensor& r,
                                                     const at::Tensor& gate_weight,
                                                     const at::Tensor& gate_bias,
                                                     const at::Tensor& weight,
                                                     const std::optional<at::Tensor>& bias) {
  const auto guard = device_guard(s);
  return run_gated_conv2d_forward(kForwardOp, s, r, std::nullopt, std::nullopt, gate_weight,
                                  gate_bias, weight, bias, forward_launch(kForwardOp));
}

std::tuple<at::Tensor, at::Tensor> gated_conv2d_mlp_cuda(
    const at::Tensor& s, const at::Tensor& r, const at::Tensor& hidden_weight,
    const at::Tensor& hidden_bias, const at::Tensor& gate_weight, const at::Tensor& gate_bias,
    const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const auto guard = device_guard(s);
  return run_gated_conv2d_forward(kMlpOp, s, r, hidden_weight, hidden_bias, gate_weight, gate_bias,
                                  weight, bias, forward_launch(kMlpOp));
}

BackwardResult gated_conv2d_backward_cuda(const at::Tensor& grad_out,
                                          const std::optional<at::Tensor>& grad_alpha,
                                          const at::Tensor& s, const at::Tensor& r,
                                          const at::Tensor& gate_weight,
                                          const at::Tensor& gate_bias, const at::Tensor& weight) {
  const auto guard = device_guard(s);
  return run_gated_conv2d_backward(
      kBackwardOp, grad_out, grad_alpha, s, r, gate_weight, gate_bias, weight,
      [](auto scalar_tag, const GclSizes& z, const at::Tensor& g, const at::Tensor& ga,
         const at::Tensor& s_, const at::Tensor& r_, const at::Tensor& gw, const at::Tensor& gb,
         const at::Tensor& w, at::Tensor& ds, at::Tensor& dr) {
        using scalar_t = std::remove_pointer_t<decltype(scalar_tag)>;
        using acc_t = at::opmath_type<scalar_t>;
        const auto block = gcl::make_backward_block<scalar_t>(g, ga, s_, r_, ds, dr, gw, gb, w);
        auto kernel = backward_kernel<std::decay_t<decltype(block)>, acc_t>;
        const auto cfg = pick_block(
            kernel,
            [&](int threads) {
              return static_cast<size_t>(gcl::BackwardShared(block.L, threads).total) *
                     sizeof(acc_t);
            },
            kBackwardOp, s_.get_device());
        const int64_t blocks = gcl::num_partials(block.num_tiles(cfg.threads));
        auto partials = at::empty({blocks, block.L.size()},
                                  s_.options().dtype(at::toOpMathType(s_.scalar_type())));
        kernel<<<blocks, cfg.threads, cfg.shared_bytes, c10::cuda::getCurrentCUDAStream()>>>(
            block, static_cast<acc_t*>(partials.data_ptr()));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return partials;
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CUDA, m) {
  m.impl("gated_conv2d", &gated_conv2d_cuda);
  m.impl("gated_conv2d_mlp", &gated_conv2d_mlp_cuda);
  m.impl("gated_conv2d_backward", &gated_conv2d_backward_cuda);
}

}  // namespace gscnn
