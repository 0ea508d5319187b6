// The CPU kernels of gated_conv2d, compiled once per instruction set: the including file defines
// GSCNN_CPU_ISA (the namespace) and GSCNN_CPU_VECTOR_BYTES (its register width) after including
// gated_conv2d_kernels.h and, for the AVX variants, after a `#pragma GCC target`, so that these
// loops over pixels vectorise with wide registers.
// No #include here: every header must come before the pragma (see gated_conv2d_kernels.h).
//
// Pixels are processed in tiles of kTile consecutive pixels of one image. A tile's channels are
// loaded once into small float buffers laid out [channel][pixel], so every inner loop runs over
// the pixels of the tile with unit stride; nothing of size N*C*H*W is written besides the
// outputs. The backward pass reduces parameter gradients into a fixed number of partial rows (a
// function of the problem size only) that are summed in order: deterministic for any thread
// count.

#if !defined(GSCNN_CPU_ISA) || !defined(GSCNN_CPU_VECTOR_BYTES)
#error "define GSCNN_CPU_ISA and GSCNN_CPU_VECTOR_BYTES before including gated_conv2d_kernels_impl.h"
#endif

namespace gscnn {
namespace cpu {
namespace GSCNN_CPU_ISA {
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

// Loads `channels` channels of a tile into buf[c * kTile + t], zero-padding t >= len.
// For NCHW images it also prefetches the next tile's pixels of every channel: a tile reads C short
// runs (kTile pixels) far apart, too many concurrent streams for the hardware prefetchers, so
// without this every cache line was a full memory latency (measured: the forward at C = 32 read
// and wrote at a fifth of the machine's copy bandwidth).
template <typename T, typename acc_t>
void load_tile(const Strided4d<const T>& v, const TileOffsets& at, int64_t len, int64_t channels,
               acc_t* buf) {
  constexpr int64_t kLine = 64 / sizeof(T);  // elements per cache line
  for (int64_t c = 0; c < channels; ++c) {
    acc_t* row = buf + c * kTile;
    const T* base = v.data + c * v.sC;
    if (at.consecutive) {
      const T* src = base + at.off[0];
      // A prefetch never faults: past the end of the tensor it does nothing.
      for (int64_t t = kTile; t < 2 * kTile; t += kLine) __builtin_prefetch(src + t);
      for (int64_t t = 0; t < len; ++t) row[t] = static_cast<acc_t>(src[t]);
    } else {
      for (int64_t t = 0; t < len; ++t) row[t] = static_cast<acc_t>(base[at.off[t]]);
    }
    for (int64_t t = len; t < kTile; ++t) row[t] = acc_t(0);
  }
}

// Writes a whole tile's row of float32 to dst with non-temporal (streaming) stores, if dst is
// cache-line aligned: they write whole lines without reading them first. A plain store to a line
// not in cache reads the line first (read for ownership), and the outputs (N*C*H*W, written once,
// never read by the kernel) are not in cache: measured on a 2-core Xeon, the stores of grad_s
// then stalled the backward for ~30 % of its time. The caller ends its chunk of work with
// stream_fence(). Returns false where it did nothing (unaligned, partial tile, not x86).
inline bool stream_row(float* dst, const float* row, int64_t len) {
#if defined(GSCNN_CPU_X86_VARIANTS)
  if (len != kTile || reinterpret_cast<uintptr_t>(dst) % 64 != 0) return false;
  for (int64_t t = 0; t < kTile; t += 16) {
#if GSCNN_CPU_VECTOR_BYTES >= 64
    _mm512_stream_ps(dst + t, _mm512_loadu_ps(row + t));
#elif GSCNN_CPU_VECTOR_BYTES == 32
    _mm256_stream_ps(dst + t, _mm256_loadu_ps(row + t));
    _mm256_stream_ps(dst + t + 8, _mm256_loadu_ps(row + t + 8));
#else
    for (int q = 0; q < 16; q += 4) _mm_stream_ps(dst + t + q, _mm_loadu_ps(row + t + q));
#endif
  }
  return true;
#else
  (void)dst, (void)row, (void)len;
  return false;
#endif
}

// Orders this thread's streaming stores before whatever follows (the end of a parallel chunk).
inline void stream_fence() {
#if defined(GSCNN_CPU_X86_VARIANTS)
  _mm_sfence();
#endif
}

// Stores row[t] (t < len) into channel c of a tile.
template <typename T, typename acc_t>
void store_row(const Strided4d<T>& v, const TileOffsets& at, int64_t len, int64_t c,
               const acc_t* row) {
  T* base = v.data + c * v.sC;
  if (at.consecutive) {
    T* dst = base + at.off[0];
    if constexpr (std::is_same_v<T, float> && std::is_same_v<acc_t, float>) {
      if (stream_row(dst, row, len)) return;
    }
    for (int64_t t = 0; t < len; ++t) dst[t] = static_cast<T>(row[t]);
  } else {
    for (int64_t t = 0; t < len; ++t) base[at.off[t]] = static_cast<T>(row[t]);
  }
}

// Gate of every pixel of a tile: alpha and one_plus_alpha = 1 + alpha. Padded pixels get 0 so
// that they contribute nothing downstream. Z is scratch of 2 * kTile values.
template <typename acc_t, typename Gate>
void tile_gate(const Gate& gate, const acc_t* S, const acc_t* R, int64_t C, int64_t Cr,
               int64_t len, acc_t* Z, acc_t* alpha, acc_t* one_plus_alpha) {
  gate.logit_tile(S, R, C, Cr, kTile, kTile, Z, Z + kTile);
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

// Y = A X for one tile: A is rows x K (row-major), X is K x kTile, Y is rows x kTile (all in the
// accumulation type). Written with GCC/Clang vector types of the including file's register width
// (GSCNN_CPU_VECTOR_BYTES) because the auto-vectoriser does not find this blocking by itself:
// four rows of A and two vectors of pixels at a time, so eight accumulators stay in registers
// and each load of X serves four rows.
template <typename acc_t>
struct Simd {
  typedef acc_t type __attribute__((vector_size(GSCNN_CPU_VECTOR_BYTES)));
  static constexpr int lanes = GSCNN_CPU_VECTOR_BYTES / sizeof(acc_t);
};

template <int NB, typename acc_t>
void tile_gemm_rows(const acc_t* A, int64_t K, const acc_t* X, acc_t* Y) {
  using V = typename Simd<acc_t>::type;
  constexpr int VL = Simd<acc_t>::lanes;
  static_assert(kTile % (2 * VL) == 0, "kTile must hold whole pairs of vectors");
  for (int64_t t0 = 0; t0 < kTile; t0 += 2 * VL) {
    V v[NB][2] = {};
    for (int64_t k = 0; k < K; ++k) {
      V x0, x1;
      std::memcpy(&x0, X + k * kTile + t0, sizeof(V));
      std::memcpy(&x1, X + k * kTile + t0 + VL, sizeof(V));
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
  }
}

template <typename acc_t>
void tile_gemm(const acc_t* A, int64_t rows, int64_t K, const acc_t* X, acc_t* Y) {
  int64_t i = 0;
  for (; i + 4 <= rows; i += 4) tile_gemm_rows<4>(A + i * K, K, X, Y + i * kTile);
  for (; i < rows; ++i) tile_gemm_rows<1>(A + i * K, K, X, Y + i * kTile);
}

// dW partial sums of one tile: lanes[(o * C + c) * kLanes + l] += sum over pixels t = l (mod
// kLanes) of G[o][t] * U[c][t], where U = s (1 + alpha). The lanes and order of addition of
// gcl::tile_entry_accumulate with L = kLanes (its product is (g s)(1 + alpha), rounded
// differently), but as register-tiled outer products: a block of
// BO x BC entries keeps its accumulators in registers over the tile, and each load of a G or U
// vector serves BC or BO of them (one load per FMA per entry before: load-bound).
template <int BO, int BC, typename acc_t>
void outer_block(const acc_t* G, const acc_t* U, int64_t C, acc_t* lanes) {
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
        std::memcpy(&acc[b][d], lanes + (b * C + d) * kLanes + j, sizeof(V));
    for (int64_t t = j; t < kTile; t += kLanes) {
      V g[BO], u[BC];
#pragma GCC unroll 16
      for (int b = 0; b < BO; ++b) std::memcpy(&g[b], G + b * kTile + t, sizeof(V));
#pragma GCC unroll 16
      for (int d = 0; d < BC; ++d) std::memcpy(&u[d], U + d * kTile + t, sizeof(V));
#pragma GCC unroll 16
      for (int b = 0; b < BO; ++b)
#pragma GCC unroll 16
        for (int d = 0; d < BC; ++d) acc[b][d] += g[b] * u[d];
    }
#pragma GCC unroll 16
    for (int b = 0; b < BO; ++b)
#pragma GCC unroll 16
      for (int d = 0; d < BC; ++d)
        std::memcpy(lanes + (b * C + d) * kLanes + j, &acc[b][d], sizeof(V));
  }
}

// Register budget: 32 vector registers with AVX-512 (16 accumulators + 8 operands), 16 below.
constexpr int kOuterRows = GSCNN_CPU_VECTOR_BYTES >= 64 ? 4 : 2;
constexpr int kOuterCols = 4;

template <int BO, typename acc_t>
void outer_rows(const acc_t* G, const acc_t* U, int64_t C, acc_t* lanes) {
  int64_t c = 0;
  for (; c + kOuterCols <= C; c += kOuterCols)
    outer_block<BO, kOuterCols>(G, U + c * kTile, C, lanes + c * kLanes);
  for (; c < C; ++c) outer_block<BO, 1>(G, U + c * kTile, C, lanes + c * kLanes);
}

template <typename acc_t>
void tile_outer_accumulate(const acc_t* G, const acc_t* U, int64_t Cout, int64_t C, acc_t* lanes) {
  int64_t o = 0;
  for (; o + kOuterRows <= Cout; o += kOuterRows)
    outer_rows<kOuterRows>(G + o * kTile, U, C, lanes + o * C * kLanes);
  for (; o < Cout; ++o) outer_rows<1>(G + o * kTile, U, C, lanes + o * C * kLanes);
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
    std::vector<acc_t> S(z.C * kTile), R(z.Cr * kTile), A(kTile), F(kTile), Z(2 * kTile);
    std::vector<acc_t> O(z.Cout * kTile);
    TileOffsets at_s, at_r, at_out;
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t p0 = grid.first_pixel(tile), len = grid.length(tile);
      at_s.set(sv, p0, len);
      load_tile(sv, at_s, len, z.C, S.data());
      at_r.set(rv, p0, len);
      load_tile(rv, at_r, len, z.Cr, R.data());
      tile_gate(gate, S.data(), R.data(), z.C, z.Cr, len, Z.data(), A.data(), F.data());

      at_out.set(av, p0, len);
      store_row(av, at_out, len, 0, A.data());

      // out_o = b_o + (1 + alpha) * (W s)_o
      tile_gemm(W.data(), z.Cout, z.C, S.data(), O.data());
      at_out.set(ov, p0, len);
      for (int64_t o = 0; o < z.Cout; ++o) {
        const acc_t bo = b ? static_cast<acc_t>(b[o]) : acc_t(0);
        acc_t* row = O.data() + o * kTile;
        for (int64_t t = 0; t < kTile; ++t) row[t] = bo + F[t] * row[t];
        store_row(ov, at_out, len, o, row);
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
    std::vector<acc_t> G(z.Cout * kTile), S(z.C * kTile), R(z.Cr * kTile), GU(z.C * kTile),
        U(z.C * kTile);
    std::vector<acc_t> A(kTile), F(kTile), DA(kTile), DZ(kTile), Z(2 * kTile), row_buf(kTile);
    TileOffsets at_g, at_s, at_r, at_ga, at_ds, at_dr;
    std::vector<acc_t> lanes(layout.size() * kLanes);
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
        load_tile(gv, at_g, len, z.Cout, G.data());
        at_s.set(sv, p0, len);
        load_tile(sv, at_s, len, z.C, S.data());
        at_r.set(rv, p0, len);
        load_tile(rv, at_r, len, z.Cr, R.data());
        tile_gate(gate, S.data(), R.data(), z.C, z.Cr, len, Z.data(), A.data(), F.data());
        if (has_ga) {
          at_ga.set(gav, p0, len);
          load_tile(gav, at_ga, len, 1, DA.data());
        } else {
          std::fill(DA.begin(), DA.end(), acc_t(0));
        }

        // gu = W^T g, and dalpha += gu . s
        tile_gemm(WT.data(), z.C, z.Cout, G.data(), GU.data());
        for (int64_t c = 0; c < z.C; ++c) {
          const acc_t* gu = GU.data() + c * kTile;
          const acc_t* srow = S.data() + c * kTile;
          for (int64_t t = 0; t < kTile; ++t) DA[t] += gu[t] * srow[t];
        }
        for (int64_t t = 0; t < kTile; ++t) DZ[t] = gcl::gate_logit_grad(DA[t], A[t]);

        at_ds.set(dsv, p0, len);
        for (int64_t c = 0; c < z.C; ++c) {
          const acc_t wgc = static_cast<acc_t>(wg[c]);
          const acc_t* gu = GU.data() + c * kTile;
          for (int64_t t = 0; t < kTile; ++t) row_buf[t] = gcl::shape_grad(gu[t], F[t], DZ[t], wgc);
          store_row(dsv, at_ds, len, c, row_buf.data());
        }
        at_dr.set(drv, p0, len);
        for (int64_t j = 0; j < z.Cr; ++j) {
          const acc_t wgj = static_cast<acc_t>(wg[z.C + j]);
          for (int64_t t = 0; t < kTile; ++t) row_buf[t] = DZ[t] * wgj;
          store_row(drv, at_dr, len, j, row_buf.data());
        }

        // Parameter gradients of this tile, added lane-wise to this row's partial sums: dW as
        // outer products of G and U = s (1 + alpha), the rest entry by entry.
        for (int64_t c = 0; c < z.C; ++c) {
          const acc_t* srow = S.data() + c * kTile;
          acc_t* urow = U.data() + c * kTile;
          for (int64_t t = 0; t < kTile; ++t) urow[t] = srow[t] * F[t];
        }
        tile_outer_accumulate(G.data(), U.data(), z.Cout, z.C, lanes.data());
        for (int64_t e = layout.bias_offset(); e < layout.size(); ++e)
          gcl::tile_entry_accumulate<kLanes>(layout, e, G.data(), S.data(), R.data(), F.data(),
                                             DZ.data(), kTile, kTile, lanes.data() + e * kLanes);
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
