// CPU emulation of the CUDA boundary_potential / dual_task_loss kernels, for tests on machines
// without a GPU.
//
// It runs the CUDA kernels' block program (common/dual_task_loss_host.h: run_block, phases from
// common/dual_task_loss_blocks.h) the way a GPU schedules it: block by block, and within a block
// each phase for every thread before the next phase starts (what __syncthreads() guarantees),
// with a per-block array as shared memory and a per-thread (sum, count) as registers. The tile
// shape and the thread count are free, so tests can force tiles smaller than the image, halos
// crossing the borders, partial tiles and thread counts that do not divide the regions. Not a
// fast path.

#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "../common/dual_task_loss_host.h"

namespace gscnn {
namespace {

using dtl::TileShape;

struct EmulatedLaunch {
  int64_t TH, TW, T;

  TileShape tile(bool, bool, double, size_t) const { return {TH, TW}; }

  template <typename Pipe>
  void operator()(const Pipe& p) const {
    using acc_t = typename Pipe::acc_type;
    std::vector<acc_t> sm(p.layout(T).total);
    std::vector<dtl::LossState<acc_t>> regs(T);
    for (int64_t blk = 0; blk < p.num_blocks(); ++blk) {
      // Fill shared memory with NaN: a phase that reads what no earlier phase wrote shows up.
      std::fill(sm.begin(), sm.end(), std::numeric_limits<acc_t>::quiet_NaN());
      dtl::run_block<Pipe::is_loss, Pipe::is_backward>(
          p, sm.data(), blk, T,
          [&](auto&& f) {
            for (int64_t t = 0; t < T; ++t) f(t);
            // __syncthreads()
          },
          [&](int64_t t) { return &regs[t]; });
    }
  }
};

EmulatedLaunch launch_of(const char* op, int64_t tile_h, int64_t tile_w, int64_t threads) {
  TORCH_CHECK(tile_h >= 1 && tile_w >= 1, op, ": tile_h and tile_w must be positive, got ",
              tile_h, " and ", tile_w);
  TORCH_CHECK(threads >= 1 && threads <= 1024, op, ": argument 'threads' must be in [1, 1024], got ",
              threads);
  return {tile_h, tile_w, threads};
}

at::Tensor potential_emulate(const at::Tensor& prob, double sigma, int64_t tile_h, int64_t tile_w,
                             int64_t threads) {
  constexpr const char* op = "gscnn_ops._boundary_potential_emulate_cuda";
  return dtl::run_boundary_potential(op, prob, sigma, launch_of(op, tile_h, tile_w, threads));
}

at::Tensor potential_backward_emulate(const at::Tensor& grad_zeta, const at::Tensor& prob,
                                      double sigma, int64_t tile_h, int64_t tile_w,
                                      int64_t threads) {
  constexpr const char* op = "gscnn_ops._boundary_potential_backward_emulate_cuda";
  return dtl::run_boundary_potential_backward(op, grad_zeta, prob, sigma,
                                              launch_of(op, tile_h, tile_w, threads));
}

std::tuple<at::Tensor, at::Tensor> loss_emulate(const at::Tensor& prob, const at::Tensor& target,
                                                double sigma, double threshold,
                                                int64_t ignore_index, int64_t tile_h,
                                                int64_t tile_w, int64_t threads) {
  constexpr const char* op = "gscnn_ops._dual_task_loss_emulate_cuda";
  return dtl::run_dual_task_loss(op, prob, target, sigma, threshold, ignore_index,
                                 launch_of(op, tile_h, tile_w, threads));
}

at::Tensor loss_backward_emulate(const at::Tensor& grad, const at::Tensor& prob,
                                 const at::Tensor& target, const at::Tensor& count, double sigma,
                                 double threshold, int64_t ignore_index, int64_t tile_h,
                                 int64_t tile_w, int64_t threads) {
  constexpr const char* op = "gscnn_ops._dual_task_loss_backward_emulate_cuda";
  return dtl::run_dual_task_loss_backward(op, grad, prob, target, count, sigma, threshold,
                                          ignore_index, launch_of(op, tile_h, tile_w, threads));
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CPU, m) {
  m.impl("_boundary_potential_emulate_cuda", &potential_emulate);
  m.impl("_boundary_potential_backward_emulate_cuda", &potential_backward_emulate);
  m.impl("_dual_task_loss_emulate_cuda", &loss_emulate);
  m.impl("_dual_task_loss_backward_emulate_cuda", &loss_backward_emulate);
}

}  // namespace gscnn
