// The CPU kernels of gated_conv2d, compiled once per instruction set: the including file defines
// GSCNN_CPU_ISA (the namespace) and GSCNN_CPU_VECTOR_BYTES (its register width) after including
// gated_conv2d_kernels.h and, for the AVX variants, after a `#pragma GCC target`, so that these
// loops over pixels vectorise with wide registers.
// No #include here but simd_impl.h (ours, itself without #include): every header must come
// before the pragma (see gated_conv2d_kernels.h).
//
// Pixels are processed in tiles of kTile consecutive pixels of one image, every pass over a tile a
// unit-stride loop over its pixels, one channel row at a time. Whole tiles of NCHW tensors of the
// accumulation type are written where they lie, and read there up to kInPlaceMaxChannels
// channels; other tiles (wider, strided, partial, float16 / bfloat16) are copied into small
// buffers laid out [channel][pixel] first (the same arithmetic: the results do not depend on
// which). Nothing of size N*C*H*W is written besides the outputs.
// The backward pass reduces parameter gradients into a fixed number of partial rows (a function
// of the problem size only) that are summed in order: deterministic for any thread count.

#if !defined(GSCNN_CPU_ISA) || !defined(GSCNN_CPU_VECTOR_BYTES)
#error "define GSCNN_CPU_ISA and GSCNN_CPU_VECTOR_BYTES before including gated_conv2d_kernels_impl.h"
#endif

