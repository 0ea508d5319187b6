#pragma once
// Launch selection, as plain host code: what a GPU allows (DeviceLimits), what a compiled kernel
// needs (KernelLimits), and the launch an op chose (Launch). Each op's <op>_launch.h picks its
// launch from these with a pure function, so the same choice is made by the CUDA op (limits read
// from the device, once), by the emulator in the tests (limits from a table of GPUs), and by the
// launch-selection tests, which check every choice against the limits of sm_75 ... sm_120 over
// the ranges of sizes the API accepts.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace gscnn {

// The limits of one GPU (cudaDeviceProp).
struct DeviceLimits {
  int64_t sm_count;
  int64_t max_threads_per_sm;
  int64_t max_blocks_per_sm;
  int64_t regs_per_sm;
  int64_t smem_per_block;           // without opt-in (48 KiB everywhere so far)
  int64_t smem_per_block_optin;     // the most one block may ask for after opting in
  int64_t smem_per_sm;
  int64_t reserved_smem_per_block;  // taken by the system from each resident block (1 KiB, sm_80+)

  // As an int list (the emulation and selection ops of the tests take this order).
  static DeviceLimits from_list(const std::vector<int64_t>& v) {
    return {v.at(0), v.at(1), v.at(2), v.at(3), v.at(4), v.at(5), v.at(6), v.at(7)};
  }
};

// What the compiler made of a kernel (cudaFuncAttributes).
struct KernelLimits {
  int64_t regs_per_thread;
  int64_t max_threads_per_block;  // from the registers and __launch_bounds__
  int64_t static_smem;

  static KernelLimits from_list(const std::vector<int64_t>& v) { return {v.at(0), v.at(1), v.at(2)}; }
};

// A launch: `blocks` blocks of `threads` threads, each with `shared_bytes` of dynamic shared
// memory, or, when scratch_bytes_per_block > 0, with that much global memory instead (the
// problem's per-block buffers did not fit the device's shared memory at any block size).
struct Launch {
  int64_t blocks = 1;
  int64_t threads = 1;
  int64_t shared_bytes = 0;
  int64_t scratch_bytes_per_block = 0;
  bool uses_scratch() const { return scratch_bytes_per_block > 0; }
};

// Parts of a launch that a test forces on the emulator (0, or -1 for `memory`: left to the
// selection), so that small inputs can still exercise partial tiles, odd block sizes, grid-stride
// loops and the global-memory variants. The selection computes everything else (shared-memory
// sizes, ...) for the forced values; the CUDA ops never force anything.
struct LaunchOverride {
  int64_t threads = 0, blocks = 0, tile_h = 0, tile_w = 0;
  int64_t memory = -1;  // 0: shared memory; 1: global scratch memory (or the op's direct variant)

  static LaunchOverride from_list(const std::vector<int64_t>& v) {
    LaunchOverride o;
    if (v.empty()) return o;
    o.threads = v.at(0);
    o.blocks = v.at(1);
    o.tile_h = v.at(2);
    o.tile_w = v.at(3);
    o.memory = v.at(4);
    return o;
  }
  bool any() const { return threads || blocks || tile_h || tile_w || memory >= 0; }
};

constexpr int64_t kMaxGridBlocks = std::numeric_limits<int32_t>::max();  // gridDim.x

// The most dynamic shared memory one block of this kernel may ask for on this device.
inline int64_t max_dynamic_shared(const DeviceLimits& d, const KernelLimits& k) {
  return std::min(d.smem_per_block_optin, d.smem_per_sm - d.reserved_smem_per_block) -
         k.static_smem;
}

// Whether a block of `threads` threads fits the kernel's registers and the device at all.
inline bool block_fits(const DeviceLimits& d, const KernelLimits& k, int64_t threads) {
  return threads >= 1 && threads <= k.max_threads_per_block && threads <= d.max_threads_per_sm &&
         threads * k.regs_per_thread <= d.regs_per_sm;
}

