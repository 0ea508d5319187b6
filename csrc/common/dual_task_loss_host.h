#pragma once
// Host side of the boundary_potential and dual_task_loss ops, shared by the CPU kernels, the CUDA
// kernels and the CPU emulation of the CUDA kernels: argument checks, the Gaussian taps, the
// construction of the pipeline (common/dual_task_loss_blocks.h) from tensors, the block program
// (the order of the phases), and the op bodies, parametrised by how a device runs the blocks.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <cmath>
#include <vector>

#include "checks.h"
#include "dual_task_loss_blocks.h"

namespace gscnn {
namespace dtl {

inline int64_t radius_of(double sigma) { return static_cast<int64_t>(std::ceil(3.0 * sigma)); }

inline void check_sigma(const char* op, double sigma) {
  TORCH_CHECK(std::isfinite(sigma) && sigma > 0, op,
              ": argument 'sigma' must be a positive finite number, got ", sigma);
  TORCH_CHECK(radius_of(sigma) <= kMaxRadius, op, ": argument 'sigma' must be at most ",
              kMaxRadius / 3.0, " (Gaussian radius ceil(3 sigma) <= ", kMaxRadius, "), got ",
              sigma);
}

inline void check_prob(const char* op, const char* name, const at::Tensor& prob) {
  check_dim(op, name, prob, 4, "(N, K, H, W)");
  check_floating(op, name, prob);
}

// target: (N, H, W) int64 on prob's device; every label is in [0, K) or is ignore_index.
inline void check_target(const char* op, const at::Tensor& prob, const at::Tensor& target,
                         int64_t ignore_index) {
  check_dim(op, "target", target, 3, "(N, H, W)");
  TORCH_CHECK(target.scalar_type() == at::kLong, op,
              ": argument 'target' must be an int64 tensor of class indices, got ",
              target.scalar_type());
  TORCH_CHECK(target.device() == prob.device(), op, ": argument 'target' is on ",
              target.device(), " but 'prob' is on ", prob.device());
  TORCH_CHECK(target.size(0) == prob.size(0) && target.size(1) == prob.size(2) &&
                  target.size(2) == prob.size(3),
              op, ": argument 'target' must have shape (N, H, W) = (", prob.size(0), ", ",
              prob.size(2), ", ", prob.size(3), ") to match 'prob' of shape ", prob.sizes(),
              ", got ", target.sizes());
  if (target.numel() == 0) return;
  const int64_t K = prob.size(1);
  const auto bad = target.ne(ignore_index).logical_and(target.lt(0).logical_or(target.ge(K)));
  if (bad.any().item<bool>()) {
    const int64_t v = target.masked_select(bad).min().item<int64_t>();
    const int64_t w = target.masked_select(bad).max().item<int64_t>();
    const int64_t shown = v < 0 ? v : w;
    TORCH_CHECK(false, op, ": argument 'target' has label ", shown,
                shown < 0 ? " (negative)" : "", "; labels must be in [0, K) = [0, ", K,
                ") or equal to ignore_index = ", ignore_index);
  }
}

template <typename acc_t>
Taps<acc_t> make_taps(double sigma) {
  Taps<acc_t> k{};
  const int64_t R = radius_of(sigma);
  k.R = static_cast<int>(R);
  std::vector<double> g(2 * R + 1);
  double total = 0;
  for (int64_t a = -R; a <= R; ++a) total += g[a + R] = std::exp(-double(a * a) / (2 * sigma * sigma));
  double run = 0;
  k.cum[0] = 0;
  for (int64_t i = 0; i < 2 * R + 1; ++i) {
    k.g[i] = static_cast<acc_t>(g[i] / total);
    run += g[i] / total;
    k.cum[i + 1] = static_cast<acc_t>(run);
  }
  return k;
}

template <typename T>
View4<T> view4(const at::Tensor& t) {
  if (!t.defined()) return {nullptr, 0, 0, 0, 0};
  return {static_cast<T*>(t.data_ptr()), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// Tile shape of a launch. `threads` only matters for the layout of the reduction buffer.
struct TileShape {
  int64_t TH, TW;
};

template <typename scalar_t, bool kLoss, bool kBackward>
using PipelineOf = Pipeline<scalar_t, at::opmath_type<scalar_t>, kLoss, kBackward>;

template <typename scalar_t, bool kLoss, bool kBackward>
PipelineOf<scalar_t, kLoss, kBackward> make_pipeline(
    const at::Tensor& prob, const at::Tensor& target, const at::Tensor& out,
    const at::Tensor& grad_zeta, const at::Tensor& scale, const at::Tensor& partials,
    double sigma, double threshold, int64_t ignore_index, TileShape ts) {
  using acc_t = at::opmath_type<scalar_t>;
  PipelineOf<scalar_t, kLoss, kBackward> p{};
  p.prob = view4<const scalar_t>(prob);
  if (target.defined())
    p.target = Labels{target.const_data_ptr<int64_t>(), target.stride(0), target.stride(1),
                      target.stride(2)};
  p.out = view4<scalar_t>(out);
  p.grad_zeta = view4<const scalar_t>(grad_zeta);
  p.scale = scale.defined() ? scale.const_data_ptr<double>() : nullptr;
  p.partials = partials.defined() ? partials.data_ptr<double>() : nullptr;
  p.N = prob.size(0);
  p.K = prob.size(1);
  p.H = prob.size(2);
  p.W = prob.size(3);
  p.TH = ts.TH;
  p.TW = ts.TW;
  p.tiles_h = (p.H + ts.TH - 1) / ts.TH;
  p.tiles_w = (p.W + ts.TW - 1) / ts.TW;
  p.ignore_index = ignore_index;
  p.threshold = static_cast<acc_t>(threshold);
  p.taps = make_taps<acc_t>(sigma);
  return p;
}

// The block program: the phases in order. `phase(f)` runs f(t) for every thread t of the block
// and then waits at a block barrier; `state(t)` points to thread t's (sum, count) of the loss forward.
template <typename acc_t>
struct LossState {
  acc_t sum, count;
};

template <bool kLoss, bool kBackward, typename Pipe, typename acc_t, typename Phase,
          typename State>
GSCNN_HD void run_block(const Pipe& p, acc_t* sm, int64_t blk, int64_t T, Phase&& phase,
                        State&& state) {
  const Layout Lo = p.layout(T);
  const auto tl = p.tile_of(blk);
  if (kLoss) {
    phase([&](int64_t t) { p.load_labels(sm, Lo, tl, t, T); });
    phase([&](int64_t t) { p.keep_mask(sm, Lo, tl, t, T); });
  }
  if (kLoss && !kBackward) phase([&](int64_t t) { state(t)->sum = state(t)->count = acc_t(0); });
  for (int64_t k = 0; k < p.K; ++k) {
    phase([&](int64_t t) { p.load_prob(sm, Lo, tl, k, t, T); });
    phase([&](int64_t t) { p.blur_rows(sm, Lo, k, t, T); });
    phase([&](int64_t t) { p.blur_cols(sm, Lo, t, T); });
    if (!kBackward) {
      phase([&](int64_t t) {
        auto* st = state(t);
        p.forward_zeta(sm, Lo, tl, k, t, T, st->sum, st->count);
      });
    } else {
      phase([&](int64_t t) { p.backward_zeta(sm, Lo, tl, k, t, T); });
      phase([&](int64_t t) { p.backward_diff(sm, Lo, tl, t, T); });
      phase([&](int64_t t) { p.backward_blur_cols(sm, Lo, tl, t, T); });
      phase([&](int64_t t) { p.backward_blur_rows(sm, Lo, tl, k, t, T); });
    }
  }
  if (kLoss && !kBackward) {
    phase([&](int64_t t) { p.publish(sm, Lo, t, T, state(t)->sum, state(t)->count); });
    phase([&](int64_t t) { p.reduce(sm, Lo, blk, t, T); });
  }
}

// --- op bodies --------------------------------------------------------------------------------
// `launch(pipeline, tag)` runs every block of the pipeline; the tag is a null pointer of type
// std::integral_constant<int, kLoss * 2 + kBackward>* (unused; the pipeline's type says it).

#define GSCNN_DTL_DISPATCH(op, dtype, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "gscnn_ops.dual_task_loss", __VA_ARGS__)

inline bool empty_image(const at::Tensor& prob) {
  return prob.size(0) == 0 || prob.size(1) == 0 || prob.size(2) == 0 || prob.size(3) == 0;
}

template <typename Launch>
at::Tensor run_boundary_potential(const char* op, const at::Tensor& prob, double sigma,
                                  Launch&& launch) {
  check_prob(op, "prob", prob);
  check_sigma(op, sigma);
  auto zeta = at::empty(prob.sizes(), prob.options().memory_format(output_memory_format(prob)));
  if (empty_image(prob)) return zeta;
  GSCNN_DTL_DISPATCH(op, prob.scalar_type(), [&] {
    launch(make_pipeline<scalar_t, false, false>(prob, at::Tensor(), zeta, at::Tensor(),
                                                 at::Tensor(), at::Tensor(), sigma, 0.0, 0,
                                                 launch.tile(false, false, sigma, sizeof(at::opmath_type<scalar_t>))));
  });
  return zeta;
}

template <typename Launch>
at::Tensor run_boundary_potential_backward(const char* op, const at::Tensor& grad_zeta,
                                           const at::Tensor& prob, double sigma,
                                           Launch&& launch) {
  check_prob(op, "prob", prob);
  check_sigma(op, sigma);
  check_same_dtype_device(op, "prob", prob, "grad_zeta", grad_zeta);
  check_shape(op, "grad_zeta", grad_zeta, prob.sizes().vec());
  auto grad = at::empty(prob.sizes(), prob.options().memory_format(output_memory_format(prob)));
  if (empty_image(prob)) return grad;
  GSCNN_DTL_DISPATCH(op, prob.scalar_type(), [&] {
    launch(make_pipeline<scalar_t, false, true>(prob, at::Tensor(), grad, grad_zeta,
                                                at::Tensor(), at::Tensor(), sigma, 0.0, 0,
                                                launch.tile(false, true, sigma, sizeof(at::opmath_type<scalar_t>))));
  });
  return grad;
}

template <typename Launch>
std::tuple<at::Tensor, at::Tensor> run_dual_task_loss(const char* op, const at::Tensor& prob,
                                                      const at::Tensor& target, double sigma,
                                                      double threshold, int64_t ignore_index,
                                                      Launch&& launch) {
  check_prob(op, "prob", prob);
  check_sigma(op, sigma);
  TORCH_CHECK(std::isfinite(threshold), op, ": argument 'threshold' must be finite, got ",
              threshold);
  check_target(op, prob, target, ignore_index);
  const auto dopts = prob.options().dtype(at::kDouble);
  if (empty_image(prob)) {
    return {at::zeros({}, prob.options()), at::zeros({}, dopts)};
  }
  at::Tensor partials;
  GSCNN_DTL_DISPATCH(op, prob.scalar_type(), [&] {
    const TileShape ts = launch.tile(true, false, sigma, sizeof(at::opmath_type<scalar_t>));
    const int64_t blocks = prob.size(0) * ((prob.size(2) + ts.TH - 1) / ts.TH) *
                           ((prob.size(3) + ts.TW - 1) / ts.TW);
    partials = at::empty({blocks, 2}, dopts);
    launch(make_pipeline<scalar_t, true, false>(prob, target, at::Tensor(), at::Tensor(),
                                                at::Tensor(), partials, sigma, threshold,
                                                ignore_index, ts));
  });
  const auto total = partials.sum(0);  // fixed order for a given shape: deterministic
  const auto count = total.select(0, 1);
  const auto loss = total.select(0, 0).div(count.clamp_min(1)).to(prob.scalar_type());
  return {loss, count.clone()};
}

template <typename Launch>
at::Tensor run_dual_task_loss_backward(const char* op, const at::Tensor& grad_loss,
                                       const at::Tensor& prob, const at::Tensor& target,
                                       const at::Tensor& count, double sigma, double threshold,
                                       int64_t ignore_index, Launch&& launch) {
  check_prob(op, "prob", prob);
  check_sigma(op, sigma);
  check_target(op, prob, target, ignore_index);
  TORCH_CHECK(grad_loss.numel() == 1 && grad_loss.device() == prob.device(), op,
              ": argument 'grad' must be a one-element tensor on ", prob.device(), ", got shape ",
              grad_loss.sizes(), " on ", grad_loss.device());
  TORCH_CHECK(count.numel() == 1 && count.device() == prob.device(), op,
              ": argument 'count' must be a one-element tensor on ", prob.device(),
              ", got shape ", count.sizes(), " on ", count.device());
  auto grad = at::empty(prob.sizes(), prob.options().memory_format(output_memory_format(prob)));
  if (empty_image(prob)) return grad;
  // d loss / d zeta = grad * sign(zeta - zeta_hat) / max(|P+|, 1) on P+: one scalar, kept on the
  // device (no synchronisation).
  const auto scale = grad_loss.reshape({}).to(at::kDouble).div(count.reshape({}).to(at::kDouble).clamp_min(1)).contiguous();
  GSCNN_DTL_DISPATCH(op, prob.scalar_type(), [&] {
    launch(make_pipeline<scalar_t, true, true>(prob, target, grad, at::Tensor(), scale,
                                               at::Tensor(), sigma, threshold, ignore_index,
                                               launch.tile(true, true, sigma, sizeof(at::opmath_type<scalar_t>))));
  });
  return grad;
}

}  // namespace dtl
}  // namespace gscnn
