// CPU kernels of boundary_potential and dual_task_loss for processors with AVX2 and FMA (chosen
// at run time).
#include "boundary_potential_kernels.h"

#if defined(GSCNN_CPU_X86_VARIANTS)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define GSCNN_CPU_VECTOR_BYTES 32
#define GSCNN_CPU_ISA avx2
#include "boundary_potential_kernels_impl.h"
#pragma GCC pop_options
#endif
