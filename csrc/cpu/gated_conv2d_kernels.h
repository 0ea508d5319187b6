#pragma once
// Declarations of the CPU gated_conv2d kernels, one set per instruction set, and every header
// their implementation (gated_conv2d_kernels_impl.h) needs. The per-ISA files include this
// first, then switch the target with `#pragma GCC target`, then include the implementation:
// library code from these headers stays baseline (no AVX instruction can leak into code shared
// with other files), only our kernels are compiled for the wider registers. gated_conv2d.cpp
// picks the widest set the processor supports at run time.

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../common/gated_conv2d_launch.h"
#include "../common/gated_conv2d_math.h"
#include "../common/strided.h"
#include "cpu_isa.h"

#if defined(GSCNN_CPU_X86_VARIANTS)
#include <immintrin.h>  // streaming stores (simd_impl.h)
#endif

namespace gscnn {
namespace cpu {

#define GSCNN_DECLARE_CPU_KERNELS(isa)                                                            \
  namespace isa {                                                                                 \
  template <typename Gate>                                                                        \
  void forward_kernel(const Gate& gate, const GclSizes& z, const at::Tensor& s,                  \
                      const at::Tensor& r, const at::Tensor& weight, const at::Tensor& bias,      \
                      at::Tensor& out, at::Tensor& alpha);                                        \
  template <typename scalar_t>                                                                    \
  at::Tensor backward_kernel(const GclSizes& z, const at::Tensor& grad_out,                      \
                             const at::Tensor& grad_alpha, const at::Tensor& s,                   \
                             const at::Tensor& r, const at::Tensor& gate_weight,                  \
                             const at::Tensor& gate_bias, const at::Tensor& weight,               \
                             at::Tensor& grad_s, at::Tensor& grad_r);                             \
  }

GSCNN_DECLARE_CPU_KERNELS(baseline)  // x86-64 baseline (SSE2) or the platform default
#if defined(GSCNN_CPU_X86_VARIANTS)
GSCNN_DECLARE_CPU_KERNELS(avx2)    // AVX2 + FMA + F16C
GSCNN_DECLARE_CPU_KERNELS(avx512)  // AVX-512 F/BW/VL/DQ
#endif
#undef GSCNN_DECLARE_CPU_KERNELS

}  // namespace cpu
}  // namespace gscnn
