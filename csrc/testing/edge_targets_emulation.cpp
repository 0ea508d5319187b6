// edge_targets on the emulated GPU: the op body of common/edge_targets_launch.h with the program
// of common/edge_targets_program.h, exactly as cuda/edge_targets.cu runs them.

#include <torch/library.h>

#include "../common/edge_targets_launch.h"
#include "emulated_device.h"

namespace gscnn {
namespace testing {
namespace {

constexpr const char* kOp = "gscnn_testing.edge_targets";

at::Tensor edge_targets(const at::Tensor& target, double radius, int64_t ignore_index,
                        std::vector<int64_t> gpu, std::vector<int64_t> force) {
  EmulatedDevice device(gpu, force, -1);
  return run_edge_targets(kOp, target, radius, ignore_index,
                          program_edge_targets_kernel(kOp, device, target));
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_testing, CPU, m) { m.impl("edge_targets", &edge_targets); }

}  // namespace testing
}  // namespace gscnn
