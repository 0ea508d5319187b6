#pragma once
// Declarations of the CPU edge_targets kernel, one per instruction-set build (cpu_isa.h), and
// every header its implementation (edge_targets_kernels_impl.h) needs. As for gated_conv2d, the
// per-ISA files include this first and only then switch the target, so library code stays
// baseline; edge_targets.cpp picks the build at run time. Wide vectors pay here: int64 labels
// compare 2 per SSE2 register and 8 per AVX-512 one (measured: 4-6x faster for int64 maps).

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "../common/edge_targets_math.h"
#include "cpu_isa.h"

namespace gscnn {
namespace cpu {

// b.target must have unit-stride rows (b.sW == 1, or W == 1); edge_targets.cpp ensures it.
#define GSCNN_DECLARE_EDGE_TARGETS_KERNEL(isa) \
  namespace isa {                              \
  template <typename Block>                    \
  void edge_targets_kernel(const Block& b);    \
  }

GSCNN_DECLARE_EDGE_TARGETS_KERNEL(baseline)
#if defined(GSCNN_CPU_X86_VARIANTS)
GSCNN_DECLARE_EDGE_TARGETS_KERNEL(avx2)
GSCNN_DECLARE_EDGE_TARGETS_KERNEL(avx512)
#endif
#undef GSCNN_DECLARE_EDGE_TARGETS_KERNEL

// The label dtypes (those of AT_DISPATCH_INTEGRAL_TYPES), for the explicit instantiations.
#define GSCNN_FOR_EACH_LABEL_TYPE(_) _(uint8_t) _(int8_t) _(int16_t) _(int32_t) _(int64_t)

}  // namespace cpu
}  // namespace gscnn