namespace gscnn {
namespace cpu {
namespace GSCNN_CPU_ISA {

#include "simd_impl.h"  // Simd, vload, stream_vector, stream_fence (no #include of its own)

namespace {

constexpr int64_t kTile = 128;
// Lanes of the partial sums: 16 floats fill an AVX-512 register (kTile is a multiple).
constexpr int kLanes = 16;

// Tiles never cross an image, so a tile is (image n, first pixel hw0 of it, length).
struct TileGrid {
  int64_t HW, per_image, count;
  TileGrid(int64_t N, int64_t HW_) : HW(HW_), per_image((HW_ + kTile - 1) / kTile) {
    count = N * per_image;
  }
  int64_t first_pixel(int64_t tile) const {
    return (tile / per_image) * HW + (tile % per_image) * kTile;
  }
  int64_t length(int64_t tile) const {
    const int64_t hw0 = (tile % per_image) * kTile;
    return std::min(kTile, HW - hw0);
  }
};

// Where the pixels of one tile lie in one strided tensor: element offsets of channel 0, and
// whether they are consecutive (NCHW-contiguous images), which lets loads and stores run as
// plain vectorisable loops instead of gathers.
struct TileOffsets {
  int64_t off[kTile];
  bool consecutive;
  template <typename T>
  void set(const Strided4d<T>& v, int64_t p0, int64_t len) {
    const gcl::PixelIndexer& px = v.px;
    consecutive = px.sW == 1 && px.sH == px.W;
    off[0] = px.offset(p0);
    if (consecutive) return;  // off[t] = off[0] + t; loads and stores use only off[0]
    // Walk the tile's pixels row by row (a tile never leaves its image): no divisions.
    int64_t w = (p0 % px.HW) % px.W, o = off[0];
    for (int64_t t = 1; t < len; ++t) {
      if (++w == px.W) {
        w = 0;
        o += px.sH - (px.W - 1) * px.sW;
      } else {
        o += px.sW;
      }
      off[t] = o;
    }
  }
};

// The next tile's pixels of one channel, prefetched while this one is copied: a copied tile reads
// C short runs (kTile pixels) far apart, too many concurrent streams for the hardware prefetchers
// (measured 2026-12-01: the copying forward at C = 32 read and wrote at a fifth of the machine's
// copy bandwidth without it). Tiles used in place are not prefetched: measured on the same
// machine, prefetching them made forward + backward 10-15 % slower at C = 8 and 16 (the
// prefetches waited for line-fill buffers the hardware prefetchers use better). A prefetch never
// faults: past the end of the tensor it does nothing.
template <typename T>
void prefetch_next_tile(const T* row) {
  constexpr int64_t kLine = 64 / sizeof(T);  // elements per cache line
  for (int64_t t = kTile; t < 2 * kTile; t += kLine) __builtin_prefetch(row + t);
}

// A tile's channels of one tensor as the passes over the tile read them: channel c at p + c * ld.
template <typename acc_t>
struct TileRows {
  const acc_t* p;
  int64_t ld;
  const acc_t* row(int64_t c) const { return p + c * ld; }
};

// Whether a tile of a tensor of element type T is used where it lies, without a copy: a whole
// tile (nothing to pad), of consecutive pixels (NCHW-contiguous images), already in the
// accumulation type (float32, float64).
template <typename T, typename acc_t>
bool in_place(const TileOffsets& at, int64_t len) {
  return std::is_same_v<std::remove_const_t<T>, acc_t> && at.consecutive && len == kTile;
}

// The most channel rows of one tensor a tile reads in place. In place, a tile's channel rows lie
// H * W values apart: for most image sizes a multiple of 4 KiB, so the rows' same pixels share one
// L1 set (and, 64 KiB apart, one L2 set), which holds 8 lines on the x86 cores we target. The
// passes over a tile read each row many times (the GEMMs once per block of output rows); with
// more rows than ways they come back from L3. Copied, the rows lie 512 bytes apart. Measured on
// the AVX2 AMD EPYC (2026-12-03, one process alternating the two per call, 15-20 rounds): at
// C = 32 copying made the forward 10-20 % faster and the backward 5-15 %, at C = 16 no change,
// at C = 8 in place stayed faster (the copy's load and store per value cost more there).
constexpr int64_t kInPlaceMaxChannels = 16;

// The `channels` channels of a tile: in place where in_place() allows and there are at most
// kInPlaceMaxChannels of them (every pass then reads the tensor itself: the copy, a load and a
// store per value, was the largest single pass of the backward at C = 8), else copied into
// buf[c * kTile + t], converted and zero-padded for t >= len.
template <typename T, typename acc_t>
TileRows<acc_t> tile_rows(const Strided4d<const T>& v, const TileOffsets& at, int64_t len,
                          int64_t channels, acc_t* buf) {
  if constexpr (std::is_same_v<T, acc_t>) {
    if (in_place<T, acc_t>(at, len) && channels <= kInPlaceMaxChannels) {
      return {v.data + at.off[0], v.sC};
    }
  }
  for (int64_t c = 0; c < channels; ++c) {
    acc_t* row = buf + c * kTile;
    const T* base = v.data + c * v.sC;
    if (at.consecutive) {
      const T* src = base + at.off[0];
      prefetch_next_tile(src);
      for (int64_t t = 0; t < len; ++t) row[t] = static_cast<acc_t>(src[t]);
    } else {
      for (int64_t t = 0; t < len; ++t) row[t] = static_cast<acc_t>(base[at.off[t]]);
    }
    for (int64_t t = len; t < kTile; ++t) row[t] = acc_t(0);
  }
  return {buf, kTile};
}

// Writes channel c of a tile of tensor v: pixels t0 .. t0 + lanes - 1 get value(t0), a vector,
// for t0 = 0, lanes, ... (values at t >= len are computed and dropped). Where the tile lies in
// place (in_place) straight into the tensor, with streaming stores if the row starts a cache
// line; otherwise through buf (kTile values) and a converting / scattering copy.
template <typename T, typename acc_t, typename Value>
void write_row(const Strided4d<T>& v, const TileOffsets& at, int64_t len, int64_t c, acc_t* buf,
               Value value) {
  using V = typename Simd<acc_t>::type;
  constexpr int VL = Simd<acc_t>::lanes;
  static_assert(kTile % VL == 0, "kTile must hold whole vectors");
  T* base = v.data + c * v.sC;
  if constexpr (std::is_same_v<T, acc_t>) {
    if (in_place<T, acc_t>(at, len)) {
      T* dst = base + at.off[0];
      if (reinterpret_cast<uintptr_t>(dst) % 64 == 0) {
        for (int64_t t0 = 0; t0 < kTile; t0 += VL) stream_vector(dst + t0, value(t0));
      } else {
        for (int64_t t0 = 0; t0 < kTile; t0 += VL) {
          const V y = value(t0);
          std::memcpy(dst + t0, &y, sizeof(V));
        }
      }
      return;
    }
  }
  for (int64_t t0 = 0; t0 < kTile; t0 += VL) {
    const V y = value(t0);
    std::memcpy(buf + t0, &y, sizeof(V));
  }
  if (at.consecutive) {
    T* dst = base + at.off[0];
    for (int64_t t = 0; t < len; ++t) dst[t] = static_cast<T>(buf[t]);
  } else {
    for (int64_t t = 0; t < len; ++t) base[at.off[t]] = static_cast<T>(buf[t]);
  }
}

// The gate's logits z of every pixel of a tile into Z (2 * kTile values of scratch).
template <typename acc_t, typename Gate>
void tile_logits(const Gate& gate, const TileRows<acc_t>& S, const TileRows<acc_t>& R, int64_t C,
                 int64_t Cr, acc_t* Z) {
  gate.logit_tile(S.p, S.ld, R.p, R.ld, C, Cr, kTile, Z, Z + kTile);
}
// The paper's linear gate: z = b + sum_d w_d x_d with the sum in registers, two vectors of pixels
// at a time (logit_tile adds each channel into Z in memory: a load and a store per channel and
// pixel more; the same sums in the same order).
template <typename acc_t, typename w_t>
void tile_logits(const gcl::LinearGate<acc_t, w_t>& gate, const TileRows<acc_t>& S,
                 const TileRows<acc_t>& R, int64_t C, int64_t Cr, acc_t* Z) {
  using V = typename Simd<acc_t>::type;
  constexpr int VL = Simd<acc_t>::lanes;
  const acc_t b = static_cast<acc_t>(gate.bias[0]);
  for (int64_t t0 = 0; t0 < kTile; t0 += 2 * VL) {
    V z0 = V{} + b, z1 = z0;
    for (int64_t d = 0; d < C + Cr; ++d) {
      const acc_t w = static_cast<acc_t>(gate.weight[d]);
      const acc_t* x = d < C ? S.row(d) : R.row(d - C);
      z0 += w * vload(x + t0);
      z1 += w * vload(x + t0 + VL);
    }
    std::memcpy(Z + t0, &z0, sizeof(V));
    std::memcpy(Z + t0 + VL, &z1, sizeof(V));
  }
}

// Gate of every pixel of a tile: alpha and one_plus_alpha = 1 + alpha. Padded pixels get 0 so
// that they contribute nothing downstream. Z is scratch of 2 * kTile values.
template <typename acc_t, typename Gate>
void tile_gate(const Gate& gate, const TileRows<acc_t>& S, const TileRows<acc_t>& R, int64_t C,
               int64_t Cr, int64_t len, acc_t* Z, acc_t* alpha, acc_t* one_plus_alpha) {
  tile_logits(gate, S, R, C, Cr, Z);
  // Padding zeroed in a loop of its own: with a select on t < len in it, GCC does not vectorise
  // this loop for AVX2 ("control flow in loop"; AVX-512 masks it), and the scalar sigmoid took a
  // quarter of the AVX2 build's backward.
  for (int64_t t = 0; t < kTile; ++t) {
    const acc_t a = gcl::sigmoid(Z[t]);
    alpha[t] = a;
    one_plus_alpha[t] = acc_t(1) + a;
  }
  for (int64_t t = len; t < kTile; ++t) alpha[t] = one_plus_alpha[t] = acc_t(0);
}

// Y = A X for one tile: A is rows x K (row-major), X is K x kTile (row k at X.row(k)), Y is
// rows x kTile (all in the accumulation type). Vector types because the auto-vectoriser does not
// find this blocking by itself: four rows of A and two vectors of pixels at a time, so eight
// accumulators stay in registers and each load of X serves four rows. then(i, t0, v) sees each
// block of results while it is in registers: v[b][h] holds row i + b, pixels t0 + h * lanes ...
template <int NB, typename acc_t, typename Then>
void tile_gemm_rows(const acc_t* A, int64_t i, int64_t K, const TileRows<acc_t>& X, acc_t* Y,
                    Then& then) {
  using V = typename Simd<acc_t>::type;
  constexpr int VL = Simd<acc_t>::lanes;
  static_assert(kTile % (2 * VL) == 0, "kTile must hold whole pairs of vectors");
  for (int64_t t0 = 0; t0 < kTile; t0 += 2 * VL) {
    // The accumulators start from the k = 0 products, not from zero: GCC turned `V v[NB][2] =
    // {}` into a `rep stos` of the array per block, ~10 % of the backward's time on an AMD EPYC
    // (perf annotate, 2026-12-02). The same values (0 + x = x; only a zero's sign may differ).
    V v[NB][2];
    auto load = [&](int64_t k, V& x0, V& x1) {
      std::memcpy(&x0, X.row(k) + t0, sizeof(V));
      std::memcpy(&x1, X.row(k) + t0 + VL, sizeof(V));
    };
    if (K == 0) {
      for (int b = 0; b < NB; ++b) v[b][0] = v[b][1] = V{};
    } else {
      V x0, x1;
      load(0, x0, x1);
      for (int b = 0; b < NB; ++b) {
        v[b][0] = A[b * K] * x0;
        v[b][1] = A[b * K] * x1;
      }
    }
    for (int64_t k = 1; k < K; ++k) {
      V x0, x1;
      load(k, x0, x1);
      for (int b = 0; b < NB; ++b) {
        const acc_t a = A[b * K + k];
        v[b][0] += a * x0;
        v[b][1] += a * x1;
      }
    }
    for (int b = 0; b < NB; ++b) {
      std::memcpy(Y + b * kTile + t0, &v[b][0], sizeof(V));
      std::memcpy(Y + b * kTile + t0 + VL, &v[b][1], sizeof(V));
    }
    then(i, t0, v);
  }
}

// Rows of A per register block: NB rows x 2 vectors of accumulators. Each accumulator takes one
// FMA per k, so with fewer independent accumulators than the FMA's latency times its throughput
// (4 cycles x 2 per cycle on Zen 3 and Skylake: 8) the loop waits on its own dependency chains;
// four rows are exactly eight. Six rows (twelve accumulators, two loads and six broadcasts per
// twelve FMAs: the 6 x 16 shape of BLIS's Haswell kernel) fill AVX2's sixteen registers. AVX-512
// keeps four (not measured: no AVX-512 machine on 2026-12-03).
constexpr int kGemmRows = GSCNN_CPU_VECTOR_BYTES == 32 ? 6 : 4;
// Whether a block of six rows (or columns) is taken from `remaining`: not when eight remain (two
// blocks of four then, not six and two).
constexpr bool take_six(int64_t remaining) { return remaining >= 6 && remaining != 8; }

template <typename acc_t, typename Then>
void tile_gemm(const acc_t* A, int64_t rows, int64_t K, const TileRows<acc_t>& X, acc_t* Y,
               Then then) {
  int64_t i = 0;
  if constexpr (kGemmRows == 6) {
    for (; take_six(rows - i); i += 6) tile_gemm_rows<6>(A + i * K, i, K, X, Y + i * kTile, then);
  }
  for (; i + 4 <= rows; i += 4) tile_gemm_rows<4>(A + i * K, i, K, X, Y + i * kTile, then);
  if constexpr (kGemmRows == 6) {
    for (; i + 2 <= rows; i += 2) tile_gemm_rows<2>(A + i * K, i, K, X, Y + i * kTile, then);
  }
  for (; i < rows; ++i) tile_gemm_rows<1>(A + i * K, i, K, X, Y + i * kTile, then);
}
template <typename acc_t>
void tile_gemm(const acc_t* A, int64_t rows, int64_t K, const TileRows<acc_t>& X, acc_t* Y) {
  tile_gemm(A, rows, K, X, Y, [](int64_t, int64_t, const auto&) {});
}

// Parameter-gradient partial sums of one tile as outer products: for every row b < rows of G and
// column d < cols of U, lanes[(b * stride + d) * kLanes + l] += sum over pixels t = l (mod kLanes)
// of G[b][t] * U[d][t] (each sum in the order of t: lane-wise adds, no reassociation, so
// deterministic). dW is G (grad_out) against U = s (1 + alpha); db, dw_g and db_g the same with a
// row of ones or dz (the sums of gcl::tile_entry_accumulate, split into lanes). Register-tiled: a
// block of BO x BC entries keeps its accumulators in registers over the tile, and each load of a
// G or U vector serves BC or BO of them (one load per FMA per entry before: load-bound).
template <int BO, int BC, typename acc_t>
void outer_block(const TileRows<acc_t>& G, const TileRows<acc_t>& U, int64_t stride,
                 acc_t* lanes) {
  using V = typename Simd<acc_t>::type;
  constexpr int VL = Simd<acc_t>::lanes;
  static_assert(kLanes % VL == 0, "a lane group must hold whole vectors");
  // Every loop over the block is unrolled (GCC left the AVX2 build's accumulators on the stack).
  for (int j = 0; j < kLanes; j += VL) {  // one vector of every entry's lane group at a time
    V acc[BO][BC];
#pragma GCC unroll 16
    for (int b = 0; b < BO; ++b)
#pragma GCC unroll 16
      for (int d = 0; d < BC; ++d)
        std::memcpy(&acc[b][d], lanes + (b * stride + d) * kLanes + j, sizeof(V));
    for (int64_t t = j; t < kTile; t += kLanes) {
      V g[BO], u[BC];
#pragma GCC unroll 16
      for (int b = 0; b < BO; ++b) g[b] = vload(G.row(b) + t);
#pragma GCC unroll 16
      for (int d = 0; d < BC; ++d) u[d] = vload(U.row(d) + t);
#pragma GCC unroll 16
      for (int b = 0; b < BO; ++b)
#pragma GCC unroll 16
        for (int d = 0; d < BC; ++d) acc[b][d] += g[b] * u[d];
    }
#pragma GCC unroll 16
    for (int b = 0; b < BO; ++b)
#pragma GCC unroll 16
      for (int d = 0; d < BC; ++d)
        std::memcpy(lanes + (b * stride + d) * kLanes + j, &acc[b][d], sizeof(V));
  }
}

// Register budget: 32 vector registers with AVX-512 (16 accumulators + 8 operands), 16 below;
// with AVX2 blocks of 2 x 6 where the columns allow (twelve accumulators, as in tile_gemm).
constexpr int kOuterRows = GSCNN_CPU_VECTOR_BYTES >= 64 ? 4 : 2;
constexpr int kOuterCols = 4;

template <int BO, typename acc_t>
void outer_rows(const TileRows<acc_t>& G, const TileRows<acc_t>& U, int64_t cols, int64_t stride,
                acc_t* lanes) {
  int64_t d = 0;
  if constexpr (kGemmRows == 6) {
    for (; take_six(cols - d); d += 6)
      outer_block<BO, 6>(G, {U.row(d), U.ld}, stride, lanes + d * kLanes);
  }
  for (; d + kOuterCols <= cols; d += kOuterCols)
    outer_block<BO, kOuterCols>(G, {U.row(d), U.ld}, stride, lanes + d * kLanes);
  if constexpr (kGemmRows == 6) {
    for (; d + 2 <= cols; d += 2)
      outer_block<BO, 2>(G, {U.row(d), U.ld}, stride, lanes + d * kLanes);
  }
  for (; d < cols; ++d) outer_block<BO, 1>(G, {U.row(d), U.ld}, stride, lanes + d * kLanes);
}

template <typename acc_t>
void tile_outer_accumulate(const TileRows<acc_t>& G, int64_t rows, const TileRows<acc_t>& U,
                           int64_t cols, int64_t stride, acc_t* lanes) {
  int64_t b = 0;
  for (; b + kOuterRows <= rows; b += kOuterRows)
    outer_rows<kOuterRows>({G.row(b), G.ld}, U, cols, stride, lanes + b * stride * kLanes);
  for (; b < rows; ++b)
    outer_rows<1>({G.row(b), G.ld}, U, cols, stride, lanes + b * stride * kLanes);
}

// Rows of partial sums of the CPU backward: row i owns the consecutive tiles [i * per_row,
// (i + 1) * per_row), at least kMinTilesPerRow of them so that a row's accumulators stay in cache
// over many tiles and the final sum reads few rows, and at most gcl::max_partial_rows of them
// (very wide layers). A function of the problem only (never of the thread count): the result
// does not depend on the thread count.
struct PartialRows {
  static constexpr int64_t kMinTilesPerRow = 16;
  int64_t count, per_row;
  PartialRows(int64_t tiles, int64_t entries) {
    const int64_t wanted = (tiles + kMinTilesPerRow - 1) / kMinTilesPerRow;
    count = std::max<int64_t>(1, std::min(wanted, gcl::max_partial_rows(entries)));
    per_row = (tiles + count - 1) / count;
  }
};

// weight (Cout, C, 1, 1) in the accumulation type, as it is (Cout x C) or transposed (C x Cout).
template <typename acc_t>
std::vector<acc_t> weight_matrix(const at::Tensor& weight, bool transposed) {
  const auto w = weight.reshape({weight.size(0), weight.size(1)});
  const auto m = (transposed ? w.t() : w).to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
  const acc_t* p = m.template const_data_ptr<acc_t>();
  return std::vector<acc_t>(p, p + m.numel());
}

}  // namespace

template <typename Gate>
void forward_kernel(const Gate& gate, const GclSizes& z, const at::Tensor& s, const at::Tensor& r,
                    const at::Tensor& weight, const at::Tensor& bias, at::Tensor& out,
                    at::Tensor& alpha) {
  using scalar_t = gcl::gate_scalar_t<Gate>;
  using acc_t = at::opmath_type<scalar_t>;
  const auto sv = strided4d<const scalar_t>(s);
  const auto rv = strided4d<const scalar_t>(r);
  const auto ov = strided4d<scalar_t>(out);
  const auto av = strided4d<scalar_t>(alpha);
  const std::vector<acc_t> W = weight_matrix<acc_t>(weight, /*transposed=*/false);
  const scalar_t* b = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
  const TileGrid grid(z.N, z.H * z.W);

  at::parallel_for(0, grid.count, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> S_buf(z.C * kTile), R_buf(z.Cr * kTile), A(kTile), F(kTile), Z(2 * kTile);
    std::vector<acc_t> O(z.Cout * kTile), row_buf(kTile);
    TileOffsets at_s, at_r, at_out;
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t p0 = grid.first_pixel(tile), len = grid.length(tile);
      at_s.set(sv, p0, len);
      const TileRows<acc_t> S = tile_rows(sv, at_s, len, z.C, S_buf.data());
      at_r.set(rv, p0, len);
      const TileRows<acc_t> R = tile_rows(rv, at_r, len, z.Cr, R_buf.data());
      tile_gate(gate, S, R, z.C, z.Cr, len, Z.data(), A.data(), F.data());

      at_out.set(av, p0, len);
      write_row(av, at_out, len, 0, row_buf.data(), [&](int64_t t) { return vload(&A[t]); });

      // out_o = b_o + (1 + alpha) * (W s)_o
      tile_gemm(W.data(), z.Cout, z.C, S, O.data());
      at_out.set(ov, p0, len);
      for (int64_t o = 0; o < z.Cout; ++o) {
        const acc_t bo = b ? static_cast<acc_t>(b[o]) : acc_t(0);
        const acc_t* ws = O.data() + o * kTile;
        write_row(ov, at_out, len, o, row_buf.data(),
                  [&](int64_t t) { return bo + vload(&F[t]) * vload(ws + t); });
      }
    }
    stream_fence();
  });
}

template <typename scalar_t>
at::Tensor backward_kernel(const GclSizes& z, const at::Tensor& grad_out,
                           const at::Tensor& grad_alpha, const at::Tensor& s, const at::Tensor& r,
                           const at::Tensor& gate_weight, const at::Tensor& gate_bias,
                           const at::Tensor& weight, at::Tensor& grad_s, at::Tensor& grad_r) {
  using acc_t = at::opmath_type<scalar_t>;
  using V = typename Simd<acc_t>::type;
  const auto gv = strided4d<const scalar_t>(grad_out);
  const auto sv = strided4d<const scalar_t>(s);
  const auto rv = strided4d<const scalar_t>(r);
  const auto dsv = strided4d<scalar_t>(grad_s);
  const auto drv = strided4d<scalar_t>(grad_r);
  const bool has_ga = grad_alpha.defined();
  const auto gav = has_ga ? strided4d<const scalar_t>(grad_alpha) : Strided4d<const scalar_t>{};
  const scalar_t* wg = gate_weight.const_data_ptr<scalar_t>();
  const std::vector<acc_t> WT = weight_matrix<acc_t>(weight, /*transposed=*/true);
  const gcl::LinearGate<acc_t, scalar_t> gate{wg, gate_bias.const_data_ptr<scalar_t>()};
  const gcl::GradLayout layout{z.C, z.Cr, z.Cout};
  const TileGrid grid(z.N, z.H * z.W);
  const PartialRows rows(grid.count, layout.size());
  const int64_t nb = rows.count;
  auto partials = at::empty({nb, layout.size()}, s.options().dtype(at::toOpMathType(s.scalar_type())));
  acc_t* part = partials.data_ptr<acc_t>();

  at::parallel_for(0, nb, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> G_buf(z.Cout * kTile), S_buf(z.C * kTile), R_buf(z.Cr * kTile),
        GU(z.C * kTile), U(z.C * kTile);
    std::vector<acc_t> A(kTile), F(kTile), DA(kTile), DZ(kTile), Z(2 * kTile), row_buf(kTile);
    const std::vector<acc_t> ones(kTile, acc_t(1));
    const TileRows<acc_t> One{ones.data(), kTile}, Dz{DZ.data(), kTile}, Us{U.data(), kTile};
    TileOffsets at_g, at_s, at_r, at_ga, at_ds, at_dr;
    std::vector<acc_t> lanes(layout.size() * kLanes);
    acc_t* lanes_of = lanes.data();
    auto entry = [&](int64_t e) { return lanes_of + e * kLanes; };
    for (int64_t row = begin; row < end; ++row) {
      acc_t* acc = part + row * layout.size();
      std::fill(lanes.begin(), lanes.end(), acc_t(0));
      // A row's tiles are consecutive: every channel plane is then read (and written) in runs
      // of per_row * kTile pixels that the hardware prefetchers follow (tiles strided by the
      // row count jumped a page per tile and channel).
      const int64_t tile_end = std::min(grid.count, (row + 1) * rows.per_row);
      for (int64_t tile = row * rows.per_row; tile < tile_end; ++tile) {
        const int64_t p0 = grid.first_pixel(tile), len = grid.length(tile);
        at_g.set(gv, p0, len);
        const TileRows<acc_t> G = tile_rows(gv, at_g, len, z.Cout, G_buf.data());
        at_s.set(sv, p0, len);
        const TileRows<acc_t> S = tile_rows(sv, at_s, len, z.C, S_buf.data());
        at_r.set(rv, p0, len);
        const TileRows<acc_t> R = tile_rows(rv, at_r, len, z.Cr, R_buf.data());
        tile_gate(gate, S, R, z.C, z.Cr, len, Z.data(), A.data(), F.data());
        const acc_t* ga = nullptr;  // grad_alpha's row (in place, or copied into DA)
        if (has_ga) {
          at_ga.set(gav, p0, len);
          ga = tile_rows(gav, at_ga, len, 1, DA.data()).p;
        }

        // gu = W^T g, and dalpha = grad_alpha + gu . s while gu is in registers (in the order of
        // c; the first block of rows starts from grad_alpha)
        tile_gemm(WT.data(), z.C, z.Cout, G, GU.data(), [&](int64_t c0, int64_t t0, const auto& v) {
          constexpr int NB = std::extent_v<std::remove_reference_t<decltype(v)>>;
          constexpr int VL = Simd<acc_t>::lanes;
          const acc_t* from = c0 > 0 ? DA.data() : ga;
          V da0 = from ? vload(from + t0) : V{}, da1 = from ? vload(from + t0 + VL) : V{};
          for (int b = 0; b < NB; ++b) {
            const acc_t* srow = S.row(c0 + b);
            da0 += v[b][0] * vload(srow + t0);
            da1 += v[b][1] * vload(srow + t0 + VL);
          }
          std::memcpy(&DA[t0], &da0, sizeof(V));
          std::memcpy(&DA[t0 + VL], &da1, sizeof(V));
        });
        for (int64_t t = 0; t < kTile; ++t) DZ[t] = gcl::gate_logit_grad(DA[t], A[t]);

        at_ds.set(dsv, p0, len);
        for (int64_t c = 0; c < z.C; ++c) {
          const V wgc = V{} + static_cast<acc_t>(wg[c]);
          const acc_t* gu = GU.data() + c * kTile;
          // gcl::shape_grad on vectors (that template, compiled outside this file's target
          // pragma, would take and return vectors with the baseline ABI)
          write_row(dsv, at_ds, len, c, row_buf.data(), [&](int64_t t) {
            return vload(gu + t) * vload(&F[t]) + vload(&DZ[t]) * wgc;
          });
        }
        at_dr.set(drv, p0, len);
        for (int64_t j = 0; j < z.Cr; ++j) {
          const acc_t wgj = static_cast<acc_t>(wg[z.C + j]);
          write_row(drv, at_dr, len, j, row_buf.data(),
                    [&](int64_t t) { return vload(&DZ[t]) * wgj; });
        }

        // Parameter gradients of this tile, added lane-wise to this row's partial sums, every one
        // an outer product: dW of G and U = s (1 + alpha), db of G and ones, dw_g of dz and
        // (s, r), db_g of dz and ones.
        for (int64_t c = 0; c < z.C; ++c) {
          const acc_t* srow = S.row(c);
          acc_t* urow = U.data() + c * kTile;
          for (int64_t t = 0; t < kTile; ++t) urow[t] = srow[t] * F[t];
        }
        tile_outer_accumulate(G, z.Cout, Us, z.C, z.C, entry(layout.weight_offset()));
        tile_outer_accumulate(G, z.Cout, One, 1, 1, entry(layout.bias_offset()));
        const int64_t gw = layout.gate_weight_offset();
        tile_outer_accumulate(Dz, 1, S, z.C, 0, entry(gw));
        tile_outer_accumulate(Dz, 1, R, z.Cr, 0, entry(gw + z.C));
        tile_outer_accumulate(Dz, 1, One, 1, 0, entry(layout.gate_bias_offset()));
      }
      for (int64_t e = 0; e < layout.size(); ++e) {
        acc_t sum = 0;
        for (int l = 0; l < kLanes; ++l) sum += lanes[e * kLanes + l];
        acc[e] = sum;
      }
    }
    stream_fence();
  });
  return partials;
}


// Explicit instantiations for every dtype and gate (the dispatcher in gated_conv2d.cpp calls them).
#define GSCNN_INSTANTIATE_CPU_KERNELS(scalar_t)                                                  \
  template void forward_kernel(const gcl::LinearGate<at::opmath_type<scalar_t>, scalar_t>&,      \
                               const GclSizes&, const at::Tensor&, const at::Tensor&,            \
                               const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&);  \
  template void forward_kernel(const gcl::MlpGate<at::opmath_type<scalar_t>, scalar_t>&,         \
                               const GclSizes&, const at::Tensor&, const at::Tensor&,            \
                               const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&);  \
  template at::Tensor backward_kernel<scalar_t>(                                                 \
      const GclSizes&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, \
      const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&);
GSCNN_INSTANTIATE_CPU_KERNELS(float)
GSCNN_INSTANTIATE_CPU_KERNELS(double)
GSCNN_INSTANTIATE_CPU_KERNELS(c10::Half)
GSCNN_INSTANTIATE_CPU_KERNELS(c10::BFloat16)
#undef GSCNN_INSTANTIATE_CPU_KERNELS

}  // namespace GSCNN_CPU_ISA
}  // namespace cpu
}  // namespace gscnn
