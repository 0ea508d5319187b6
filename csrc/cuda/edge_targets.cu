// CUDA edge_targets: one thread per output pixel, grid-stride over the (N, H, W) pixels with
// 64-bit indices. The body (et::EdgeTargetsBlock::pixel in common/edge_targets.h) is the one the
// CPU emulation op runs in the tests. A thread walks the disk around its pixel and stops at the
// first neighbour with a different valid label; neighbouring threads read neighbouring columns,
// so each disk row is a coalesced read, and the ~13 reads per pixel at radius 2 hit L1/L2.

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/edge_targets_host.h"

namespace gscnn {
namespace {

constexpr const char* kOp = "gscnn_ops.edge_targets";
constexpr int kThreads = 256;

template <typename Block>
__global__ void __launch_bounds__(kThreads) edge_targets_kernel(Block block) {
  const int64_t P = block.pixels();
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < P; p += step)
    block.pixel(p);
}

at::Tensor edge_targets_cuda(const at::Tensor& target, double radius, int64_t ignore_index) {
  // The only tensor argument: a CUDA tensor is guaranteed by the dispatcher.
  const c10::cuda::CUDAGuard guard(target.device());
  return run_edge_targets(kOp, target, radius, ignore_index, [&](const auto& block) {
    int sms = 0;
    C10_CUDA_CHECK(
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, target.get_device()));
    const int64_t blocks = std::min<int64_t>((block.pixels() + kThreads - 1) / kThreads,
                                             static_cast<int64_t>(sms) * 32);
    edge_targets_kernel<<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(block);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CUDA, m) { m.impl("edge_targets", &edge_targets_cuda); }

}  // namespace gscnn
