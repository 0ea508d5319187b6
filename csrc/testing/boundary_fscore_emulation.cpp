// boundary_fscore_counts on the emulated GPU: the driver of common/boundary_fscore_launch.h with
// the programs of common/boundary_fscore_program.h, exactly as cuda/boundary_fscore.cu runs them.
// images_per_chunk forces the driver's chunking of the batch.

#include <torch/library.h>

#include "../common/boundary_fscore_launch.h"
#include "emulated_device.h"

namespace gscnn {
namespace testing {
namespace {

at::Tensor boundary_fscore_counts(const at::Tensor& pred, const at::Tensor& target,
                                  int64_t num_classes, at::IntArrayRef radii,
                                  int64_t ignore_index, std::vector<int64_t> gpu,
                                  std::vector<int64_t> force, int64_t images_per_chunk,
                                  int64_t skip_barrier) {
  constexpr const char* op = "gscnn_testing.boundary_fscore_counts";
  TORCH_CHECK(images_per_chunk >= 0, op,
              ": argument 'images_per_chunk' must be non-negative, got ", images_per_chunk);
  EmulatedDevice device(gpu, force, skip_barrier);
  return run_boundary_fscore_programs(op, pred, target, num_classes, radii, ignore_index,
                                      images_per_chunk, device);
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_testing, CPU, m) {
  m.impl("boundary_fscore_counts", &boundary_fscore_counts);
}

}  // namespace testing
}  // namespace gscnn
