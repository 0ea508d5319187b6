// CPU kernels of boundary_potential and dual_task_loss for processors with AVX-512 (chosen at
// run time).
#include "boundary_potential_kernels.h"

#if defined(GSCNN_CPU_X86_VARIANTS)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#define GSCNN_CPU_VECTOR_BYTES 64
#define GSCNN_CPU_ISA avx512
#include "boundary_potential_kernels_impl.h"
#pragma GCC pop_options
#endif
