#pragma once
// The host side of gated_conv2d, gated_conv2d_mlp and gated_conv2d_backward on every device:
// argument checks, output allocation in the input's layout, contiguous weights, dtype dispatch,
// gate construction, the parameter gradients from the partial sums, and -- for the GPU (the CUDA
// kernels, and the emulator of the tests) -- the launch selection and the block programs'
// construction. Each device supplies only what runs its kernel.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <tuple>
#include <type_traits>

#include "checks.h"
#include "gated_conv2d_math.h"
#include "gated_conv2d_program.h"
#include "launch.h"

namespace gscnn {

struct GclSizes {
  int64_t N, C, Cr, Cout, H, W;
  int64_t M;  // hidden width of the MLP gate; 0 for the linear gate
  int64_t D() const { return C + Cr; }
  int64_t pixels() const { return N * H * W; }
};

// Checks s, r, the gate parameters (hidden layer only for the MLP gate), weight and bias.
inline GclSizes check_gated_conv2d(const char* op, const at::Tensor& s, const at::Tensor& r,
                                   const std::optional<at::Tensor>& hidden_weight,
                                   const std::optional<at::Tensor>& hidden_bias,
                                   const at::Tensor& gate_weight, const at::Tensor& gate_bias,
                                   const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias) {
  check_dim(op, "s", s, 4, "(N, C, H, W)");
  check_dim(op, "r", r, 4, "(N, Cr, H, W)");
  check_floating(op, "s", s);
  check_same_dtype_device(op, "s", s, "r", r);
  check_same_dtype_device(op, "s", s, "gate_weight", gate_weight);
  check_same_dtype_device(op, "s", s, "gate_bias", gate_bias);
  check_same_dtype_device(op, "s", s, "weight", weight);

  GclSizes z{s.size(0), s.size(1), r.size(1), 0, s.size(2), s.size(3), 0};
  TORCH_CHECK(z.C > 0, op, ": argument 's' must have at least one channel, got shape ", s.sizes());
  TORCH_CHECK(z.Cr > 0, op, ": argument 'r' must have at least one channel, got shape ",
              r.sizes());
  TORCH_CHECK(r.size(0) == z.N && r.size(2) == z.H && r.size(3) == z.W, op,
              ": arguments 's' and 'r' must have the same batch size and spatial size, got s ",
              s.sizes(), " and r ", r.sizes());

  check_dim(op, "weight", weight, 4, "(C_out, C, 1, 1)");
  z.Cout = weight.size(0);
  TORCH_CHECK(z.Cout > 0, op, ": argument 'weight' must have at least one output channel, got ",
              weight.sizes());
  check_shape(op, "weight", weight, {z.Cout, z.C, 1, 1});
  if (bias.has_value() && bias->defined()) {
    check_same_dtype_device(op, "s", s, "bias", *bias);
    check_shape(op, "bias", *bias, {z.Cout});
  }

  if (hidden_weight.has_value()) {
    TORCH_CHECK(hidden_bias.has_value(), op, ": argument 'hidden_bias' is required");
    check_same_dtype_device(op, "s", s, "hidden_weight", *hidden_weight);
    check_same_dtype_device(op, "s", s, "hidden_bias", *hidden_bias);
    check_dim(op, "hidden_weight", *hidden_weight, 4, "(M, C + Cr, 1, 1)");
    z.M = hidden_weight->size(0);
    TORCH_CHECK(z.M > 0, op, ": argument 'hidden_weight' must have at least one row, got ",
                hidden_weight->sizes());
    check_shape(op, "hidden_weight", *hidden_weight, {z.M, z.D(), 1, 1});
    check_shape(op, "hidden_bias", *hidden_bias, {z.M});
    check_shape(op, "gate_weight", gate_weight, {1, z.M, 1, 1});
  } else {
    check_shape(op, "gate_weight", gate_weight, {1, z.D(), 1, 1});
  }
  check_shape(op, "gate_bias", gate_bias, {1});
  return z;
}

// Backward: grad_out is (N, C_out, H, W); grad_alpha, when given, is (N, 1, H, W).
inline void check_gated_conv2d_grads(const char* op, const GclSizes& z, const at::Tensor& s,
                                     const at::Tensor& grad_out,
                                     const std::optional<at::Tensor>& grad_alpha) {
  check_same_dtype_device(op, "s", s, "grad_out", grad_out);
  check_shape(op, "grad_out", grad_out, {z.N, z.Cout, z.H, z.W});
  if (grad_alpha.has_value()) {
    check_same_dtype_device(op, "s", s, "grad_alpha", *grad_alpha);
    check_shape(op, "grad_alpha", *grad_alpha, {z.N, 1, z.H, z.W});
  }
}


// partials: (rows, layout.size()) in the accumulation dtype. Rows are summed in order (the
// reduction over dim 0 of a small matrix is deterministic on both devices), then each gradient is
// cut out and cast to `dtype`. Clones keep the outputs from aliasing one another.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> parameter_grads(
    const at::Tensor& partials, const gcl::GradLayout& layout, at::ScalarType dtype) {
  const auto total = partials.sum(0).to(dtype);
  const int64_t D = layout.C + layout.Cr;
  return {total.narrow(0, layout.gate_weight_offset(), D).view({1, D, 1, 1}).clone(),
          total.narrow(0, layout.gate_bias_offset(), 1).clone(),
          total.narrow(0, layout.weight_offset(), layout.Cout * layout.C)
              .view({layout.Cout, layout.C, 1, 1})
              .clone(),
          total.narrow(0, layout.bias_offset(), layout.Cout).clone()};
}


