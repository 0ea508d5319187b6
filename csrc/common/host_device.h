#pragma once
// Lets one function body compile for both the CPU kernels (plain C++) and the CUDA kernels
// (nvcc), so the CPU test suite exercises the exact arithmetic the GPU runs.

#if defined(__CUDACC__)
#define GSCNN_HD __host__ __device__ __forceinline__
#else
#define GSCNN_HD inline
#endif

// A cold path (the image-border cases of a stencil): a function of its own, called, not inlined,
// so that the hot loop around the call stays small (instruction cache, registers) and its SASS is
// the code that runs on the interior (what scripts/kernel_report.py counts). Its arguments must
// not take the address of a caller's local array or struct (that would move it to local memory).
#if defined(__CUDACC__)
#define GSCNN_HD_COLD __host__ __device__ inline __noinline__
#else
#define GSCNN_HD_COLD inline __attribute__((noinline))
#endif

// Full unrolling of a loop with a compile-time trip count, where it matters that the compiler
// does it (arrays indexed by the loop variable then stay in registers). nvcc only: the CPU
// compilers unroll what pays by themselves.
// GSCNN_NO_UNROLL: a loop with a run-time trip count that is almost always 1 (the gate's Cr = 1
// regular-stream channels): kept a plain loop, nvcc would otherwise unroll it 16, 8 and 4 times
// with remainder paths (code that never runs, and static SASS counts that mislead
// scripts/kernel_report.py's per-pixel instruction counts).
#if defined(__CUDA_ARCH__)
#define GSCNN_UNROLL _Pragma("unroll")
#define GSCNN_NO_UNROLL _Pragma("unroll 1")
#else
#define GSCNN_UNROLL
#define GSCNN_NO_UNROLL
#endif
