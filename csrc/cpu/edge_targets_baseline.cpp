// CPU edge_targets kernel for the baseline instruction set (any CPU).
#include "edge_targets_kernels.h"

#define GSCNN_CPU_ISA baseline
#include "edge_targets_kernels_impl.h"
