#pragma once
// The host side of edge_targets on every device (CPU kernel, CUDA kernel, the emulated GPU of the
// tests): argument checks, output allocation, dtype dispatch, the construction of the kernel's
// problem description and, for the GPU, the launch selection. Each device supplies only a
// `launch` callback.

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <limits>
#include <type_traits>

#include "checks.h"
#include "edge_targets_math.h"
#include "edge_targets_program.h"
#include "launch.h"

namespace gscnn {

// Label maps: any signed or unsigned integer dtype ATen dispatches on (uint8, int8, int16, int32,
// int64). Floating-point and bool maps are rejected: a float "label" is almost always a bug
// (an image or a probability map passed by mistake).
inline void check_edge_targets(const char* op, const at::Tensor& target, double radius) {
  check_dim(op, "target", target, 3, "(N, H, W) label map");
  const auto st = target.scalar_type();
  TORCH_CHECK(st == at::kByte || st == at::kChar || st == at::kShort || st == at::kInt ||
                  st == at::kLong,
              op, ": argument 'target' must be an integer label map (uint8, int8, int16, int32 or "
              "int64), got ", st);
  // Written so that NaN fails too.
  TORCH_CHECK(radius >= 0.0, op, ": argument 'radius' must be a distance in pixels >= 0, got ",
              radius);
}

// Whether some value of the label dtype T equals v (T is at most 64 bits wide and signed when
// 64 bits wide, so both limits fit in int64).
template <typename T>
bool representable(int64_t v) {
  return v >= static_cast<int64_t>(std::numeric_limits<T>::lowest()) &&
         v <= static_cast<int64_t>(std::numeric_limits<T>::max());
}

// launch(block) runs the kernel on a non-empty input; block is an et::EdgeTargetsBlock<T, bool>.
template <typename KernelFn>
at::Tensor run_edge_targets(const char* op, const at::Tensor& target, double radius,
                            int64_t ignore_index, KernelFn&& launch) {
  check_edge_targets(op, target, radius);
  const int64_t N = target.size(0), H = target.size(1), W = target.size(2);
  auto out = at::empty({N, H, W}, target.options().dtype(at::kBool));
  if (out.numel() == 0) return out;
  const et::Disk disk = et::Disk::of(radius, H, W);
  AT_DISPATCH_INTEGRAL_TYPES(target.scalar_type(), "edge_targets", [&] {
    const scalar_t* data = target.const_data_ptr<scalar_t>();
    bool* o = out.data_ptr<bool>();
    const int64_t sN = target.stride(0), sH = target.stride(1), sW = target.stride(2);
    if (representable<scalar_t>(ignore_index)) {
      const et::LabelRule<scalar_t, true> rule{static_cast<scalar_t>(ignore_index)};
      launch(et::EdgeTargetsBlock<scalar_t, true>{data, sN, sH, sW, o, N, H, W, disk, rule});
    } else {  // no label of this dtype can equal ignore_index: nothing is ignored
      const et::LabelRule<scalar_t, false> rule{scalar_t(0)};
      launch(et::EdgeTargetsBlock<scalar_t, false>{data, sN, sH, sW, o, N, H, W, disk, rule});
    }
  });
  return out;
}

// The kernel callback of run_edge_targets for a device that runs block programs (the CUDA op and
// the emulated GPU; see program_forward_kernel in gated_conv2d_launch.h for the interface).
template <typename Device>
auto program_edge_targets_kernel(const char* op, Device& device, const at::Tensor& like) {
  return [op, &device, &like](const auto& block) {
    device.run(
        op, like,
        [&](const DeviceLimits& d, const KernelLimits& k, const LaunchOverride& ov) {
          return select_grid_stride(block.pixels(), d, k, ov);  // one thread per pixel
        },
        [&](const Launch&) { return et::EdgeTargetsProgram<std::decay_t<decltype(block)>>{block}; });
  };
}

}  // namespace gscnn
