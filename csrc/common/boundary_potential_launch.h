#pragma once
// The host side of boundary_potential and boundary_potential_backward on every device, and what
// dual_task_loss (common/dual_task_loss_launch.h) shares with them: argument checks, the Gaussian
// taps, the construction of the block program (common/boundary_potential_program.h) from tensors,
// the GPU launch selection (tile shape, shared or global memory). The CPU device, which runs
// CPU kernels of the same problem, is in cpu/boundary_potential_kernels.h.
//
// An op body runs on a `device` with the interface of cuda::Device (cuda/launch.cuh): run(op,
// like, select, make) and, for the ops that check labels, label_status_begin / _end.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "boundary_potential_program.h"
#include "checks.h"
#include "label_errors.h"
#include "launch.h"

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

inline bool empty_image(const at::Tensor& prob) {
  return prob.size(0) == 0 || prob.size(1) == 0 || prob.size(2) == 0 || prob.size(3) == 0;
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

struct TileShape {
  int64_t TH, TW;
  bool conflict_free = false;  // the buffers' row strides (Layout): conflict-free or compact
};

inline int64_t num_tiles(const at::Tensor& prob, TileShape ts) {
  return prob.size(0) * ((prob.size(2) + ts.TH - 1) / ts.TH) * ((prob.size(3) + ts.TW - 1) / ts.TW);
}

// The program of one op of the family. Undefined tensors and null pointers for what it does not
// use: target and status (potential), grad_zeta (all but the potential backward), scale (all but
// the loss backward), partials (all but the loss forward).
template <typename scalar_t, bool kLoss, bool kBackward, int kR = 0>
Pipeline<scalar_t, kLoss, kBackward, kR> make_pipeline(const at::Tensor& prob,
                                                   const at::Tensor& target, const at::Tensor& out,
                                                   const at::Tensor& grad_zeta,
                                                   const double* scale, double* partials,
                                                   uint64_t* status, double sigma,
                                                   double threshold, int64_t ignore_index,
                                                   TileShape ts) {
  using acc_t = at::opmath_type<scalar_t>;
  Pipeline<scalar_t, kLoss, kBackward, kR> p{};
  p.prob = view4<const scalar_t>(prob);
  if (target.defined())
    p.target = Labels{target.const_data_ptr<int64_t>(), target.stride(0), target.stride(1),
                      target.stride(2)};
  p.out = view4<scalar_t>(out);
  p.grad_zeta = view4<const scalar_t>(grad_zeta);
  p.scale = scale;
  p.partials = partials;
  p.status = status;
  p.N = prob.size(0);
  p.K = prob.size(1);
  p.H = prob.size(2);
  p.W = prob.size(3);
  p.TH = ts.TH;
  p.TW = ts.TW;
  p.conflict_free = ts.conflict_free;
  p.tiles_h = (p.H + ts.TH - 1) / ts.TH;
  p.tiles_w = (p.W + ts.TW - 1) / ts.TW;
  p.ignore_index = ignore_index;
  p.threshold = static_cast<acc_t>(threshold);
  p.taps = make_taps<acc_t>(sigma);
  return p;
}

// Calls f(std::integral_constant<int, kR>) with kR = 3 for the paper's sigma (radius 3: sigma in
// (2/3, 1]), the program with the radius fixed at compile time (its vector phases), and kR = 0
// (any radius) else.
constexpr int64_t kVectorRadius = 3;
template <typename F>
void with_radius(double sigma, F&& f) {
  if (radius_of(sigma) == kVectorRadius) {
    f(std::integral_constant<int, kVectorRadius>{});
  } else {
    f(std::integral_constant<int, 0>{});
  }
}

// --- GPU launch selection ---------------------------------------------------------------------
// 256 threads per block; the largest tile of 32x32 ... 4x8 pixels whose buffers fit the device's
// shared memory per block, at sigma ~ 1 with the conflict-free row strides where they fit (32x32
// in float32: the loss forward 52 KiB, its backward 107 KiB, 84 KiB with the compact strides on
// GPUs of 99 KiB per block);
// one block per tile, blocks walking the tiles grid-stride past 2^31 - 1 of them. When no tile
// fits (large sigma: the halo alone outgrows the shared memory), 32x32 tiles with the buffers in
// global scratch memory, and a grid of two blocks per SM (bounded scratch: about 150 MiB at
// sigma = 32/3 on an H100).
struct PipelineChoice {
  Launch launch;
  TileShape tile;
};

inline PipelineChoice select_pipeline(int64_t N, int64_t H, int64_t W, int64_t R, bool loss,
                                      bool backward, int64_t acc_bytes, const DeviceLimits& d,
                                      const KernelLimits& k, const LaunchOverride& ov = {}) {
  PipelineChoice c{};
  const int64_t T = ov.threads ? ov.threads : largest_block(d, k, {256, 128, 64});
  auto bytes = [&](TileShape ts) {
    return Layout(ts.TH, ts.TW, R, loss, backward, T, ts.conflict_free).total * acc_bytes;
  };
  // The vector program's buffers with conflict-free row strides where they fit, else compact
  // (Layout); the scalar program's compact (its accesses of 4 bytes gain nothing from them).
  const auto strides = [&](TileShape ts) {
    ts.conflict_free = R == kVectorRadius;
    if (ts.conflict_free && bytes(ts) > max_dynamic_shared(d, k)) ts.conflict_free = false;
    return ts;
  };
  bool scratch = ov.memory == 1;
  if (ov.tile_h > 0 && ov.tile_w > 0) {
    // The block program indexes its buffers with 32-bit integers (Layout).
    TORCH_CHECK(ov.tile_h <= 1024 && ov.tile_w <= 1024,
                "boundary potential launch: a forced tile must be at most 1024 x 1024, got ",
                ov.tile_h, " x ", ov.tile_w);
    c.tile = strides({ov.tile_h, ov.tile_w});
  } else {
    c.tile = {0, 0};
    if (!scratch) {
      for (const TileShape shape : {TileShape{32, 32}, TileShape{16, 32}, TileShape{16, 16},
                                    TileShape{8, 16}, TileShape{8, 8}, TileShape{4, 8}}) {
        const TileShape ts = strides(shape);
        if (bytes(ts) <= max_dynamic_shared(d, k)) {
          c.tile = ts;
          break;
        }
      }
    }
    if (c.tile.TH == 0) {
      scratch = true;
      c.tile = {32, 32};  // compact strides in global scratch
    }
  }
  const int64_t tiles = N * ceil_div(H, c.tile.TH) * ceil_div(W, c.tile.TW);
  c.launch.threads = T;
  (scratch ? c.launch.scratch_bytes_per_block : c.launch.shared_bytes) = bytes(c.tile);
  c.launch.blocks = ov.blocks ? ov.blocks
                              : std::max<int64_t>(1, std::min({tiles, scratch ? 2 * d.sm_count
                                                                              : kMaxGridBlocks}));
  return c;
}

template <bool kLoss, bool kBackward>
auto pipeline_selector(const at::Tensor& prob, double sigma, int64_t acc_bytes) {
  return [&prob, sigma, acc_bytes](const DeviceLimits& d, const KernelLimits& k,
                                   const LaunchOverride& ov) {
    return select_pipeline(prob.size(0), prob.size(2), prob.size(3), radius_of(sigma), kLoss,
                           kBackward, acc_bytes, d, k, ov);
  };
}

// --- op bodies ----------------------------------------------------------------------------------

#define GSCNN_PIPELINE_DISPATCH(dtype, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "boundary_potential", __VA_ARGS__)

template <typename Device>
at::Tensor run_boundary_potential(const char* op, const at::Tensor& prob, double sigma,
                                  Device& device) {
  check_prob(op, "prob", prob);
  check_sigma(op, sigma);
  auto zeta = at::empty(prob.sizes(), prob.options().memory_format(output_memory_format(prob)));
  if (empty_image(prob)) return zeta;
  GSCNN_PIPELINE_DISPATCH(prob.scalar_type(), [&] {
    with_radius(sigma, [&](auto kr) {
      device.run(op, prob,
                 pipeline_selector<false, false>(prob, sigma, sizeof(at::opmath_type<scalar_t>)),
                 [&](const PipelineChoice& c) {
                   return make_pipeline<scalar_t, false, false, decltype(kr)::value>(
                       prob, at::Tensor(), zeta, at::Tensor(), nullptr, nullptr, nullptr, sigma,
                       0.0, 0, c.tile);
                 });
    });
  });
  return zeta;
}

template <typename Device>
at::Tensor run_boundary_potential_backward(const char* op, const at::Tensor& grad_zeta,
                                           const at::Tensor& prob, double sigma, Device& device) {
  check_prob(op, "prob", prob);
  check_sigma(op, sigma);
  check_same_dtype_device(op, "prob", prob, "grad_zeta", grad_zeta);
  check_shape(op, "grad_zeta", grad_zeta, prob.sizes().vec());
  auto grad = at::empty(prob.sizes(), prob.options().memory_format(output_memory_format(prob)));
  if (empty_image(prob)) return grad;
  GSCNN_PIPELINE_DISPATCH(prob.scalar_type(), [&] {
    with_radius(sigma, [&](auto kr) {
      device.run(op, prob,
                 pipeline_selector<false, true>(prob, sigma, sizeof(at::opmath_type<scalar_t>)),
                 [&](const PipelineChoice& c) {
                   return make_pipeline<scalar_t, false, true, decltype(kr)::value>(
                       prob, at::Tensor(), grad, grad_zeta, nullptr, nullptr, nullptr, sigma,
                       0.0, 0, c.tile);
                 });
    });
  });
  return grad;
}

}  // namespace dtl
}  // namespace gscnn
