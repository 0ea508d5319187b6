// CPU edge_targets op: argument handling (common/edge_targets_launch.h) and the choice of the
// kernel build for this processor (edge_targets_{baseline,avx2,avx512}.cpp, one source:
// edge_targets_kernels_impl.h).

#include <torch/library.h>

#include "../common/edge_targets_launch.h"
#include "edge_targets_kernels.h"

namespace gscnn {
namespace {

constexpr const char* kOp = "gscnn_ops.edge_targets";

at::Tensor edge_targets_cpu(const at::Tensor& target, double radius, int64_t ignore_index) {
  // The kernel reads rows with unit stride, so that its loops vectorise. Maps whose columns are
  // strided (a transposed or column-sliced view, the last channel of an NHWC tensor) are copied
  // once: measured on a transposed int64 map, strided reads made the kernel ~10x slower, far more
  // than the copy costs. Any other strides (batch, rows, a channel of an NCHW tensor) are read as
  // they are.
  const bool strided_rows = target.dim() == 3 && target.size(2) > 1 && target.stride(2) != 1;
  const at::Tensor t = strided_rows ? target.contiguous() : target;
  return run_edge_targets(kOp, t, radius, ignore_index, [](const auto& block) {
    TORCH_INTERNAL_ASSERT(block.sW == 1 || block.W == 1);
    switch (cpu::cpu_isa()) {
#if defined(GSCNN_CPU_X86_VARIANTS)
      case cpu::Isa::avx512: return cpu::avx512::edge_targets_kernel(block);
      case cpu::Isa::avx2: return cpu::avx2::edge_targets_kernel(block);
#endif
      default: return cpu::baseline::edge_targets_kernel(block);
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CPU, m) { m.impl("edge_targets", &edge_targets_cpu); }

}  // namespace gscnn
