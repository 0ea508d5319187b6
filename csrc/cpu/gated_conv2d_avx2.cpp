// CPU kernels of gated_conv2d for processors with AVX2, FMA and F16C (chosen at run time).
#include "gated_conv2d_kernels.h"

#if defined(GSCNN_CPU_X86_VARIANTS)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define GSCNN_CPU_VECTOR_BYTES 32
#define GSCNN_CPU_ISA avx2
#include "gated_conv2d_kernels_impl.h"
#pragma GCC pop_options
#endif