inline at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->contiguous() : at::Tensor();
}

// Forward of gated_conv2d (no hidden layer) and gated_conv2d_mlp (hidden layer given).
// launch(gate, z, s, r, weight, bias, out, alpha) runs the kernel for a non-empty input;
// `gate` is a gcl::LinearGate or gcl::MlpGate whose weight_type is the dtype.
template <typename KernelFn>
std::tuple<at::Tensor, at::Tensor> run_gated_conv2d_forward(
    const char* op, const at::Tensor& s, const at::Tensor& r,
    const std::optional<at::Tensor>& hidden_weight, const std::optional<at::Tensor>& hidden_bias,
    const at::Tensor& gate_weight, const at::Tensor& gate_bias, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, KernelFn&& launch) {
  const GclSizes z = check_gated_conv2d(op, s, r, hidden_weight, hidden_bias, gate_weight,
                                        gate_bias, weight, bias);
  const auto opts = s.options().memory_format(output_memory_format(s));
  auto out = at::empty({z.N, z.Cout, z.H, z.W}, opts);
  auto alpha = at::empty({z.N, 1, z.H, z.W}, opts);
  if (z.pixels() == 0) return {out, alpha};
  const auto hw = contiguous_or_undefined(hidden_weight), hb = contiguous_or_undefined(hidden_bias);
  const auto gw = gate_weight.contiguous(), gb = gate_bias.contiguous(), w = weight.contiguous();
  const auto b = contiguous_or_undefined(bias);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "gated_conv2d", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (hw.defined()) {
      launch(gcl::MlpGate<acc_t, scalar_t>{hw.const_data_ptr<scalar_t>(),
                                           hb.const_data_ptr<scalar_t>(),
                                           gw.const_data_ptr<scalar_t>(),
                                           gb.const_data_ptr<scalar_t>(), z.M},
             z, s, r, w, b, out, alpha);
    } else {
      launch(gcl::LinearGate<acc_t, scalar_t>{gw.const_data_ptr<scalar_t>(),
                                              gb.const_data_ptr<scalar_t>()},
             z, s, r, w, b, out, alpha);
    }
  });
  return {out, alpha};
}

