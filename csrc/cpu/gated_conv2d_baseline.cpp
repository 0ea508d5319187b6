// CPU kernels of gated_conv2d for the baseline instruction set (any CPU).
#include "gated_conv2d_kernels.h"

#define GSCNN_CPU_VECTOR_BYTES 16
#define GSCNN_CPU_ISA baseline
#include "gated_conv2d_kernels_impl.h"
