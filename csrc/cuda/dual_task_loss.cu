// CUDA boundary_potential and dual_task_loss (forward and fused backward).
//
// One block per (image, TH x TW tile); the block loops over the K class channels. The kernel
// body is the block program of common/dual_task_loss_host.h (run_block) with the phases of
// common/dual_task_loss_blocks.h, the same code the CPU kernels and the CPU emulator run: here
// each phase runs on every thread, with __syncthreads() between phases, the tile and its halo in
// shared memory. Forward writes zeta, or for the loss one (sum, count) pair per block (a fixed-
// order block reduction, then a fixed-order sum of the pairs): no atomics, bitwise reproducible,
// no N*K*H*W intermediate. The backward recomputes the tile with a halo of 2R + 2 and gathers
// the adjoints (no scatter), writing grad_prob once.

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "../common/dual_task_loss_host.h"

namespace gscnn {
namespace {

using dtl::TileShape;

constexpr int kThreads = 256;
constexpr size_t kDefaultSharedBytes = 48 * 1024;

template <typename Pipe>
__global__ void __launch_bounds__(kThreads) pipeline_kernel(Pipe p) {
  using acc_t = typename Pipe::acc_type;
  extern __shared__ __align__(sizeof(double)) unsigned char shared_raw[];
  acc_t* sm = reinterpret_cast<acc_t*>(shared_raw);
  const int64_t T = blockDim.x, t = threadIdx.x;
  dtl::LossState<acc_t> st{acc_t(0), acc_t(0)};
  // Every thread runs every phase: the barriers are uniform.
  dtl::run_block<Pipe::is_loss, Pipe::is_backward>(
      p, sm, static_cast<int64_t>(blockIdx.x), T,
      [&](auto&& f) {
        f(t);
        __syncthreads();
      },
      [&](int64_t) { return &st; });
}

struct CudaLaunch {
  int device;

  static size_t bytes(TileShape ts, bool loss, bool backward, double sigma, size_t acc_bytes) {
    return static_cast<size_t>(
               dtl::Layout(ts.TH, ts.TW, dtl::radius_of(sigma), loss, backward, kThreads).total) *
           acc_bytes;
  }

  // The largest tile whose buffers fit the device's shared memory per block (opt-in limit):
  // 32 x 32 for sigma ~ 1 (forward ~39 KiB, backward ~76 KiB in float32).
  TileShape tile(bool loss, bool backward, double sigma, size_t acc_bytes) const {
    int optin = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    const TileShape candidates[] = {{32, 32}, {16, 32}, {16, 16}, {8, 16}, {8, 8}, {4, 8}};
    for (const auto& ts : candidates) {
      if (bytes(ts, loss, backward, sigma, acc_bytes) <= static_cast<size_t>(optin)) return ts;
    }
    TORCH_CHECK(false, "gscnn_ops.dual_task_loss: sigma = ", sigma,
                " needs more shared memory per block than the device allows (", optin, " bytes)");
  }

  template <typename Pipe>
  void operator()(const Pipe& p) const {
    using acc_t = typename Pipe::acc_type;
    const size_t shared = static_cast<size_t>(p.layout(kThreads).total) * sizeof(acc_t);
    const int64_t blocks = p.num_blocks();
    if (blocks == 0) return;
    TORCH_CHECK(blocks <= std::numeric_limits<int>::max(),
                "gscnn_ops.dual_task_loss: the input has too many tiles for one CUDA grid (",
                blocks, ")");
    auto kernel = pipeline_kernel<Pipe>;
    if (shared > kDefaultSharedBytes) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(shared)));
    }
    kernel<<<static_cast<unsigned>(blocks), kThreads, shared,
             c10::cuda::getCurrentCUDAStream(device)>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

constexpr const char* kPotentialOp = "gscnn_ops.boundary_potential";
constexpr const char* kPotentialBackwardOp = "gscnn_ops.boundary_potential_backward";
constexpr const char* kLossOp = "gscnn_ops.dual_task_loss";
constexpr const char* kLossBackwardOp = "gscnn_ops.dual_task_loss_backward";

CudaLaunch launch_on(const at::Tensor& t) { return CudaLaunch{t.get_device()}; }

at::Tensor boundary_potential_cuda(const at::Tensor& prob, double sigma) {
  c10::cuda::CUDAGuard guard(prob.device());
  return dtl::run_boundary_potential(kPotentialOp, prob, sigma, launch_on(prob));
}

at::Tensor boundary_potential_backward_cuda(const at::Tensor& grad_zeta, const at::Tensor& prob,
                                            double sigma) {
  c10::cuda::CUDAGuard guard(prob.device());
  return dtl::run_boundary_potential_backward(kPotentialBackwardOp, grad_zeta, prob, sigma,
                                              launch_on(prob));
}

std::tuple<at::Tensor, at::Tensor> dual_task_loss_cuda(const at::Tensor& prob,
                                                       const at::Tensor& target, double sigma,
                                                       double threshold, int64_t ignore_index) {
  c10::cuda::CUDAGuard guard(prob.device());
  return dtl::run_dual_task_loss(kLossOp, prob, target, sigma, threshold, ignore_index,
                                 launch_on(prob));
}

at::Tensor dual_task_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& prob,
                                        const at::Tensor& target, const at::Tensor& count,
                                        double sigma, double threshold, int64_t ignore_index) {
  c10::cuda::CUDAGuard guard(prob.device());
  return dtl::run_dual_task_loss_backward(kLossBackwardOp, grad, prob, target, count, sigma,
                                          threshold, ignore_index, launch_on(prob));
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CUDA, m) {
  m.impl("boundary_potential", &boundary_potential_cuda);
  m.impl("boundary_potential_backward", &boundary_potential_backward_cuda);
  m.impl("dual_task_loss", &dual_task_loss_cuda);
  m.impl("dual_task_loss_backward", &dual_task_loss_backward_cuda);
}

}  // namespace gscnn