using BackwardResult =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Backward of gated_conv2d. launch(scalar_tag, z, grad_out, grad_alpha, s, r, gate_weight,
// gate_bias, weight, grad_s, grad_r) runs the kernel for a non-empty input and returns its
// partial sums, (rows, GradLayout.size()) in the accumulation dtype; scalar_tag is a null
// scalar_t pointer naming the dtype.
template <typename KernelFn>
BackwardResult run_gated_conv2d_backward(const char* op, const at::Tensor& grad_out,
                                         const std::optional<at::Tensor>& grad_alpha,
                                         const at::Tensor& s, const at::Tensor& r,
                                         const at::Tensor& gate_weight,
                                         const at::Tensor& gate_bias, const at::Tensor& weight,
                                         KernelFn&& launch) {
  const GclSizes z = check_gated_conv2d(op, s, r, std::nullopt, std::nullopt, gate_weight,
                                        gate_bias, weight, std::nullopt);
  check_gated_conv2d_grads(op, z, s, grad_out, grad_alpha);
  auto grad_s = at::empty(s.sizes(), s.options().memory_format(output_memory_format(s)));
  auto grad_r = at::empty(r.sizes(), r.options().memory_format(output_memory_format(r)));
  const gcl::GradLayout layout{z.C, z.Cr, z.Cout};
  at::Tensor partials;
  if (z.pixels() == 0) {  // empty input: every parameter gradient is zero
    partials = at::zeros({1, layout.size()}, s.options().dtype(at::toOpMathType(s.scalar_type())));
  } else {
    const auto gw = gate_weight.contiguous(), gb = gate_bias.contiguous(), w = weight.contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "gated_conv2d_backward", [&] {
      partials = launch(static_cast<scalar_t*>(nullptr), z, grad_out,
                        grad_alpha.has_value() ? *grad_alpha : at::Tensor(), s, r, gw, gb, w,
                        grad_s, grad_r);
    });
  }
  auto [grad_gw, grad_gb, grad_w, grad_b] = parameter_grads(partials, layout, s.scalar_type());
  return {grad_s, grad_r, grad_gw, grad_gb, grad_w, grad_b};
}


// --- the GPU side: launch selection and programs ------------------------------------------------

