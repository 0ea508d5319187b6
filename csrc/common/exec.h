#pragma once
// Block programs: the body of every CUDA kernel of the library, written once and run by two
// execution policies: the GPU's, and the test emulator's, which runs the same code on the CPU
// thread by thread and checks its barriers. (The ops' CPU kernels are separate code written for a
// CPU core, tested against the same references.)
//
// A block program is a struct with
//     template <typename Exec> GSCNN_HD void operator()(Exec& ex) const;
// that does the work of one block of a launch. Everything a thread does is written inside
//     ex.for_each_thread([&](int64_t t) { ... });
// and the code between those calls (loops over tiles, classes, grid-stride loops over blocks) is
// the block's own control flow. It can only depend on the block index and the problem, never on
// a thread (t exists only inside for_each_thread), so every thread of a block meets every
// barrier, ex.sync(), the same number of times: barriers are uniform by construction.
//
// The policies:
//   GpuExec    (CUDA kernels, below)  for_each_thread(f) is f(threadIdx.x); sync() is
//              __syncthreads(); shared<T>() is the dynamic shared memory, or, in the kernels
//              instantiated for it (programs with kGlobalScratch), the block's slice of a global
//              scratch buffer when the launch put it there (large problems).
//   EmuExec    (tests: csrc/testing/emulator.h) runs every thread of the block in turn, each
//              barrier interval before the next, with poison-filled shared memory whose every
//              access is recorded: a thread reading or writing what another thread wrote in the
//              same interval (a race on the GPU), or reading what nobody wrote, is an error.
//
// Exec interface:
//   int64_t block(), grid(), threads()  blockIdx.x, gridDim.x, blockDim.x
//   for_each_thread(f)                  f(t) for every thread t of the block
//   sync()                              block barrier
//   sync_any(pred)                      block barrier that returns, to every thread, whether
//                                       pred(t) held for some thread t (__syncthreads_or)
//   shared<T>()                         the block's shared memory as a pointer-like to T (a T* on
//                                       the GPU; a recording pointer in the emulator)
//   registers<S>()                      per-thread state that lives across barriers: r(t) is
//                                       thread t's S (a register variable on the GPU)

#include <cstdint>

#include "host_device.h"

namespace gscnn {

#if defined(__CUDACC__)
// kScratch: the block's "shared" memory is its slice of a global scratch buffer (large problems),
// not the dynamic shared memory. A compile-time choice, so that the shared-memory kernels address
// shared memory (LDS/STS) and not through generic pointers that could point anywhere.
template <bool kScratch>
struct GpuExec {
  unsigned char* scratch;           // kScratch: the buffer
  int64_t scratch_bytes_per_block;  // the slice of `scratch` each block owns

  __device__ int64_t block() const { return static_cast<int64_t>(blockIdx.x); }
  __device__ int64_t grid() const { return static_cast<int64_t>(gridDim.x); }
  __device__ int64_t threads() const { return static_cast<int64_t>(blockDim.x); }

  template <typename F>
  __device__ void for_each_thread(F&& f) const {
    f(static_cast<int64_t>(threadIdx.x));
  }
  // __syncthreads() also orders the block's global-memory accesses, so a block program runs the
  // same on shared memory and on its slice of global scratch memory.
  __device__ void sync() const { __syncthreads(); }
  template <typename F>
  __device__ bool sync_any(F&& pred) const {
    return __syncthreads_or(pred(static_cast<int64_t>(threadIdx.x)) ? 1 : 0) != 0;
  }

  template <typename T>
  __device__ T* shared() const {
    extern __shared__ __align__(16) unsigned char gscnn_dynamic_shared[];
    if constexpr (kScratch) {
      return reinterpret_cast<T*>(scratch +
                                  static_cast<int64_t>(blockIdx.x) * scratch_bytes_per_block);
    } else {
      return reinterpret_cast<T*>(gscnn_dynamic_shared);
    }
  }

  template <typename S>
  struct Registers {
    S value;
    __device__ S& operator()(int64_t) { return value; }
  };
  template <typename S>
  __device__ Registers<S> registers() const {
    return Registers<S>{};
  }
};
#endif

}  // namespace gscnn
