#pragma once
// The library's only device-specific code paths: a handful of CUDA intrinsics, each next to a
// host *model* of the same function (the GCC builtin or libm call with the semantics NVIDIA
// documents for the intrinsic). Everything built on them is written once; the CPU kernels, the
// emulator and the GPU differ only in these few lines, and tests/test_device_intrinsics.py checks
// each model against the documented semantics (edge cases included) on the CPU.

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace gscnn {
namespace hd {

// __ffsll: 1 + the index of the least significant set bit; 0 for 0.
GSCNN_HD int ffs64(uint64_t v) {
#if defined(__CUDA_ARCH__)
  return __ffsll(static_cast<long long>(v));
#else
  return __builtin_ffsll(static_cast<long long>(v));
#endif
}

// __clzll: number of leading zero bits; 64 for 0 (the builtin is undefined at 0).
GSCNN_HD int clz64(uint64_t v) {
#if defined(__CUDA_ARCH__)
  return __clzll(static_cast<long long>(v));
#else
  return v == 0 ? 64 : __builtin_clzll(v);
#endif
}

// __popcll: number of set bits.
GSCNN_HD int popcount64(uint64_t v) {
#if defined(__CUDA_ARCH__)
  return __popcll(v);
#else
  // Inline SWAR rather than __builtin_popcountll, which is a libgcc call in a baseline x86-64
  // build (no POPCNT instruction assumed).
  v = v - ((v >> 1) & 0x5555555555555555ULL);
  v = (v & 0x3333333333333333ULL) + ((v >> 2) & 0x3333333333333333ULL);
  v = (v + (v >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
  return static_cast<int>((v * 0x0101010101010101ULL) >> 56);
#endif
}

// atomicMin on a 64-bit unsigned word: *p = min(*p, v). On the host a compare-and-swap loop, so
// that the CPU kernels (several threads) and the emulator record the same minimum.
GSCNN_HD void atomic_min_u64(uint64_t* p, uint64_t v) {
#if defined(__CUDA_ARCH__)
  atomicMin(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
#else
  uint64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (v < cur &&
         !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
#endif
}

// exp(x) for x <= 0 in the accumulation type. On the GPU CUDA's exp/expf (at most 2 ulp off in
// float). On the host, in float, a branch-free Cephes polynomial (within 1 ulp for x >= -87, about
// 1e-38 absolute below, -inf included), written so that the CPU loops over the pixels of a tile
// vectorise: the clamp to -87 is a bitwise select on the comparison's mask (a max, or a ?:, would
// not vectorise without -ffinite-math-only; arithmetic on x + 87 would cancel for |x| > 1e9 and
// give exp(-1e30) = 1). In double, std::exp.
template <typename acc_t>
GSCNN_HD acc_t exp_nonpositive(acc_t x) {
#if defined(__CUDA_ARCH__)
  return exp(x);
#else
  if constexpr (sizeof(acc_t) == sizeof(float)) {
    const int32_t below = -static_cast<int32_t>(x + 87.0f < 0.0f);  // all ones where x < -87
    x = __builtin_bit_cast(float, (__builtin_bit_cast(int32_t, x) & ~below) |
                                      (__builtin_bit_cast(int32_t, -87.0f) & below));
    const int32_t n = static_cast<int32_t>(x * 1.44269504088896341f - 0.5f);  // round(x / ln 2)
    const float nf = static_cast<float>(n);
    const float r = (x - nf * 0.693359375f) + nf * 2.12194440e-4f;  // x - n ln 2, two-part ln 2
    float p = 1.9875691500e-4f;  // Cephes expf polynomial on [-ln2/2, ln2/2]
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * __builtin_bit_cast(float, (n + 127) << 23);  // times 2^n
  } else {
    return std::exp(x);
  }
#endif
}

}  // namespace hd
}  // namespace gscnn