namespace gcl {

// Forward: the largest block (256, 128, 64 threads) whose staged columns fit the shared memory;
// for layers too wide for any (C + Cr above ~220 channels in float32 on an H100), the direct
// program at 256 threads. A grid-stride loop covers the pixels; the grid fills the GPU a few
// times over.
struct ForwardChoice {
  Launch launch;
  bool staged;
};

inline ForwardChoice select_forward(int64_t P, int64_t C, int64_t Cr, int64_t acc_bytes,
                                    const DeviceLimits& d, const KernelLimits& k,
                                    const LaunchOverride& ov = {}) {
  auto bytes = [&](int64_t T) { return (C + Cr) * T * acc_bytes; };
  int64_t T = ov.threads ? ov.threads : largest_fitting_block(d, k, {256, 128, 64}, bytes);
  const bool staged = ov.memory >= 0 ? ov.memory == 0 : T > 0;
  if (T == 0) T = largest_block(d, k, {256, 128, 64, 32});
  ForwardChoice c{Launch{}, staged};
  c.launch.threads = T;
  c.launch.shared_bytes = staged ? bytes(T) : 0;
  c.launch.blocks =
      ov.blocks ? ov.blocks : grid_stride_blocks(P, T, c.launch.shared_bytes, d, k);
  return c;
}

// Backward: one block per row of partial sums (num_partials: a function of the problem only).
// The largest block (256, 128, 64) whose shared tiles fit; when none does (Cout + C + Cr above
// ~870 channels in float32 on an H100), 128 threads with the tiles in global scratch memory.
inline Launch select_backward(int64_t P, const GradLayout& L, int64_t acc_bytes,
                              const DeviceLimits& d, const KernelLimits& k,
                              const LaunchOverride& ov = {}) {
  auto bytes = [&](int64_t T) { return BackwardShared(L, T).total * acc_bytes; };
  Launch l;
  l.blocks = ov.blocks ? ov.blocks : num_partials(P, L.size());
  l.threads = ov.threads ? ov.threads : largest_fitting_block(d, k, {256, 128, 64}, bytes);
  const bool scratch = ov.memory >= 0 ? ov.memory == 1 : l.threads == 0;
  if (l.threads == 0) l.threads = largest_block(d, k, {128, 64, 32});
  (scratch ? l.scratch_bytes_per_block : l.shared_bytes) = bytes(l.threads);
  return l;
}

// The programs, from tensors (weights contiguous; b and g_alpha may be undefined).
template <typename scalar_t, typename Gate>
ForwardProgram<scalar_t, Gate> make_forward_program(const Gate& gate, const at::Tensor& s,
                                                    const at::Tensor& r, const at::Tensor& out,
                                                    const at::Tensor& alpha, const at::Tensor& W,
                                                    const at::Tensor& b, bool staged) {
  return {gate,
          strided4d<const scalar_t>(s),
          strided4d<const scalar_t>(r),
          strided4d<scalar_t>(out),
          strided4d<scalar_t>(alpha),
          W.const_data_ptr<scalar_t>(),
          b.defined() ? b.const_data_ptr<scalar_t>() : nullptr,
          s.size(0) * s.size(2) * s.size(3),
          s.size(1),
          r.size(1),
          W.size(0),
          staged};
}

template <typename scalar_t>
BackwardProgram<scalar_t> make_backward_program(const at::Tensor& g, const at::Tensor& g_alpha,
                                                const at::Tensor& s, const at::Tensor& r,
                                                const at::Tensor& ds, const at::Tensor& dr,
                                                const at::Tensor& wg, const at::Tensor& bg,
                                                const at::Tensor& W, at::Tensor& partials) {
  return {strided4d<const scalar_t>(g),
          g_alpha.defined() ? strided4d<const scalar_t>(g_alpha)
                            : Strided4d<const scalar_t>{nullptr, 0, PixelIndexer{1, 1, 0, 0, 0}},
          strided4d<const scalar_t>(s),
          strided4d<const scalar_t>(r),
          strided4d<scalar_t>(ds),
          strided4d<scalar_t>(dr),
          wg.const_data_ptr<scalar_t>(),
          bg.const_data_ptr<scalar_t>(),
          W.const_data_ptr<scalar_t>(),
          static_cast<at::opmath_type<scalar_t>*>(partials.data_ptr()),
          s.size(0) * s.size(2) * s.size(3),
          GradLayout{s.size(1), r.size(1), W.size(0)}};
}

// The kernel callbacks of run_gated_conv2d_forward / _backward for a device that runs block
// programs: the CUDA op (cuda/gated_conv2d.cu) and the emulator of the tests. Device provides
//   run(op, like, select, make): select(DeviceLimits, KernelLimits, LaunchOverride) -> a Launch,
//   or a choice holding one as .launch; make(choice) -> the program; runs it on like's device.
// The forward for the shape stream's widths (linear gate, C = C_out in {8, 16, 32}): the
// specialised program, its parameters (and, for NHWC inputs, its tile) in shared memory, the
// largest block of 256, 128, 64, 32 threads that fits (shared_bytes(T)), grid-stride.
template <typename Bytes>
Launch select_forward_small_c(int64_t P, Bytes&& shared_bytes, const DeviceLimits& d,
                              const KernelLimits& k, const LaunchOverride& ov = {}) {
  Launch l;
  l.threads = ov.threads ? ov.threads
                         : largest_fitting_block(d, k, {256, 128, 64, 32}, shared_bytes);
  TORCH_CHECK(l.threads > 0, "gated_conv2d: no block size fits the shape-stream program's ",
              shared_bytes(32), " bytes of shared memory on this GPU");
  l.shared_bytes = shared_bytes(l.threads);
  l.blocks = ov.blocks ? ov.blocks : grid_stride_blocks(P, l.threads, l.shared_bytes, d, k);
  return l;
}

// Whether the NHWC variants of the shape stream's programs can run: every tensor they stage
// (forward: s, out; backward: s, grad_out, grad_s) contiguous channels_last and 16-byte aligned,
// and s not also contiguous (1 x 1 images take the plain programs).
inline bool small_c_nhwc(std::initializer_list<at::Tensor> staged) {
  const auto cl = at::MemoryFormat::ChannelsLast;
  if (staged.begin()->is_contiguous()) return false;
  return std::all_of(staged.begin(), staged.end(), [&](const at::Tensor& t) {
    return t.is_contiguous(cl) && reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 == 0;
  });
}

// Whether the forward's two-pixel program (gcl::ForwardProgramSmallCPairs) can run: every
// tensor it reads or writes (s, r, out, alpha) contiguous NCHW and 4-byte aligned, and an even
// number of pixels per image (pixels 2q and 2q + 1 then share an image and a channel plane row).
inline bool small_c_pairs(int64_t H, int64_t W, std::initializer_list<at::Tensor> tensors) {
  if ((H * W) % 2 != 0) return false;
  return std::all_of(tensors.begin(), tensors.end(), [](const at::Tensor& t) {
    return t.is_contiguous() && reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 4 == 0;
  });
}

// The backward for the shape stream's widths: 128 threads (float32, kC = 32: 46 KiB, four
// blocks per SM on an H100, 83 KiB and two with the NHWC tiles; 256 threads would halve that),
// else 64 or 32 (float64 on GPUs with less shared memory), one block per row of partial sums.
// Used for Cr <= kMaxSmallCr (the shape stream's Cr is 1). bytes(T): the program's shared
// memory.
constexpr int64_t kMaxSmallCr = 8;
template <typename Bytes>
Launch select_backward_small_c(int64_t P, const GradLayout& L, Bytes&& bytes,
                               const DeviceLimits& d, const KernelLimits& k,
                               const LaunchOverride& ov = {}) {
  Launch l;
  l.blocks = ov.blocks ? ov.blocks : num_partials(P, L.size());
  l.threads = ov.threads ? ov.threads : largest_fitting_block(d, k, {128, 64, 32}, bytes);
  TORCH_CHECK(l.threads > 0, "gated_conv2d_backward: no block size fits the shape-stream "
              "program's ", bytes(32), " bytes of shared memory on this GPU");
  l.shared_bytes = bytes(l.threads);
  return l;
}

}  // namespace gcl

