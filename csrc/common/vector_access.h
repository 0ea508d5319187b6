#pragma once
// N consecutive values at a pointer aligned to N * sizeof(T), read or written as one vector access
// on the GPU (4 floats: one LDS.128 / STS.128 in shared memory, LDG.128 / STG.128 in global; 4
// doubles: two 16-byte accesses) and element by element on the host. The emulator's recording
// pointer has overloads of its own (testing/emulator.h, found by argument-dependent lookup) that
// record one access of N * sizeof(T) bytes and check its alignment, as the GPU would fault.

#include "host_device.h"

namespace gscnn {

template <int N, typename T>
struct alignas(N * sizeof(T)) VectorOf {
  T v[N];
};

template <int N, typename T>
GSCNN_HD void load_vector(const T* p, T (&v)[N]) {
#if defined(__CUDA_ARCH__)
  const VectorOf<N, T> q = *reinterpret_cast<const VectorOf<N, T>*>(p);
  GSCNN_UNROLL
  for (int i = 0; i < N; ++i) v[i] = q.v[i];
#else
  for (int i = 0; i < N; ++i) v[i] = p[i];
#endif
}

template <int N, typename T>
GSCNN_HD void store_vector(T* p, const T (&v)[N]) {
#if defined(__CUDA_ARCH__)
  VectorOf<N, T> q;
  GSCNN_UNROLL
  for (int i = 0; i < N; ++i) q.v[i] = v[i];
  *reinterpret_cast<VectorOf<N, T>*>(p) = q;
#else
  for (int i = 0; i < N; ++i) p[i] = v[i];
#endif
}

}  // namespace gscnn
