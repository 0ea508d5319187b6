// CPU emulation of the CUDA boundary_fscore_counts kernels, for tests on machines without a GPU.
//
// It runs the CUDA kernels' own bodies (common/boundary_fscore_blocks.h) through the same host
// driver as the CUDA op, the way a GPU schedules them: block by block, and within a block each
// phase for every thread before the next phase starts (which is what __syncthreads()
// guarantees), with a per-block array as shared memory. `threads` (block size) and `blocks`
// (blocks per plane, and the grid of the mask kernel) are free so that tests can force
// grid-stride loops, idle threads and idle blocks on small inputs; `images_per_chunk` forces the
// driver's chunking of the batch. Not a fast path: use the ordinary op.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "../common/boundary_fscore_blocks.h"

namespace gscnn {
namespace {

constexpr const char* kOp = "gscnn_ops._boundary_fscore_counts_emulate_cuda";

struct EmulatedLaunch {
  int64_t T, blocks;

  template <typename MaskKernel>
  void mask(const MaskKernel& k, int64_t* status) const {
    for (int64_t blk = 0; blk < blocks; ++blk)  // the kernel's grid-stride loop, thread by thread
      for (int64_t t = 0; t < T; ++t)
        for (int64_t i = blk * T + t; i < k.num_items(); i += blocks * T) {
          const bfs::BadPixels bad = k.item(i);
          if (bad.pred_x >= 0) status[0] = std::min(status[0], bad.pred_x);  // atomicMin
          if (bad.target_x >= 0) status[1] = std::min(status[1], bad.target_x);
        }
  }

  int64_t threads(int64_t) const { return T; }
  int64_t chunks(int64_t, int64_t, int64_t) const { return blocks; }

  template <typename Kernel>
  void run_blocks(const Kernel& k, int64_t* partials) const {
    std::vector<int64_t> smem(k.shared_elems(T));
    for (int64_t b = 0; b < k.num_blocks(); ++b) {
      for (int64_t t = 0; t < T; ++t) k.word_phase(smem.data(), b, t, T);
      // __syncthreads()
      for (int64_t t = 0; t < T; ++t) k.reduce_phase(smem.data(), partials, b, t, T);
    }
  }
  void boundary(const bfs::BoundaryKernel& k, int64_t* partials, int64_t) const {
    run_blocks(k, partials);
  }
  void match(const bfs::MatchKernel& k, int64_t* partials, int64_t) const {
    run_blocks(k, partials);
  }
};

at::Tensor boundary_fscore_counts_emulate(const at::Tensor& pred, const at::Tensor& target,
                                          int64_t num_classes, at::IntArrayRef radii,
                                          int64_t ignore_index, int64_t threads, int64_t blocks,
                                          int64_t images_per_chunk) {
  TORCH_CHECK(threads >= 1 && threads <= 1024, kOp,
              ": argument 'threads' must be in [1, 1024], got ", threads);
  TORCH_CHECK(blocks >= 1, kOp, ": argument 'blocks' must be positive, got ", blocks);
  TORCH_CHECK(images_per_chunk >= 0, kOp,
              ": argument 'images_per_chunk' must be non-negative, got ", images_per_chunk);
  EmulatedLaunch launch{threads, blocks};
  return run_boundary_fscore_kernels(kOp, pred, target, num_classes, radii, ignore_index,
                                     images_per_chunk, launch);
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CPU, m) {
  m.impl("_boundary_fscore_counts_emulate_cuda", &boundary_fscore_counts_emulate);
}

}  // namespace gscnn
