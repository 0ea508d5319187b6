#pragma once
// Lets one function body compile for both the CPU kernels (plain C++) and the CUDA kernels
// (nvcc), so the CPU test suite exercises the exact arithmetic the GPU runs.

#if defined(__CUDACC__)
#define GSCNN_HD __host__ __device__ __forceinline__
#else
#define GSCNN_HD inline
#endif