template <typename Device>
auto program_forward_kernel(const char* op, Device& device) {
  return [op, &device](const auto& gate, const GclSizes& z, const at::Tensor& s,
                       const at::Tensor& r, const at::Tensor& weight, const at::Tensor& bias,
                       at::Tensor& out, at::Tensor& alpha) {
    using scalar_t = gcl::gate_scalar_t<decltype(gate)>;
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t acc_bytes = sizeof(acc_t);
    if constexpr (std::is_same_v<std::decay_t<decltype(gate)>, gcl::LinearGate<acc_t, scalar_t>>) {
      // The shape stream's layers: the specialised program (the gate's parameters are the
      // contiguous gate_weight and gate_bias it points to).
      auto run_small = [&](auto program_tag) {
        using Program = std::remove_pointer_t<decltype(program_tag)>;
        device.run(
            op, s,
            [&](const DeviceLimits& d, const KernelLimits& k, const LaunchOverride& ov) {
              return gcl::select_forward_small_c(
                  Program::items(z.pixels()),
                  [&](int64_t T) { return Program::shared_bytes(z.Cr, T); }, d, k, ov);
            },
            [&](const Launch&) {
              Program p{};
              p.s = strided4d<const scalar_t>(s);
              p.r = strided4d<const scalar_t>(r);
              p.out = strided4d<scalar_t>(out);
              p.alpha = strided4d<scalar_t>(alpha);
              p.W = weight.const_data_ptr<scalar_t>();
              p.b = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
              p.wg = gate.weight;
              p.bg = gate.bias;
              p.P = z.pixels();
              p.Cr = z.Cr;
              return p;
            });
      };
      auto small = [&](auto kc) -> bool {
        constexpr int kC = decltype(kc)::value;
        if (z.C != kC || z.Cout != kC) return false;
        if (gcl::small_c_nhwc({s, out})) {
          run_small(static_cast<gcl::ForwardProgramSmallC<scalar_t, kC, true>*>(nullptr));
          return true;
        }
        if constexpr (kC == 32 && sizeof(scalar_t) == 2) {  // half types: two pixels a thread
          if (gcl::small_c_pairs(z.H, z.W, {s, r, out, alpha})) {
            run_small(static_cast<gcl::ForwardProgramSmallCPairs<scalar_t, kC>*>(nullptr));
            return true;
          }
        }
        run_small(static_cast<gcl::ForwardProgramSmallC<scalar_t, kC>*>(nullptr));
        return true;
      };
      if (small(std::integral_constant<int, 8>{}) || small(std::integral_constant<int, 16>{}) ||
          small(std::integral_constant<int, 32>{}))
        return;
    }
    device.run(
        op, s,
        [&](const DeviceLimits& d, const KernelLimits& k, const LaunchOverride& ov) {
          return gcl::select_forward(z.pixels(), z.C, z.Cr, acc_bytes, d, k, ov);
        },
        [&](const gcl::ForwardChoice& c) {
          return gcl::make_forward_program<scalar_t>(gate, s, r, out, alpha, weight, bias,
                                                     c.staged);
        });
  };
}

