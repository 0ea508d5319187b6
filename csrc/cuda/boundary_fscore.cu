// CUDA boundary_fscore_counts: the three block programs of common/boundary_fscore_program.h (a
// grid-stride mask kernel, then the boundary and match kernels, one block per (plane, chunk),
// each block writing its own row of partial sums), driven by common/boundary_fscore_launch.h and
// launched by cuda/launch.cuh. No atomics but the integer atomic min that records the first bad
// label into a device status word, which the host reads without a sync (common/label_errors.h).

#include <torch/library.h>

#include "../common/boundary_fscore_launch.h"
#include "launch.cuh"

namespace gscnn {
namespace {

constexpr const char* kOp = "gscnn_ops.boundary_fscore_counts";

at::Tensor boundary_fscore_counts_cuda(const at::Tensor& pred, const at::Tensor& target,
                                       int64_t num_classes, at::IntArrayRef radii,
                                       int64_t ignore_index) {
  const auto guard = cuda::guard_device_of(pred);
  cuda::Device device;
  return run_boundary_fscore_programs(kOp, pred, target, num_classes, radii, ignore_index,
                                      /*images_per_chunk=*/0, device);
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CUDA, m) {
  m.impl("boundary_fscore_counts", &boundary_fscore_counts_cuda);
}

}  // namespace gscnn
