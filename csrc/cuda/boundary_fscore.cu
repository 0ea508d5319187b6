// CUDA boundary_fscore_counts. The kernel bodies live in common/boundary_fscore_blocks.h as
// per-thread phases (shared with the CPU emulator that the CPU tests run), and so does the host
// driver; this file launches them: a grid-stride mask kernel, then the boundary and match
// kernels, one block per (plane, chunk), each block writing its own row of partial sums (no
// atomics but the integer atomicMin that records the first bad label). The op reads that status
// once at its end, to raise on bad labels: its one device-to-host copy.
//
// ptxas (sm_90, -O3): mask kernels 55-56 registers, boundary 80, match 60; no stack frame, no
// spills (nvcc -Xptxas -v, CUDA 13.0).

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <optional>

#include "../common/boundary_fscore_blocks.h"

namespace gscnn {
namespace {

constexpr const char* kOp = "gscnn_ops.boundary_fscore_counts";
constexpr size_t kDefaultSharedBytes = 48 * 1024;

template <typename MaskKernel>
__global__ void mask_kernel(MaskKernel k, unsigned long long* status) {
  const int64_t T = blockDim.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * T;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * T + threadIdx.x; i < k.num_items();
       i += stride) {
    const bfs::BadPixels bad = k.item(i);
    // Flat indices are non-negative: unsigned order is their order.
    if (bad.pred_x >= 0) atomicMin(status, static_cast<unsigned long long>(bad.pred_x));
    if (bad.target_x >= 0) atomicMin(status + 1, static_cast<unsigned long long>(bad.target_x));
  }
}

template <typename Kernel>
__global__ void block_kernel(Kernel k, int64_t* partials) {
  extern __shared__ __align__(sizeof(int64_t)) unsigned char shared_raw[];
  int64_t* smem = reinterpret_cast<int64_t*>(shared_raw);
  const int64_t T = blockDim.x, t = threadIdx.x, b = blockIdx.x;
  k.word_phase(smem, b, t, T);
  __syncthreads();
  k.reduce_phase(smem, partials, b, t, T);
}

struct CudaLaunch {
  int device;
  int sms;
  cudaStream_t stream;

  template <typename MaskKernel>
  void mask(const MaskKernel& k, int64_t* status) const {
    constexpr int threads = 256;
    const int64_t blocks =
        std::min<int64_t>((k.num_items() + threads - 1) / threads, static_cast<int64_t>(sms) * 32);
    mask_kernel<<<blocks, threads, 0, stream>>>(k, reinterpret_cast<unsigned long long*>(status));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  // The largest block (256 down to 32 threads) whose counters fit the default 48 KiB of shared
  // memory: (up to kMaxRadii) 64-bit counters per thread.
  int64_t threads(int64_t counters_per_thread) const {
    for (int64_t t : {256, 128, 64}) {
      if (counters_per_thread * t * static_cast<int64_t>(sizeof(int64_t)) <=
          static_cast<int64_t>(kDefaultSharedBytes))
        return t;
    }
    return 32;
  }

  // Enough blocks to fill the GPU a few times over, never more than a plane has words for, and a
  // grid that fits gridDim.x.
  int64_t chunks(int64_t planes, int64_t plane_words, int64_t T) const {
    const int64_t want = (static_cast<int64_t>(sms) * 16 + planes - 1) / planes;
    const int64_t most = (plane_words + T - 1) / T;
    const int64_t grid_cap = std::max<int64_t>(1, INT_MAX / planes);
    return std::max<int64_t>(1, std::min({want, most, grid_cap}));
  }

  template <typename Kernel>
  void run_blocks(const Kernel& k, int64_t* partials, int64_t T) const {
    const size_t shared = static_cast<size_t>(k.shared_elems(T)) * sizeof(int64_t);
    block_kernel<Kernel><<<k.num_blocks(), T, shared, stream>>>(k, partials);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  void boundary(const bfs::BoundaryKernel& k, int64_t* partials, int64_t T) const {
    run_blocks(k, partials, T);
  }
  void match(const bfs::MatchKernel& k, int64_t* partials, int64_t T) const {
    run_blocks(k, partials, T);
  }
};

at::Tensor boundary_fscore_counts_cuda(const at::Tensor& pred, const at::Tensor& target,
                                       int64_t num_classes, at::IntArrayRef radii,
                                       int64_t ignore_index) {
  // Guard pred's device; a CPU pred (mixed devices) is left to the argument checks to report.
  std::optional<c10::cuda::CUDAGuard> guard;
  if (pred.is_cuda()) guard.emplace(pred.device());
  CudaLaunch launch{};
  if (pred.is_cuda()) {
    launch.device = pred.get_device();
    C10_CUDA_CHECK(
        cudaDeviceGetAttribute(&launch.sms, cudaDevAttrMultiProcessorCount, launch.device));
    launch.stream = c10::cuda::getCurrentCUDAStream();
  }
  return run_boundary_fscore_kernels(kOp, pred, target, num_classes, radii, ignore_index,
                                     /*images_per_chunk=*/0, launch);
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CUDA, m) {
  m.impl("boundary_fscore_counts", &boundary_fscore_counts_cuda);
}

}  // namespace gscnn
