// CPU boundary_potential and dual_task_loss ops (forward and fused backward).
//
// The CPU kernels run the same block pipeline as the CUDA kernels (common/dual_task_loss_blocks.h)
// with one thread per block: every phase is then a plain nested loop over its region of the tile,
// and blocks (image, tile) are spread over the cores with at::parallel_for. Each core keeps one
// tile-sized buffer; nothing of size N*K*H*W is allocated besides the output.

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../common/dual_task_loss_host.h"

namespace gscnn {
namespace {

using dtl::TileShape;

struct CpuLaunch {
  // Tiles of 32 rows x 256 columns: the block's buffers (a few hundred KiB) stay in L2, and the
  // halo (R + 1 forward, 2R + 2 backward) is a small fraction of the tile for sigma ~ 1.
  TileShape tile(bool /*loss*/, bool /*backward*/, double /*sigma*/, size_t /*acc_bytes*/) const { return {32, 256}; }

  template <typename Pipe>
  void operator()(const Pipe& p) const {
    using acc_t = typename Pipe::acc_type;
    constexpr bool kLoss = Pipe::is_loss, kBackward = Pipe::is_backward;
    const int64_t total = p.layout(1).total;
    at::parallel_for(0, p.num_blocks(), 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> sm(total);
      dtl::LossState<acc_t> st{};
      for (int64_t blk = begin; blk < end; ++blk) {
        dtl::run_block<kLoss, kBackward>(
            p, sm.data(), blk, 1, [](auto&& f) { f(0); },
            [&](int64_t) { return &st; });
      }
    });
  }
};

constexpr const char* kPotentialOp = "gscnn_ops.boundary_potential";
constexpr const char* kPotentialBackwardOp = "gscnn_ops.boundary_potential_backward";
constexpr const char* kLossOp = "gscnn_ops.dual_task_loss";
constexpr const char* kLossBackwardOp = "gscnn_ops.dual_task_loss_backward";

at::Tensor boundary_potential_cpu(const at::Tensor& prob, double sigma) {
  return dtl::run_boundary_potential(kPotentialOp, prob, sigma, CpuLaunch{});
}

at::Tensor boundary_potential_backward_cpu(const at::Tensor& grad_zeta, const at::Tensor& prob,
                                           double sigma) {
  return dtl::run_boundary_potential_backward(kPotentialBackwardOp, grad_zeta, prob, sigma,
                                              CpuLaunch{});
}

std::tuple<at::Tensor, at::Tensor> dual_task_loss_cpu(const at::Tensor& prob,
                                                      const at::Tensor& target, double sigma,
                                                      double threshold, int64_t ignore_index) {
  return dtl::run_dual_task_loss(kLossOp, prob, target, sigma, threshold, ignore_index,
                                 CpuLaunch{});
}

at::Tensor dual_task_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& prob,
                                       const at::Tensor& target, const at::Tensor& count,
                                       double sigma, double threshold, int64_t ignore_index) {
  return dtl::run_dual_task_loss_backward(kLossBackwardOp, grad, prob, target, count, sigma,
                                          threshold, ignore_index, CpuLaunch{});
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CPU, m) {
  m.impl("boundary_potential", &boundary_potential_cpu);
  m.impl("boundary_potential_backward", &boundary_potential_backward_cpu);
  m.impl("dual_task_loss", &dual_task_loss_cpu);
  m.impl("dual_task_loss_backward", &dual_task_loss_backward_cpu);
}

}  // namespace gscnn
