// CPU emulation of the CUDA gated_conv2d kernels, for tests on machines without a GPU.
//
// It runs the CUDA kernels' own bodies (common/gated_conv2d_blocks.h) the way a GPU schedules
// them: block by block, and within a block each phase for every thread before the next phase
// starts (which is what __syncthreads() guarantees), with a per-block array as shared memory.
// `threads` and `blocks` are free so that tests can force partial tiles, several tiles per block
// and grid-stride loops on small inputs. Not a fast path: use the ordinary ops.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "../common/gated_conv2d_blocks.h"
#include "../common/gated_conv2d_host.h"

namespace gscnn {
namespace {

constexpr const char* kForwardOp = "gscnn_ops._gated_conv2d_emulate_cuda";
constexpr const char* kMlpOp = "gscnn_ops._gated_conv2d_mlp_emulate_cuda";
constexpr const char* kBackwardOp = "gscnn_ops._gated_conv2d_backward_emulate_cuda";

void check_launch(const char* op, int64_t threads, int64_t blocks) {
  TORCH_CHECK(threads >= 1 && threads <= 1024, op, ": argument 'threads' must be in [1, 1024], got ",
              threads);
  TORCH_CHECK(blocks >= 1, op, ": argument 'blocks' must be positive, got ", blocks);
}

auto forward_launch(int64_t T, int64_t blocks) {
  return [T, blocks](const auto& gate, const GclSizes& z, const at::Tensor& s, const at::Tensor& r,
                     const at::Tensor& weight, const at::Tensor& bias, at::Tensor& out,
                     at::Tensor& alpha) {
    using scalar_t = gcl::gate_scalar_t<decltype(gate)>;
    using acc_t = at::opmath_type<scalar_t>;
    const auto block = gcl::make_forward_block<scalar_t>(gate, s, r, out, alpha, weight, bias);
    std::vector<acc_t> shared(block.shared_elems(z.C, z.Cr, T));
    for (int64_t blk = 0; blk < blocks; ++blk)  // the kernel's grid-stride loop, thread by thread
      for (int64_t t = 0; t < T; ++t)
        for (int64_t p = blk * T + t; p < block.P; p += blocks * T)
          block.pixel(shared.data(), p, t, T);
  };
}

std::tuple<at::Tensor, at::Tensor> gated_conv2d_emulate(
    const at::Tensor& s, const at::Tensor& r, const at::Tensor& gate_weight,
    const at::Tensor& gate_bias, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    int64_t threads, int64_t blocks) {
  check_launch(kForwardOp, threads, blocks);
  return run_gated_conv2d_forward(kForwardOp, s, r, std::nullopt, std::nullopt, gate_weight,
                                  gate_bias, weight, bias, forward_launch(threads, blocks));
}

std::tuple<at::Tensor, at::Tensor> gated_conv2d_mlp_emulate(
    const at::Tensor& s, const at::Tensor& r, const at::Tensor& hidden_weight,
    const at::Tensor& hidden_bias, const at::Tensor& gate_weight, const at::Tensor& gate_bias,
    const at::Tensor& weight, const std::optional<at::Tensor>& bias, int64_t threads,
    int64_t blocks) {
  check_launch(kMlpOp, threads, blocks);
  return run_gated_conv2d_forward(kMlpOp, s, r, hidden_weight, hidden_bias, gate_weight, gate_bias,
                                  weight, bias, forward_launch(threads, blocks));
}

BackwardResult gated_conv2d_backward_emulate(const at::Tensor& grad_out,
                                             const std::optional<at::Tensor>& grad_alpha,
                                             const at::Tensor& s, const at::Tensor& r,
                                             const at::Tensor& gate_weight,
                                             const at::Tensor& gate_bias, const at::Tensor& weight,
                                             int64_t threads, int64_t max_blocks) {
  check_launch(kBackwardOp, threads, max_blocks);
  const int64_t T = threads;
  return run_gated_conv2d_backward(
      kBackwardOp, grad_out, grad_alpha, s, r, gate_weight, gate_bias, weight,
      [T, max_blocks](auto scalar_tag, const GclSizes&, const at::Tensor& g, const at::Tensor& ga,
                      const at::Tensor& s_, const at::Tensor& r_, const at::Tensor& gw,
                      const at::Tensor& gb, const at::Tensor& w, at::Tensor& ds, at::Tensor& dr) {
        using scalar_t = std::remove_pointer_t<decltype(scalar_tag)>;
        using acc_t = at::opmath_type<scalar_t>;
        const auto block = gcl::make_backward_block<scalar_t>(g, ga, s_, r_, ds, dr, gw, gb, w);
        const int64_t blocks = std::min(gcl::num_partials(block.num_tiles(T)), max_blocks);
        auto partials = at::empty({blocks, block.L.size()},
                                  s_.options().dtype(at::toOpMathType(s_.scalar_type())));
        acc_t* part = static_cast<acc_t*>(partials.data_ptr());
        std::vector<acc_t> shared(gcl::BackwardShared(block.L, T).total);
        for (int64_t blk = 0; blk < blocks; ++blk) {
          acc_t* row = part + blk * block.L.size();
          for (int64_t t = 0; t < T; ++t) block.zero_partials(row, t, T);
          for (int64_t tile = blk; tile < block.num_tiles(T); tile += blocks) {
            for (int64_t t = 0; t < T; ++t) block.pixel_phase(shared.data(), tile, t, T);
            // __syncthreads()
            for (int64_t t = 0; t < T; ++t) block.reduce_phase(shared.data(), row, t, T);
            // __syncthreads()
          }
        }
        return partials;
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CPU, m) {
  m.impl("_gated_conv2d_emulate_cuda", &gated_conv2d_emulate);
  m.impl("_gated_conv2d_mlp_emulate_cuda", &gated_conv2d_mlp_emulate);
  m.impl("_gated_conv2d_backward_emulate_cuda", &gated_conv2d_backward_emulate);
}

}  // namespace gscnn
