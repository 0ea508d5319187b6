// CPU kernels of boundary_potential and dual_task_loss for the baseline instruction set.
#include "boundary_potential_kernels.h"

#pragma GCC push_options
#define GSCNN_CPU_VECTOR_BYTES 16
#define GSCNN_CPU_ISA baseline
#include "boundary_potential_kernels_impl.h"
#pragma GCC pop_options
