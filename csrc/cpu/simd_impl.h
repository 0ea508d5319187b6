// Vector helpers shared by the CPU kernels' per-ISA builds: the vector type of the including
// file's register width, and streaming stores. Included by the *_kernels_impl.h files inside
// their namespace gscnn::cpu::GSCNN_CPU_ISA, after `#pragma GCC target`, so each build gets its
// own copy (in its own namespace: the builds' copies never merge). No #include here: <algorithm>,
// <cstdint>, <cstring>, <type_traits> and, on x86, <immintrin.h> come from the *_kernels.h header
// before the pragma.

#if !defined(GSCNN_CPU_ISA) || !defined(GSCNN_CPU_VECTOR_BYTES)
#error "define GSCNN_CPU_ISA and GSCNN_CPU_VECTOR_BYTES before including simd_impl.h"
#endif

// Vectors of the accumulation type at the including file's register width (GSCNN_CPU_VECTOR_BYTES):
// GCC/Clang vector types, for the loops the auto-vectoriser does not block or fuse by itself.
template <typename acc_t>
struct Simd {
  typedef acc_t type __attribute__((vector_size(GSCNN_CPU_VECTOR_BYTES)));
  static constexpr int lanes = GSCNN_CPU_VECTOR_BYTES / sizeof(acc_t);
};

template <typename acc_t>
typename Simd<acc_t>::type vload(const acc_t* p) {
  typename Simd<acc_t>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// One vector written with a non-temporal (streaming) store; dst aligned to the vector's width.
// Streaming stores write whole cache lines without reading them first. A plain store to a line
// not in cache reads the line first (read for ownership), and the outputs (N*C*H*W, written once,
// never read by the kernel) are not in cache: measured on a 2-core Xeon, the stores of the GCL's
// grad_s then stalled its backward for ~30 % of its time. The caller ends its chunk of work with
// stream_fence().
template <typename acc_t>
inline void stream_vector(acc_t* dst, const typename Simd<acc_t>::type& v) {
#if defined(GSCNN_CPU_X86_VARIANTS)
  if constexpr (std::is_same_v<acc_t, float>) {
#if GSCNN_CPU_VECTOR_BYTES >= 64
    _mm512_stream_ps(dst, reinterpret_cast<const __m512&>(v));
#elif GSCNN_CPU_VECTOR_BYTES == 32
    _mm256_stream_ps(dst, reinterpret_cast<const __m256&>(v));
#else
    _mm_stream_ps(dst, reinterpret_cast<const __m128&>(v));
#endif
  } else {
#if GSCNN_CPU_VECTOR_BYTES >= 64
    _mm512_stream_pd(dst, reinterpret_cast<const __m512d&>(v));
#elif GSCNN_CPU_VECTOR_BYTES == 32
    _mm256_stream_pd(dst, reinterpret_cast<const __m256d&>(v));
#else
    _mm_stream_pd(dst, reinterpret_cast<const __m128d&>(v));
#endif
  }
#else
  std::memcpy(dst, &v, sizeof(v));
#endif
}

// Orders this thread's streaming stores before whatever follows (the end of a parallel chunk).
inline void stream_fence() {
#if defined(GSCNN_CPU_X86_VARIANTS)
  _mm_sfence();
#endif
}

// Writes v[0 .. n) to dst (unit stride), converting to T: where T is acc_t, the whole vectors
// past the first vector-aligned address with streaming stores (the outputs the kernels write
// once and never read back), the few values around them with plain stores. The caller ends its
// chunk of work with stream_fence().
template <typename T, typename acc_t>
inline void stream_row(T* __restrict dst, const acc_t* __restrict v, int64_t n) {
  int64_t c = 0;
  if constexpr (std::is_same_v<T, acc_t>) {
    using V = typename Simd<acc_t>::type;
    constexpr int64_t VL = Simd<acc_t>::lanes;
    const auto misaligned = reinterpret_cast<uintptr_t>(dst) % sizeof(V);
    if (misaligned % sizeof(T) == 0) {
      const int64_t head = misaligned == 0 ? 0 : (sizeof(V) - misaligned) / sizeof(T);
      for (; c < std::min(head, n); ++c) dst[c] = v[c];
      for (; c + VL <= n; c += VL) stream_vector(dst + c, vload(v + c));
    }
  }
  for (; c < n; ++c) dst[c] = static_cast<T>(v[c]);
}