template <typename Device>
auto program_backward_kernel(const char* op, Device& device) {
  return [op, &device](auto scalar_tag, const GclSizes& z, const at::Tensor& g,
                       const at::Tensor& ga, const at::Tensor& s, const at::Tensor& r,
                       const at::Tensor& gw, const at::Tensor& gb, const at::Tensor& w,
                       at::Tensor& ds, at::Tensor& dr) {
    using scalar_t = std::remove_pointer_t<decltype(scalar_tag)>;
    const gcl::GradLayout layout{z.C, z.Cr, z.Cout};
    const int64_t acc_bytes = sizeof(at::opmath_type<scalar_t>);
    at::Tensor partials;
    auto make_partials = [&](const Launch& l) {
      partials = at::empty({l.blocks, layout.size()},
                           s.options().dtype(at::toOpMathType(s.scalar_type())));
    };
    // The shape stream's layers: the specialised program (gcl::BackwardProgramSmallC).
    auto run_small = [&](auto program_tag) {
      using Program = std::remove_pointer_t<decltype(program_tag)>;
      device.run(
          op, s,
          [&](const DeviceLimits& d, const KernelLimits& k, const LaunchOverride& ov) {
            return gcl::select_backward_small_c(
                z.pixels(), layout, [&](int64_t T) { return Program::shared_bytes(z.Cr, T); },
                d, k, ov);
          },
          [&](const Launch& l) {
            make_partials(l);
            return Program{
                gcl::make_backward_program<scalar_t>(g, ga, s, r, ds, dr, gw, gb, w, partials)};
          });
    };
    auto small = [&](auto kc) -> bool {
      constexpr int kC = decltype(kc)::value;
      if (z.C != kC || z.Cout != kC || z.Cr > gcl::kMaxSmallCr) return false;
      if (gcl::small_c_nhwc({s, g, ds})) {
        run_small(static_cast<gcl::BackwardProgramSmallC<scalar_t, kC, true>*>(nullptr));
      } else {
        run_small(static_cast<gcl::BackwardProgramSmallC<scalar_t, kC>*>(nullptr));
      }
      return true;
    };
    if (small(std::integral_constant<int, 8>{}) || small(std::integral_constant<int, 16>{}) ||
        small(std::integral_constant<int, 32>{}))
      return partials;
    device.run(
        op, s,
        [&](const DeviceLimits& d, const KernelLimits& k, const LaunchOverride& ov) {
          return gcl::select_backward(z.pixels(), layout, acc_bytes, d, k, ov);
        },
        [&](const Launch& l) {
          make_partials(l);
          return gcl::make_backward_program<scalar_t>(g, ga, s, r, ds, dr, gw, gb, w, partials);
        });
    return partials;
  };
}

}  // namespace gscnn
