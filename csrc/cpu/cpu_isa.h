#pragma once
// The instruction-set builds of the CPU kernels and the choice among them at run time. Kernels
// that gain from wide vectors are compiled once per build from one source (<op>_kernels_impl.h,
// included by <op>_{baseline,avx2,avx512}.cpp under `#pragma GCC target`); the op picks the widest
// build this processor supports, or the one GSCNN_CPU_ISA names.

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GSCNN_CPU_X86_VARIANTS 1  // the avx2 and avx512 builds exist
#endif

namespace gscnn {
namespace cpu {

enum class Isa { baseline, avx2, avx512 };

// The widest instruction set this processor supports, or the one named by GSCNN_CPU_ISA
// (baseline, avx2, avx512: for tests and comparisons). Read on every call: it costs nanoseconds.
inline Isa cpu_isa() {
#if defined(GSCNN_CPU_X86_VARIANTS)
  static const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                               __builtin_cpu_supports("f16c");
  static const bool has_avx512 = has_avx2 && __builtin_cpu_supports("avx512f") &&
                                 __builtin_cpu_supports("avx512bw") &&
                                 __builtin_cpu_supports("avx512vl") &&
                                 __builtin_cpu_supports("avx512dq");
  const char* env = std::getenv("GSCNN_CPU_ISA");
  if (env == nullptr || env[0] == 0) return has_avx512 ? Isa::avx512 : has_avx2 ? Isa::avx2 : Isa::baseline;
  const std::string want(env);
  TORCH_CHECK(want == "baseline" || want == "avx2" || want == "avx512",
              "gscnn_ops: GSCNN_CPU_ISA must be baseline, avx2 or avx512, got '", want, "'");
  TORCH_CHECK(want != "avx2" || has_avx2, "gscnn_ops: GSCNN_CPU_ISA=avx2 but this CPU lacks AVX2/FMA/F16C");
  TORCH_CHECK(want != "avx512" || has_avx512, "gscnn_ops: GSCNN_CPU_ISA=avx512 but this CPU lacks AVX-512");
  return want == "avx512" ? Isa::avx512 : want == "avx2" ? Isa::avx2 : Isa::baseline;
#else
  return Isa::baseline;
#endif
}

inline std::string cpu_isa_name() {
  switch (cpu_isa()) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "baseline";
  }
}

}  // namespace cpu
}  // namespace gscnn
