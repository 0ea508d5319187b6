#pragma once
// The CPU kernels of boundary_potential and dual_task_loss (forward and backward), one build per
// instruction set (boundary_potential_{baseline,avx2,avx512}.cpp include
// boundary_potential_kernels_impl.h under `#pragma GCC target`, as gated_conv2d does), and the
// CPU device that picks the widest build at run time.
//
// They compute what the GPU block program (common/boundary_potential_program.h) computes, from
// the same problem description (the Pipeline struct: views, taps, threshold, tiles), but are
// written for a CPU core: one tile of 32 x 256 pixels at a time, each pass a loop over whole rows
// with unit stride (vectorised), the labels' class presence and the keep mask found once per
// tile, and exact skipping of (tile, class) pairs that cannot reach P+ (the loss: no pixel of the
// class in the tile's halo, so zeta_hat = 0, and a probability range of at most 2 * threshold,
// so zeta <= threshold everywhere).

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../common/boundary_potential_launch.h"
#include "cpu_isa.h"

#if defined(GSCNN_CPU_X86_VARIANTS)
#include <immintrin.h>  // streaming stores (simd_impl.h)
#endif

namespace gscnn {
namespace cpu {

// Runs `program` (a dtl::Pipeline: its tiles, views and parameters; not its block program) on
// the CPU, tiles spread over the cores. Instantiated in each ISA build for every Pipeline the ops
// make.
#define GSCNN_DECLARE_PIPELINE_KERNEL(isa) \
  namespace isa {                          \
  template <typename Program>              \
  void run_pipeline(const Program& program); \
  }

GSCNN_DECLARE_PIPELINE_KERNEL(baseline)
#if defined(GSCNN_CPU_X86_VARIANTS)
GSCNN_DECLARE_PIPELINE_KERNEL(avx2)
GSCNN_DECLARE_PIPELINE_KERNEL(avx512)
#endif
#undef GSCNN_DECLARE_PIPELINE_KERNEL

// Every Pipeline the ops instantiate: fn(scalar_t, kLoss, kBackward, kR) for each.
#define GSCNN_FOR_EACH_PIPELINE(fn)                                      \
  GSCNN_FOR_EACH_PIPELINE_TYPE(fn, double)                               \
  GSCNN_FOR_EACH_PIPELINE_TYPE(fn, float)                                \
  GSCNN_FOR_EACH_PIPELINE_TYPE(fn, c10::Half)                            \
  GSCNN_FOR_EACH_PIPELINE_TYPE(fn, c10::BFloat16)
#define GSCNN_FOR_EACH_PIPELINE_TYPE(fn, T)                              \
  fn(T, false, false, 0) fn(T, false, true, 0) fn(T, true, false, 0) fn(T, true, true, 0) \
  fn(T, false, false, 3) fn(T, false, true, 3) fn(T, true, false, 3) fn(T, true, true, 3)

// The CPU device of the op bodies (common/boundary_potential_launch.h): tiles of 32 rows x 256
// columns (the per-core buffers, about 10 of (32 + 4R + 4) x (256 + 4R + 4) floats, stay in L2),
// the kernel build of this processor's widest instruction set. Bad labels are raised at once.
struct CpuPipelineDevice : labels::HostLabelStatus {
  static constexpr dtl::TileShape kTile{32, 256};
  template <typename Select, typename Make>
  void run(const char*, const at::Tensor&, Select&&, Make&& make) {
    dtl::PipelineChoice c{};
    c.tile = kTile;
    c.launch.threads = 1;
    const auto program = make(c);
    switch (cpu_isa()) {
#if defined(GSCNN_CPU_X86_VARIANTS)
      case Isa::avx512: return avx512::run_pipeline(program);
      case Isa::avx2: return avx2::run_pipeline(program);
#endif
      default: return baseline::run_pipeline(program);
    }
  }
};

}  // namespace cpu
}  // namespace gscnn
