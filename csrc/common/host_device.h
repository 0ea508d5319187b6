#pragma once
// Lets one function body compile for both the CPU kernels (plain C++) and the CUDA kernels
// (nvcc), so the CPU test suite exercises the exact arithmetic the GPU runs.

#if defined(__CUDACC__)
#define GSCNN_HD __host__ __device__ __forceinline__
#else
#define GSCNN_HD inline
#endif

// Full unrolling of a loop with a compile-time trip count, where it matters that the compiler
// does it (arrays indexed by the loop variable then stay in registers). nvcc only: the CPU
// compilers unroll what pays by themselves.
#if defined(__CUDA_ARCH__)
#define GSCNN_UNROLL _Pragma("unroll")
#else
#define GSCNN_UNROLL
#endif
