#pragma once
// The emulated GPU of the tests: the `device` of the ops' program callbacks (the same interface
// as cuda::Device in cuda/launch.cuh). It makes the op's own launch choice for a GPU of the tests'
// table (DeviceLimits, KernelLimits), possibly with parts forced, checks that an unforced choice
// fits that GPU, and runs the program with the emulator (emulator.h). Bad labels are reported
// as on the CPU: at once.

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "../common/label_errors.h"
#include "../common/launch.h"
#include "emulator.h"

namespace gscnn {
namespace testing {

// What the last emulated launch was (for the tests and scripts/kernel_report.py:
// gscnn_testing::last_launch): its shape, the barriers block 0 met, the program variant, and the
// shared-memory accesses of the whole launch (emulator.h, SharedCounts).
struct LaunchRecord {
  int64_t blocks = 0, threads = 0, shared_bytes = 0, scratch_bytes = 0, tile_h = 0, tile_w = 0,
          barriers = 0, variant = 0;
  SharedCounts shared;
  std::vector<int64_t> list() const {
    return {blocks,   threads, shared_bytes,  scratch_bytes,      tile_h,
            tile_w,   barriers, variant,      shared.loads,       shared.stores,
            shared.load_bytes, shared.store_bytes, shared.barriers, shared.load_wavefronts,
            shared.store_wavefronts, shared.conflict_free_wavefronts};
  }
  // [site, wavefronts, conflict-free wavefronts] per pass site (SharedCounts::passes), flattened.
  std::vector<int64_t> pass_list() const {
    std::vector<int64_t> out;
    for (const auto& p : shared.passes)
      out.insert(out.end(), {p.site, p.wavefronts, p.conflict_free_wavefronts});
    return out;
  }
};
LaunchRecord& last_launch();

struct EmulatedDevice : labels::HostLabelStatus {  // bad labels: raised at once
  DeviceLimits device;
  KernelLimits kernel;
  LaunchOverride force;
  EmuOptions options;

  // gpu: 8 device limits then 3 kernel limits (see tests/emulation.py).
  EmulatedDevice(const std::vector<int64_t>& gpu, const std::vector<int64_t>& forced,
                 int64_t skip_barrier)
      : device(DeviceLimits::from_list(checked(gpu, forced))),
        kernel(KernelLimits::from_list(std::vector<int64_t>(gpu.begin() + 8, gpu.end()))),
        force(LaunchOverride::from_list(forced)) {
    TORCH_CHECK(force.threads >= 0 && force.threads <= 1024 && force.blocks >= 0,
                "gscnn_testing: bad forced launch");
    options.skip_barrier = skip_barrier;
  }

  // The device limits of `gpu`, after checking both lists (before anything reads them).
  static std::vector<int64_t> checked(const std::vector<int64_t>& gpu,
                                      const std::vector<int64_t>& forced) {
    TORCH_CHECK(gpu.size() == 11, "gscnn_testing: 'gpu' must hold 11 limits, got ", gpu.size());
    TORCH_CHECK(forced.empty() || forced.size() == 5,
                "gscnn_testing: 'force' must be empty or [threads, blocks, tile_h, tile_w, "
                "memory], got ", forced.size(), " values");
    return std::vector<int64_t>(gpu.begin(), gpu.begin() + 8);
  }

  template <typename Select, typename Make>
  void run(const char* op, const at::Tensor&, Select&& select, Make&& make) {
    const auto choice = select(device, kernel, force);
    const Launch& l = launch_of(choice);
    if (!force.any()) {
      const std::string problem = launch_problem(l, device, kernel);
      TORCH_CHECK(problem.empty(), op, ": the launch selection chose a launch this GPU cannot run: ",
                  problem);
    }
    const auto program = make(choice);
    LaunchRecord& rec = last_launch();
    rec = LaunchRecord{l.blocks, l.threads, l.shared_bytes, l.scratch_bytes_per_block};
    if constexpr (requires { choice.tile; }) {
      rec.tile_h = choice.tile.TH;
      rec.tile_w = choice.tile.TW;
    }
    if constexpr (requires { choice.staged; }) rec.variant = choice.staged ? 0 : 1;
    // programs that take several pixels per thread say how many (kPixelsPerThread)
    using Program = std::remove_cvref_t<decltype(program)>;
    if constexpr (requires { Program::kPixelsPerThread; }) rec.variant = Program::kPixelsPerThread;
    rec.barriers = emulate(op, program, l, options, &rec.shared);
  }

};

}  // namespace testing
}  // namespace gscnn