// Blocks of this launch that one SM holds at once (0: the launch cannot run). Registers are
// counted without the allocation granularity: an upper bound, used only to size grids.
inline int64_t resident_blocks_per_sm(const DeviceLimits& d, const KernelLimits& k,
                                      int64_t threads, int64_t shared_bytes) {
  if (!block_fits(d, k, threads)) return 0;
  int64_t n = std::min(d.max_blocks_per_sm, d.max_threads_per_sm / threads);
  if (k.regs_per_thread > 0) n = std::min(n, d.regs_per_sm / (k.regs_per_thread * threads));
  const int64_t smem = shared_bytes + k.static_smem + d.reserved_smem_per_block;
  if (smem > 0) n = std::min(n, d.smem_per_sm / smem);
  return std::max<int64_t>(n, 0);
}

// Why a launch cannot run on this device with this kernel, or "" when it can. The CUDA ops check
// every launch with it before launching (a clear error instead of a launch failure), and the
// launch-selection tests check every choice of every op with it.
inline std::string launch_problem(const Launch& l, const DeviceLimits& d, const KernelLimits& k) {
  if (l.blocks < 1 || l.blocks > kMaxGridBlocks)
    return "a grid of " + std::to_string(l.blocks) + " blocks (must be in [1, 2^31 - 1])";
  if (!block_fits(d, k, l.threads))
    return "blocks of " + std::to_string(l.threads) + " threads (the kernel allows at most " +
           std::to_string(k.max_threads_per_block) + " with its " +
           std::to_string(k.regs_per_thread) + " registers per thread)";
  if (l.shared_bytes > max_dynamic_shared(d, k))
    return std::to_string(l.shared_bytes) + " bytes of shared memory per block (the device allows " +
           std::to_string(max_dynamic_shared(d, k)) + ")";
  if (resident_blocks_per_sm(d, k, l.threads, l.shared_bytes) < 1)
    return "a block that no SM can hold";
  return "";
}

// The largest block size among `candidates` (in decreasing order) whose shared memory,
// bytes(threads), fits this device and kernel; 0 when none does.
template <typename Bytes>
int64_t largest_fitting_block(const DeviceLimits& d, const KernelLimits& k,
                              std::initializer_list<int64_t> candidates, Bytes&& bytes) {
  for (const int64_t t : candidates) {
    if (block_fits(d, k, t) && bytes(t) <= max_dynamic_shared(d, k)) return t;
  }
  return 0;
}

// The largest candidate block size the kernel's registers allow (candidates decreasing).
inline int64_t largest_block(const DeviceLimits& d, const KernelLimits& k,
                             std::initializer_list<int64_t> candidates) {
  for (const int64_t t : candidates) {
    if (block_fits(d, k, t)) return t;
  }
  return 0;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over `items` with blocks of `threads` threads: enough to fill
// every SM four times over at the occupancy the launch allows, never more than the items need.
inline int64_t grid_stride_blocks(int64_t items, int64_t threads, int64_t shared_bytes,
                                  const DeviceLimits& d, const KernelLimits& k) {
  const int64_t resident = std::max<int64_t>(1, resident_blocks_per_sm(d, k, threads, shared_bytes));
  return std::max<int64_t>(
      1, std::min({ceil_div(items, threads), d.sm_count * resident * 4, kMaxGridBlocks}));
}

// One thread per item, grid-stride, no shared memory: the largest block the kernel allows.
inline Launch select_grid_stride(int64_t items, const DeviceLimits& d, const KernelLimits& k,
                                 const LaunchOverride& ov) {
  Launch l;
  l.threads = ov.threads ? ov.threads : largest_block(d, k, {256, 128, 64, 32});
  l.blocks = ov.blocks ? ov.blocks : grid_stride_blocks(items, l.threads, 0, d, k);
  return l;
}

// The Launch of an op's launch choice: the choice itself, or its .launch member (ops whose
// programs take more from the selection, such as a tile shape or a variant).
inline const Launch& launch_of(const Launch& l) { return l; }
template <typename Choice>
const Launch& launch_of(const Choice& c) {
  return c.launch;
}

}  // namespace gscnn
