#pragma once
// The block programs of the CUDA gated_conv2d kernels (common/exec.h): the code each block of
// cuda/gated_conv2d.cu runs, and that the emulator of the tests runs on the CPU. Shared-memory
// pointers are a template parameter (Ptr): a plain pointer on the GPU, a recording pointer in the
// emulator.

#include <ATen/OpMathType.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "exec.h"
#include "gated_conv2d_math.h"
#include "strided.h"
#include "vector_access.h"

namespace gscnn {
namespace gcl {

// ---------------------------------------------------------------------------------------------
// Forward: one thread per pixel, grid-stride over the pixels. Staged: the thread's column of the
// shared tile X holds its pixel's C + Cr input channels (read once from global memory, reused by
// the gate and every output channel). Direct (layers too wide for the shared memory of any block
// size): the channels are read from global memory where they are used. Threads only touch their
// own column: no barrier.

// Channel d of the thread's pixel, from its column of the shared tile.
template <typename acc_t, typename Ptr>
struct StagedColumn {
  Ptr X;
  int64_t T, t;
  GSCNN_HD acc_t operator()(int64_t d) const { return static_cast<acc_t>(X[d * T + t]); }
};

// Channel d of the thread's pixel, from the inputs.
template <typename acc_t, typename scalar_t>
struct DirectColumn {
  const Strided4d<const scalar_t>& s;
  const Strided4d<const scalar_t>& r;
  int64_t so, ro, C;
  GSCNN_HD acc_t operator()(int64_t d) const {
    return static_cast<acc_t>(d < C ? s.at(so, d) : r.at(ro, d - C));
  }
};

template <typename scalar_t, typename Gate>
struct ForwardProgram {
  using acc_t = at::opmath_type<scalar_t>;
  static constexpr int kMaxThreads = 256;

  Gate gate;
  Strided4d<const scalar_t> s, r;
  Strided4d<scalar_t> out, alpha;
  const scalar_t* W;  // Cout x C
  const scalar_t* b;  // Cout, or null
  int64_t P, C, Cr, Cout;
  bool staged;

  // Shared memory of a staged block of T threads, in acc_t elements.
  static GSCNN_HD int64_t shared_elems(int64_t C, int64_t Cr, int64_t T) { return (C + Cr) * T; }

  template <typename Exec>
  GSCNN_HD void operator()(Exec& ex) const {
    auto X = ex.template shared<acc_t>();
    const int64_t T = ex.threads(), first = ex.block() * T, step = ex.grid() * T;
    ex.for_each_thread([&](int64_t t) {
      for (int64_t p = first + t; p < P; p += step) {
        const Pixel q = Pixel::of(p, s.px.HW, s.px.W);  // every tensor has the same N, H, W
        const int64_t so = s.px.offset(q), ro = r.px.offset(q);
        if (staged) {
          for (int64_t c = 0; c < C; ++c) X[c * T + t] = static_cast<acc_t>(s.at(so, c));
          for (int64_t j = 0; j < Cr; ++j) X[(C + j) * T + t] = static_cast<acc_t>(r.at(ro, j));
          pixel(StagedColumn<acc_t, decltype(X)>{X, T, t}, q);
        } else {
          pixel(DirectColumn<acc_t, scalar_t>{s, r, so, ro, C}, q);
        }
      }
    });
  }

  // alpha and out at pixel q; x(d) is input channel d of the pixel.
  template <typename Column>
  GSCNN_HD void pixel(const Column& x, const Pixel& q) const {
    const acc_t a = sigmoid(gate.logit(x, C + Cr));
    const acc_t f = acc_t(1) + a;
    alpha.at(alpha.px.offset(q), 0) = static_cast<scalar_t>(a);
    // out_o = b_o + (1 + alpha) * (W s)_o, four output channels per pass over the column.
    const int64_t oo = out.px.offset(q);
    int64_t o = 0;
    for (; o + 4 <= Cout; o += 4) {
      acc_t y[4] = {0, 0, 0, 0};
      const scalar_t* w = W + o * C;
      for (int64_t c = 0; c < C; ++c) {
        const acc_t u = x(c);
        y[0] += static_cast<acc_t>(w[c]) * u;
        y[1] += static_cast<acc_t>(w[C + c]) * u;
        y[2] += static_cast<acc_t>(w[2 * C + c]) * u;
        y[3] += static_cast<acc_t>(w[3 * C + c]) * u;
      }
      for (int k = 0; k < 4; ++k) store_out(oo, o + k, f, y[k]);
    }
    for (; o < Cout; ++o) {
      acc_t y = 0;
      for (int64_t c = 0; c < C; ++c) y += static_cast<acc_t>(W[o * C + c]) * x(c);
      store_out(oo, o, f, y);
    }
  }

  GSCNN_HD void store_out(int64_t oo, int64_t o, acc_t f, acc_t y) const {
    const acc_t bo = b ? static_cast<acc_t>(b[o]) : acc_t(0);
    out.at(oo, o) = static_cast<scalar_t>(bo + f * y);
  }
};

// ---------------------------------------------------------------------------------------------
// Forward for the shape stream's layers: linear gate, C = C_out = kC in {8, 16, 32}. The block
// first stages the parameters in shared memory (W transposed to [c][o], so that each step of the
// inner loop reads four output channels' weights with one vector load that every thread of the
// warp shares: a broadcast), then each thread takes its pixels grid-stride: the kC channels of s
// into registers (read once), the gate logit, then out = b + (1 + alpha) * W s with kC
// accumulators in registers. Per pixel: kC + Cr global loads, kC + 1 global stores, and
// kC * kC / 4 shared loads against kC * kC FMAs -- the generic program issued four global
// (uniform-address) weight loads and a shared load per channel per four outputs.
//
// kNhwc: s and out contiguous channels_last (pixel p's channels at p * kC), 16-byte aligned. A
// thread's kC channels are then one contiguous run, and a warp reading them per thread would touch
// 32 cache lines per load (stride kC): instead the block moves its T pixels' channels -- one
// contiguous range of T * kC values -- between global and shared memory in 16-byte chunks, thread t
// taking chunks t, t + T, ... (every warp-instruction 512 contiguous bytes), and each thread reads
// and writes its own pixel's row of that tile (16-byte shared loads and stores). Per tile of T
// pixels: load, barrier, compute (out written in place over the row), barrier, store: two
// barriers per T pixels, none other. In the half types at kC = 32 a thread takes two pixels,
// rows t and t + T of a tile of 2T (kPix; as ForwardProgramSmallCPairs does for NCHW).

// 16 bytes: the unit of the NHWC path's vector loads and stores (LDG.128, LDS.128, ...).
struct alignas(16) Chunk16 {
  uint32_t w[4];
};

// The V at `p` (aligned to sizeof(V)) / a V stored there: one vector access on the GPU, a memcpy
// on the host (no type-punned access in host code). V: Chunk16, or a 32-bit word of two values.
template <typename V>
GSCNN_HD V load_bits(const void* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const V*>(p);
#else
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
#endif
}
template <typename V>
GSCNN_HD void store_bits(void* p, const V& v) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<V*>(p) = v;
#else
  std::memcpy(p, &v, sizeof v);
#endif
}

// A tile of T pixels' kC channels in shared memory, one row of 16-byte chunks per pixel: the NHWC
// programs' staging of contiguous channels_last tensors (pixel p's channels at p * kC). The row
// stride in chunks is odd, so that the 8 rows a quarter-warp's 16-byte accesses touch fall in 8
// different groups of four banks (no bank conflicts); one chunk per row needs no padding. Thread
// t of T moves chunks t, t + T, ... of the tile's contiguous range in global memory (every
// warp-instruction 512 contiguous bytes), in load() and store() alike: a thread's store phase
// and its next load phase touch the same chunks, so no barrier is needed between them.
template <typename scalar_t, int kC>
struct PixelTile {
  static constexpr int kPerChunk = 16 / static_cast<int>(sizeof(scalar_t));
  static constexpr int kChunks = kC / kPerChunk;
  static constexpr int kRow = kChunks > 1 ? kChunks + 1 : 1;
  static_assert(kChunks * kPerChunk == kC, "whole 16-byte chunks per pixel");

  static GSCNN_HD int64_t chunks(int64_t T) { return T * kRow; }

  // Thread t's share of copying pixels [0, n) from src (pixel 0's channel 0) into the tile.
  // Shared-memory positions are walked (a few 32-bit adds per chunk): computed per chunk, nvcc
  // hoisted the kChunks positions out of the programs' tile loops and spilled them.
  // A tile of kPix * T pixels (kPix pixels per thread) takes kPix * kChunks chunks per thread.
  template <int kPix = 1, typename Ptr>
  static GSCNN_HD void load(const Ptr& tile, const scalar_t* src, int64_t n, int64_t t,
                            int64_t T) {
    Chunk16 v[kPix * kChunks];  // every load issued before the first store
    Walk w(n, t, T);
    GSCNN_UNROLL
    for (int i = 0; i < kPix * kChunks; ++i)
      if (w.live(i)) v[i] = load_bits<Chunk16>(src + w.g(i) * kPerChunk);
    GSCNN_UNROLL
    for (int i = 0; i < kPix * kChunks; ++i, w.next())
      if (w.live(i)) tile[w.at] = v[i];
  }

  // Thread t's share of copying the tile's pixels [0, n) to dst.
  template <int kPix = 1, typename Ptr>
  static GSCNN_HD void store(scalar_t* dst, const Ptr& tile, int64_t n, int64_t t, int64_t T) {
    Walk w(n, t, T);
    GSCNN_UNROLL
    for (int i = 0; i < kPix * kChunks; ++i, w.next())
      if (w.live(i)) store_bits(dst + w.g(i) * kPerChunk, static_cast<Chunk16>(tile[w.at]));
  }

  // Chunks g(i) = t + i T of a tile of n pixels: whether chunk i of the thread exists, and where
  // it sits in the tile (row g / kChunks, column g % kChunks, kept as they advance by T).
  struct Walk {
    int32_t g0, total, T, row, col, at;
    GSCNN_HD Walk(int64_t n, int64_t t, int64_t T_)
        : g0(static_cast<int32_t>(t)), total(static_cast<int32_t>(n * kChunks)),
          T(static_cast<int32_t>(T_)), row(g0 / kChunks), col(g0 % kChunks),
          at(row * kRow + col) {}
    GSCNN_HD int64_t g(int i) const { return g0 + i * T; }
    GSCNN_HD bool live(int i) const { return g0 + i * T < total; }
    GSCNN_HD void next() {
      row += T / kChunks;
      col += T % kChunks;
      if (col >= kChunks) {
        col -= kChunks;
        ++row;
      }
      at = row * kRow + col;
    }
  };

  // Chunk i of a pixel's row (channels i * kPerChunk ...), converted to the accumulation type /
  // from it; and the whole row.
  template <typename Ptr, typename acc_t>
  static GSCNN_HD void read_chunk(const Ptr& row, int i, acc_t (&x)[kPerChunk]) {
    const Chunk16 c = row[i];
    scalar_t v[kPerChunk];
    std::memcpy(v, &c, sizeof c);
    GSCNN_UNROLL
    for (int l = 0; l < kPerChunk; ++l) x[l] = static_cast<acc_t>(v[l]);
  }
  template <typename Ptr, typename acc_t>
  static GSCNN_HD void write_chunk(const Ptr& row, int i, const acc_t (&y)[kPerChunk]) {
    scalar_t v[kPerChunk];
    GSCNN_UNROLL
    for (int l = 0; l < kPerChunk; ++l) v[l] = static_cast<scalar_t>(y[l]);
    Chunk16 c;
    std::memcpy(&c, v, sizeof c);
    row[i] = c;
  }
  template <typename Ptr, typename acc_t>
  static GSCNN_HD void read_row(const Ptr& row, acc_t (&x)[kC]) {
    GSCNN_UNROLL
    for (int i = 0; i < kChunks; ++i) {
      acc_t v[kPerChunk];
      read_chunk(row, i, v);
      GSCNN_UNROLL
      for (int l = 0; l < kPerChunk; ++l) x[i * kPerChunk + l] = v[l];
    }
  }
  template <typename Ptr, typename acc_t>
  static GSCNN_HD void write_row(const Ptr& row, const acc_t (&y)[kC]) {
    GSCNN_UNROLL
    for (int i = 0; i < kChunks; ++i) {
      acc_t v[kPerChunk];
      GSCNN_UNROLL
      for (int l = 0; l < kPerChunk; ++l) v[l] = y[i * kPerChunk + l];
      write_chunk(row, i, v);
    }
  }
};

template <typename scalar_t, int kC, bool kNhwc = false>
struct ForwardProgramSmallC {
  using acc_t = at::opmath_type<scalar_t>;
  // NHWC: pixels per thread and tile (rows t and t + T of a tile of kPix * T pixels): two for the
  // half types at kC = 32, as ForwardProgramSmallCPairs does for NCHW.
  static constexpr int kPix = kNhwc && kC == 32 && sizeof(scalar_t) == 2 ? 2 : 1;
  // Registers: kC channels and kC accumulators per thread. Four blocks of 256 threads per SM
  // (64 registers each) where that fits them (kC <= 16), two (128) for kC = 32: a memory-bound
  // kernel wants many warps in flight. Two pixels per thread: three blocks of at most 128
  // threads (170 registers; capped at 128, nvcc spilled about 24 values per pixel pair).
  static constexpr int kMaxThreads = kPix == 2 ? 128 : 256;
  static constexpr int kMinBlocks = kPix == 2 ? 3 : kC <= 16 ? 4 : 2;
  static_assert(kC % 4 == 0, "four output channels per vector load");
  using Tile = PixelTile<scalar_t, kC>;  // NHWC
  static constexpr int kOB = 16;  // two-pixel transforms: output channels per pass

  Strided4d<const scalar_t> s, r;
  Strided4d<scalar_t> out, alpha;
  const scalar_t* W;   // kC x kC, [o][c]
  const scalar_t* b;   // kC, or null
  const scalar_t* wg;  // kC + Cr
  const scalar_t* bg;  // 1
  int64_t P, Cr;

  // Shared memory, in acc_t elements: Wt[c][o] (kC * kC), bias (kC), gate weights (kC + Cr),
  // gate bias (1).
  static GSCNN_HD int64_t param_elems(int64_t Cr) { return kC * kC + kC + kC + Cr + 1; }
  // NHWC: the tile starts at the first 16-byte boundary after the parameters.
  static GSCNN_HD int64_t tile_chunk_offset(int64_t Cr) {
    return (param_elems(Cr) * static_cast<int64_t>(sizeof(acc_t)) + 15) / 16;
  }
  // Work items of the grid-stride loop: pixels.
  static GSCNN_HD int64_t items(int64_t P) { return P; }
  // Shared memory of a block of T threads, in bytes.
  static GSCNN_HD int64_t shared_bytes(int64_t Cr, int64_t T) {
    return kNhwc ? (tile_chunk_offset(Cr) + Tile::chunks(kPix * T)) * 16
                 : param_elems(Cr) * static_cast<int64_t>(sizeof(acc_t));
  }

  // Every thread's share of staging the parameters in shared memory (before a barrier).
  template <typename Exec, typename Ptr>
  GSCNN_HD void stage_parameters(Exec& ex, const Ptr& sm) const {
    const int64_t T = ex.threads(), n_params = param_elems(Cr);
    ex.for_each_thread([&](int64_t t) {
      for (int64_t e = t; e < n_params; e += T) {
        acc_t v;
        if (e < kC * kC) {
          v = static_cast<acc_t>(W[(e % kC) * kC + e / kC]);  // Wt[c][o] = W[o][c], c = e / kC
        } else if (e < kC * kC + kC) {
          v = b ? static_cast<acc_t>(b[e - kC * kC]) : acc_t(0);
        } else if (e < n_params - 1) {
          v = static_cast<acc_t>(wg[e - kC * kC - kC]);
        } else {
          v = static_cast<acc_t>(bg[0]);
        }
        sm[e] = v;
      }
    });
  }

  template <typename Exec>
  GSCNN_HD void operator()(Exec& ex) const {
    auto sm = ex.template shared<acc_t>();
    const auto Wt = sm, B = sm + kC * kC, WG = sm + kC * kC + kC;
    const int64_t T = ex.threads(), first = ex.block() * T, step = ex.grid() * T;
    stage_parameters(ex, sm);
    if constexpr (!kNhwc) {
      ex.sync();  // every thread reads every parameter
      ex.for_each_thread([&](int64_t t) {
        for (int64_t p = first + t; p < P; p += step) pixel(Wt, B, WG, p);
      });
    } else {
      const auto tile = ex.template shared<Chunk16>() + tile_chunk_offset(Cr);
      const int64_t TP = kPix * T;  // pixels per tile
      // The barrier after the first load phase also orders the parameters' staging before
      // their reads; none between a store phase and the next load phase (PixelTile).
      for (int64_t p0 = kPix * first; p0 < P; p0 += kPix * step) {
        const int64_t n = P - p0 < TP ? P - p0 : TP;  // pixels of the tile
        ex.for_each_thread(
            [&](int64_t t) { Tile::template load<kPix>(tile, s.data + p0 * kC, n, t, T); });
        ex.sync();
        ex.for_each_thread([&](int64_t t) {
          const auto row = tile + t * Tile::kRow;
          if constexpr (kPix == 2) {
            if (t < n) pixel_pair_nhwc(Wt, B, WG, p0 + t, row, row + T * Tile::kRow, T, t + T < n);
          } else {
            if (t < n) pixel_nhwc(Wt, B, WG, p0 + t, row);
          }
        });
        ex.sync();
        ex.for_each_thread(
            [&](int64_t t) { Tile::template store<kPix>(out.data + p0 * kC, tile, n, t, T); });
      }
    }
  }

  // The gate of pixel p (its channels in x): alpha written, 1 + alpha returned. r is read through
  // its strides in both layouts (Cr = 1 in the shape stream: one value per pixel).
  template <typename Ptr>
  GSCNN_HD acc_t gate(const Ptr& WG, const acc_t (&x)[kC], const Pixel& q) const {
    acc_t z = static_cast<acc_t>(WG[kC + Cr]);
    GSCNN_UNROLL
    for (int c = 0; c < kC; ++c) z += static_cast<acc_t>(WG[c]) * x[c];
    const int64_t ro = r.px.offset(q);
    GSCNN_NO_UNROLL
    for (int64_t j = 0; j < Cr; ++j)
      z += static_cast<acc_t>(WG[kC + j]) * static_cast<acc_t>(r.at(ro, j));
    const acc_t a = sigmoid(z);
    alpha.at(alpha.px.offset(q), 0) = static_cast<scalar_t>(a);
    return acc_t(1) + a;
  }

  // y = b + f W x, W's rows read as broadcasts of Wt.
  template <typename Ptr>
  static GSCNN_HD void transform(const Ptr& Wt, const Ptr& B, const acc_t (&x)[kC], acc_t f,
                                 acc_t (&y)[kC]) {
    GSCNN_UNROLL
    for (int o = 0; o < kC; ++o) y[o] = acc_t(0);
    GSCNN_UNROLL
    for (int c = 0; c < kC; ++c) {
      const Ptr w = Wt + c * kC;
      GSCNN_UNROLL
      for (int o = 0; o < kC; ++o) y[o] += static_cast<acc_t>(w[o]) * x[c];
    }
    GSCNN_UNROLL
    for (int o = 0; o < kC; ++o) y[o] = static_cast<acc_t>(B[o]) + f * y[o];
  }

  // Two pixels' y = b + f W x in passes of kOB outputs: every broadcast of W feeds both pixels'
  // accumulators (the sums of transform, in its order). emit(ob, y0, y1) takes each pass.
  template <typename Ptr, typename Emit>
  static GSCNN_HD void transform2(const Ptr& Wt, const Ptr& B, const acc_t (&x0)[kC],
                                  const acc_t (&x1)[kC], acc_t f0, acc_t f1, Emit&& emit) {
    GSCNN_UNROLL
    for (int ob = 0; ob < kC; ob += kOB) {
      acc_t y0[kOB], y1[kOB];
      GSCNN_UNROLL
      for (int o = 0; o < kOB; ++o) y0[o] = y1[o] = acc_t(0);
      GSCNN_UNROLL
      for (int c = 0; c < kC; ++c) {
        const Ptr w = Wt + c * kC + ob;
        GSCNN_UNROLL
        for (int o = 0; o < kOB; ++o) {
          const acc_t wo = static_cast<acc_t>(w[o]);
          y0[o] += wo * x0[c];
          y1[o] += wo * x1[c];
        }
      }
      GSCNN_UNROLL
      for (int o = 0; o < kOB; ++o) {
        const acc_t bo = static_cast<acc_t>(B[ob + o]);
        y0[o] = bo + f0 * y0[o];
        y1[o] = bo + f1 * y1[o];
      }
      emit(ob, y0, y1);
    }
  }

  template <typename Ptr>
  GSCNN_HD void pixel(const Ptr& Wt, const Ptr& B, const Ptr& WG, int64_t p) const {
    const Pixel q = Pixel::of(p, s.px.HW, s.px.W);  // every tensor has the same N, H, W
    acc_t x[kC];  // in registers: every loop over it below is unrolled
    // Channel addresses as a pointer walk (one 64-bit add per channel): indexed as
    // data[offset + c * sC], nvcc spent 4-6 integer instructions per load and store on them, a
    // fifth of the bf16 kernel's instructions (scripts/kernel_report.py).
    const scalar_t* sp = &s.at(s.px.offset(q), 0);
    GSCNN_UNROLL
    for (int c = 0; c < kC; ++c) {
      if (c > 0) sp += s.sC;
      x[c] = static_cast<acc_t>(*sp);
    }
    acc_t y[kC];
    transform(Wt, B, x, gate(WG, x, q), y);
    scalar_t* op = &out.at(out.px.offset(q), 0);
    GSCNN_UNROLL
    for (int o = 0; o < kC; ++o) {
      if (o > 0) op += out.sC;
      *op = static_cast<scalar_t>(y[o]);
    }
  }

  // NHWC: the pixel's channels from its row of the tile, its outputs written over them.
  template <typename Ptr, typename ChunkPtr>
  GSCNN_HD void pixel_nhwc(const Ptr& Wt, const Ptr& B, const Ptr& WG, int64_t p,
                           const ChunkPtr& row) const {
    acc_t x[kC];
    Tile::read_row(row, x);
    acc_t y[kC];
    transform(Wt, B, x, gate(WG, x, Pixel::of(p, s.px.HW, s.px.W)), y);
    Tile::write_row(row, y);
  }

  // NHWC, two pixels per thread: pixels p and p + T, rows row0 and row1; the second only where
  // `second` (the last tile may end between them: then the first pixel's values stand in for
  // the second's, which is neither read nor written -- one code path, no duplicate).
  template <typename Ptr, typename ChunkPtr>
  GSCNN_HD void pixel_pair_nhwc(const Ptr& Wt, const Ptr& B, const Ptr& WG, int64_t p,
                                const ChunkPtr& row0, const ChunkPtr& row1, int64_t T,
                                bool second) const {
    constexpr int kPerChunk = Tile::kPerChunk;
    static_assert(kOB % kPerChunk == 0, "whole chunks per pass");
    acc_t x0[kC], x1[kC];
    Tile::read_row(row0, x0);
    Tile::read_row(second ? row1 : row0, x1);
    const acc_t f0 = gate(WG, x0, Pixel::of(p, s.px.HW, s.px.W));
    const acc_t f1 = second ? gate(WG, x1, Pixel::of(p + T, s.px.HW, s.px.W)) : f0;
    transform2(Wt, B, x0, x1, f0, f1, [&](int ob, const acc_t (&y0)[kOB], const acc_t (&y1)[kOB]) {
      GSCNN_UNROLL
      for (int k = 0; k < kOB / kPerChunk; ++k) {
        acc_t v0[kPerChunk], v1[kPerChunk];
        GSCNN_UNROLL
        for (int l = 0; l < kPerChunk; ++l) {
          v0[l] = y0[k * kPerChunk + l];
          v1[l] = y1[k * kPerChunk + l];
        }
        Tile::write_chunk(row0, ob / kPerChunk + k, v0);
        if (second) Tile::write_chunk(row1, ob / kPerChunk + k, v1);
      }
    });
  }
};

// ---------------------------------------------------------------------------------------------
// Forward for the shape stream's widest layer in half types (kC = 32, float16 / bfloat16), NCHW
// contiguous with an even number of pixels per image: two neighbouring pixels per thread. Their
// values of a channel are one 32-bit word (one load or store for both), and each broadcast of four
// weights from shared memory feeds both pixels' accumulators: per pixel half the global
// instructions, half the shared loads of ForwardProgramSmallC and half its index arithmetic, for
// a kernel that scripts/kernel_report.py found bound by instruction issue (1.4x its HBM floor).
// Outputs in passes of kOB channels: two pixels' kC inputs and 2 x kOB accumulators in registers.

// Two neighbouring values at a 4-byte aligned address (one 32-bit access), as the accumulation
// type / from it.
template <typename scalar_t, typename acc_t>
GSCNN_HD void load_pair(const scalar_t* p, acc_t& a, acc_t& b) {
  static_assert(sizeof(scalar_t) == 2, "a pair of 16-bit values");
  const uint32_t word = load_bits<uint32_t>(p);
  scalar_t v[2];
  std::memcpy(v, &word, sizeof word);
  a = static_cast<acc_t>(v[0]);
  b = static_cast<acc_t>(v[1]);
}
template <typename scalar_t, typename acc_t>
GSCNN_HD void store_pair(scalar_t* p, acc_t a, acc_t b) {
  const scalar_t v[2] = {static_cast<scalar_t>(a), static_cast<scalar_t>(b)};
  uint32_t word;
  std::memcpy(&word, v, sizeof word);
  store_bits(p, word);
}

template <typename scalar_t, int kC>
struct ForwardProgramSmallCPairs : ForwardProgramSmallC<scalar_t, kC> {
  using Base = ForwardProgramSmallC<scalar_t, kC>;
  using acc_t = typename Base::acc_t;
  using Base::kOB;                            // output channels per pass
  static constexpr int kPixelsPerThread = 2;  // per step of the grid-stride loop
  static_assert(sizeof(scalar_t) == 2 && kC % kOB == 0, "16-bit pairs, whole passes");

  // Work items of the grid-stride loop: pairs of pixels.
  static GSCNN_HD int64_t items(int64_t P) { return P / 2; }

  template <typename Exec>
  GSCNN_HD void operator()(Exec& ex) const {
    auto sm = ex.template shared<acc_t>();
    const auto Wt = sm, B = sm + kC * kC, WG = sm + kC * kC + kC;
    const int64_t T = ex.threads(), first = ex.block() * T, step = ex.grid() * T;
    this->stage_parameters(ex, sm);
    ex.sync();  // every thread reads every parameter
    ex.for_each_thread([&](int64_t t) {
      for (int64_t q = first + t; q < items(this->P); q += step) pair(Wt, B, WG, 2 * q);
    });
  }

  // Pixels p and p + 1 (one image, one row of every channel plane: the host checks).
  template <typename Ptr>
  GSCNN_HD void pair(const Ptr& Wt, const Ptr& B, const Ptr& WG, int64_t p) const {
    const auto& s = this->s;
    const auto& r = this->r;
    const auto& out = this->out;
    const auto& alpha = this->alpha;
    const Pixel q = Pixel::of(p, s.px.HW, s.px.W);
    acc_t x0[kC], x1[kC];
    acc_t z0 = static_cast<acc_t>(WG[kC + this->Cr]), z1 = z0;
    const scalar_t* sp = &s.at(s.px.offset(q), 0);
    GSCNN_UNROLL
    for (int c = 0; c < kC; ++c) {
      if (c > 0) sp += s.sC;
      load_pair(sp, x0[c], x1[c]);
      const acc_t w = static_cast<acc_t>(WG[c]);
      z0 += w * x0[c];
      z1 += w * x1[c];
    }
    const int64_t ro = r.px.offset(q);
    GSCNN_NO_UNROLL
    for (int64_t j = 0; j < this->Cr; ++j) {
      acc_t r0, r1;
      load_pair(&r.at(ro, j), r0, r1);
      const acc_t w = static_cast<acc_t>(WG[kC + j]);
      z0 += w * r0;
      z1 += w * r1;
    }
    const acc_t a0 = sigmoid(z0), a1 = sigmoid(z1);
    store_pair(&alpha.at(alpha.px.offset(q), 0), a0, a1);
    const acc_t f0 = acc_t(1) + a0, f1 = acc_t(1) + a1;
    scalar_t* op = &out.at(out.px.offset(q), 0);
    Base::transform2(Wt, B, x0, x1, f0, f1,
                     [&](int ob, const acc_t (&y0)[kOB], const acc_t (&y1)[kOB]) {
                       GSCNN_UNROLL
                       for (int o = 0; o < kOB; ++o) {
                         if (ob + o > 0) op += out.sC;
                         store_pair(op, y0[o], y1[o]);
                       }
                     });
  }
};

// ---------------------------------------------------------------------------------------------
// Backward (linear gate). The grid has one block per row of `partials` (gcl::num_partials); block
// blk walks tiles blk, blk + grid, ... of T pixels:
//   pixel phase  (thread t, pixel tile*T + t): load g, s, r into the shared tiles, compute ds and
//                dr, leave 1 + alpha and dz in the shared rows F and DZ (0 at padding pixels);
//   barrier      (the reduce phase reads every thread's column);
//   reduce phase (thread t owns partial-sum entries t, t + T, ...): add the tile's contribution
//                to the block's row of `partials` (global memory; only thread t ever touches
//                entry t, so no atomics and no size limit from shared memory);
// and a barrier between two tiles (the next pixel phase overwrites what the reduce phase read).

// Shared memory of the backward block, in acc_t elements: tiles G (Cout rows), S (C), R (Cr), F and
// DZ (one row each), rows padded to T + 1 so that the reduce phase, where a warp reads one pixel
// of 32 different rows, hits 32 different banks.
struct BackwardShared {
  int64_t ld, G, S, R, F, DZ, total;
  GSCNN_HD BackwardShared(const GradLayout& L, int64_t T) : ld(T + 1) {
    G = 0;
    S = G + L.Cout * ld;
    R = S + L.C * ld;
    F = R + L.Cr * ld;
    DZ = F + ld;
    total = DZ + ld;
  }
};

template <typename scalar_t>
struct BackwardProgram {
  using acc_t = at::opmath_type<scalar_t>;
  static constexpr int kMaxThreads = 256;
  static constexpr bool kGlobalScratch = true;  // large problems: buffers in global memory

  Strided4d<const scalar_t> g, g_alpha, s, r;  // g_alpha.data is null when alpha got no gradient
  Strided4d<scalar_t> ds, dr;
  const scalar_t* wg;  // C + Cr
  const scalar_t* bg;  // 1
  const scalar_t* W;   // Cout x C
  acc_t* partials;     // (grid, L.size())
  int64_t P;
  GradLayout L;

  GSCNN_HD int64_t num_tiles(int64_t T) const { return (P + T - 1) / T; }

  template <typename Exec>
  GSCNN_HD void operator()(Exec& ex) const {
    auto smem = ex.template shared<acc_t>();
    const int64_t T = ex.threads();
    acc_t* row = partials + ex.block() * L.size();
    ex.for_each_thread([&](int64_t t) {
      for (int64_t e = t; e < L.size(); e += T) row[e] = acc_t(0);
    });
    for (int64_t tile = ex.block(); tile < num_tiles(T); tile += ex.grid()) {
      if (tile != ex.block()) ex.sync();  // the last reduce phase read what this one overwrites
      ex.for_each_thread([&](int64_t t) { pixel_phase(smem, tile, t, T); });
      ex.sync();
      ex.for_each_thread([&](int64_t t) { reduce_phase(smem, row, t, T); });
    }
  }

  template <typename Ptr>
  GSCNN_HD void pixel_phase(Ptr smem, int64_t tile, int64_t t, int64_t T) const {
    const BackwardShared sh(L, T);
    const auto G = smem + sh.G, S = smem + sh.S, R = smem + sh.R;
    const int64_t C = L.C, Cr = L.Cr, Cout = L.Cout, ld = sh.ld;
    const int64_t p = tile * T + t;
    acc_t f = 0, dz = 0;
    if (p < P) {
      const Pixel q = Pixel::of(p, s.px.HW, s.px.W);  // every tensor has the same N, H, W
      const int64_t go = g.px.offset(q), so = s.px.offset(q), ro = r.px.offset(q);
      for (int64_t o = 0; o < Cout; ++o) G[o * ld + t] = static_cast<acc_t>(g.at(go, o));
      for (int64_t c = 0; c < C; ++c) S[c * ld + t] = static_cast<acc_t>(s.at(so, c));
      for (int64_t j = 0; j < Cr; ++j) R[j * ld + t] = static_cast<acc_t>(r.at(ro, j));
      const LinearGate<acc_t, scalar_t> gate{wg, bg};
      const acc_t a = sigmoid(gate.logit(TileColumn<acc_t, decltype(S)>{S, R, C, ld, t}, C + Cr));
      f = acc_t(1) + a;

      // dalpha = g_alpha + sum_c gu_c s_c with gu = W^T g; gu is recomputed for ds rather than
      // stored (it would need another C rows of shared memory).
      acc_t dalpha = g_alpha.data ? static_cast<acc_t>(g_alpha.at(g_alpha.px.offset(q), 0))
                                  : acc_t(0);
      for (int64_t c = 0; c < C; ++c)
        dalpha += shape_column_grad(G, c, ld, t) * static_cast<acc_t>(S[c * ld + t]);
      dz = gate_logit_grad(dalpha, a);

      const int64_t dso = ds.px.offset(q), dro = dr.px.offset(q);
      for (int64_t c = 0; c < C; ++c) {
        const acc_t gu = shape_column_grad(G, c, ld, t);
        ds.at(dso, c) = static_cast<scalar_t>(shape_grad(gu, f, dz, static_cast<acc_t>(wg[c])));
      }
      for (int64_t j = 0; j < Cr; ++j)
        dr.at(dro, j) = static_cast<scalar_t>(dz * static_cast<acc_t>(wg[C + j]));
    } else {  // padding pixel of the last tile: contributes nothing to the reduction
      for (int64_t o = 0; o < Cout; ++o) G[o * ld + t] = acc_t(0);
      for (int64_t c = 0; c < C; ++c) S[c * ld + t] = acc_t(0);
      for (int64_t j = 0; j < Cr; ++j) R[j * ld + t] = acc_t(0);
    }
    smem[sh.F + t] = f;
    smem[sh.DZ + t] = dz;
  }

  // gu_c = (W^T g)_c for the pixel in column t of G.
  template <typename Ptr>
  GSCNN_HD acc_t shape_column_grad(const Ptr& G, int64_t c, int64_t ld, int64_t t) const {
    acc_t gu = 0;
    for (int64_t o = 0; o < L.Cout; ++o)
      gu += static_cast<acc_t>(W[o * L.C + c]) * static_cast<acc_t>(G[o * ld + t]);
    return gu;
  }

  template <typename Ptr>
  GSCNN_HD void reduce_phase(Ptr smem, acc_t* row, int64_t t, int64_t T) const {
    const BackwardShared sh(L, T);
    for (int64_t e = t; e < L.size(); e += T) {
      tile_entry_accumulate<acc_t>(L, e, smem + sh.G, smem + sh.S, smem + sh.R, smem + sh.F,
                                   smem + sh.DZ, sh.ld, T, row + e);
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Backward for the shape stream's widths (linear gate, C = C_out = kC in {8, 16, 32}, few Cr).
// The generic program recomputed gu = W^T g twice per pixel and, in its reduction, read three
// shared values per (parameter entry, pixel). Here:
//   parameters  W ([o][c], read as broadcast rows), gate weights and bias staged once per block;
//   pixel phase (thread t, pixel tile * T + t): s, g in registers; alpha; gu once (registers);
//               ds, dr written; the shared rows G = g, S = s, R = r, DZ = dz and F = 1 + alpha
//               filled (0 at padding pixels);
//   reduce      dW = G (S F)^T as 4 x 4 register tiles: work item (entry block eb, pixel group
//               pg) sums its block over its pixels (9 loads per 16 FMAs, 16-byte loads on the
//               GPU) into its own slots of shared accumulators (entry-major: conflict-free);
//               db, dw_g, db_g are sums of G, S DZ, R DZ and DZ, each owned by one thread,
//               added to the block's row of `partials`;
//   end         the pixel groups' accumulators summed in order into the row (deterministic).
// Every work item and every row entry belongs to exactly one thread: no atomics.

template <int kC>
struct BackwardSmallCShared {
  static constexpr int kB = 4;                                  // dW register tile: kB x kB
  static constexpr int kEB = (kC / kB) * (kC / kB);             // entry blocks of dW
  int64_t ld, WG, G, rows, ACC, acc_ld, groups, span, items, total;
  int64_t Cr;
  GSCNN_HD BackwardSmallCShared(int64_t Cr_, int64_t T) : Cr(Cr_) {
    // 16-byte aligned rows whose starts step one group of 4 banks (of 8) per row: ld = 4 mod 32
    ld = (T + 31) / 32 * 32 + 4;
    WG = kC * kC;  // W [o][c] at 0
    G = (WG + kC + Cr + 1 + 3) / 4 * 4;
    rows = 2 * kC + Cr + 2;  // G, S, R, DZ (the order of the layout's db, dw_g, db_g), then F
    ACC = G + rows * ld;
    groups = T >= kEB ? T / kEB : 1;
    span = (T + groups - 1) / groups;
    items = kEB * groups;
    // dW's accumulators: entry (i, j) of every item in one row of acc_ld (the reduce's lanes,
    // consecutive items, touch consecutive words); rows kEB % 32 banks apart, so that the end
    // phase's lanes -- consecutive entry blocks of consecutive entries of the tile -- do too
    acc_ld = items + kEB % 32;
    total = ACC + acc_ld * kB * kB;
  }
  // Where row r of the per-pixel rows lies: G's and S's rows (2 kC, whole groups of 8) in their
  // group of 8 rows at the slot whose start is in bank group g(r) = 3 (r / 4) + 6 (r % 4) mod 8
  // (a permutation of the 8: 6k + {0, 6, 4, 2, 3, 1, 7, 5} for rows 8k ..), R's, DZ and F after
  // them in order (compile-time slots for G's and S's rows of an unrolled loop). Then the
  // reduce's 16-byte loads are free of bank conflicts -- its quarter-warps read row i of 8
  // different blocks of four rows at one pixel (C = 32: g = 3b + 6i, distinct), of 4 blocks
  // (C = 16), or of 2 blocks at two pixels 4 apart (C = 8: g, g + 1, g + 3, g + 4) -- and so are
  // the sums' (8 consecutive rows from a multiple of 8). In order, row i of 8 blocks fell in 2
  // bank groups: 4 wavefronts a quarter-warp for the C = 32 reduce's S loads instead of 1.
  GSCNN_HD int64_t row(int64_t r) const {
    const uint32_t u = static_cast<uint32_t>(r);  // unsigned: shifts and masks, no sign fixups
    const uint32_t slot = u < 2u * kC ? (u & ~7u) + ((3u * (u >> 2) + 6u * (u & 3u)) & 7u) : u;
    return G + static_cast<int64_t>(slot) * ld;
  }
  GSCNN_HD int64_t g(int64_t o) const { return row(o); }
  GSCNN_HD int64_t s(int64_t c) const { return row(kC + c); }
  GSCNN_HD int64_t r(int64_t j) const { return row(2 * kC + j); }
  GSCNN_HD int64_t dz() const { return row(2 * kC + Cr); }
  GSCNN_HD int64_t f() const { return row(2 * kC + Cr + 1); }
};

template <typename scalar_t, int kC, bool kNhwc = false>
struct BackwardProgramSmallC {
  using acc_t = at::opmath_type<scalar_t>;
  using Sh = BackwardSmallCShared<kC>;
  using Tile = PixelTile<scalar_t, kC>;  // NHWC
  // At most 128 registers (launch bounds for two blocks of 256 threads): four blocks of the
  // 128-thread launch per SM where shared memory allows. NHWC at kC = 32: blocks of at most 128
  // threads, two per SM (all its shared memory allows on an H100), so up to 255 registers: capped
  // at 128, nvcc spilled ~60 values per pixel across the gu loop.
  static constexpr bool kWide = kNhwc && kC == 32;
  static constexpr int kMaxThreads = kWide ? 128 : 256;
  static constexpr int kMinBlocks = 2;
  static constexpr int kB = Sh::kB, kEB = Sh::kEB;
  static_assert(kC % 4 == 0, "4 x 4 tiles of dW");

  // The problem, as the generic program holds it (views, parameters, partial sums, layout):
  // make_backward_program builds both.
  BackwardProgram<scalar_t> a;

  GSCNN_HD int64_t num_tiles(int64_t T) const { return (a.P + T - 1) / T; }
  // NHWC (s, g and ds contiguous channels_last, 16-byte aligned): two PixelTiles after the
  // buffers of Sh, s's (its rows then hold ds) and g's.
  static GSCNN_HD int64_t tiles_chunk_offset(int64_t Cr, int64_t T) {
    return (Sh(Cr, T).total * static_cast<int64_t>(sizeof(acc_t)) + 15) / 16;
  }
  // Shared memory of a block of T threads, in bytes.
  static GSCNN_HD int64_t shared_bytes(int64_t Cr, int64_t T) {
    return kNhwc ? (tiles_chunk_offset(Cr, T) + 2 * Tile::chunks(T)) * 16
                 : Sh(Cr, T).total * static_cast<int64_t>(sizeof(acc_t));
  }

  template <typename Exec>
  GSCNN_HD void operator()(Exec& ex) const {
    auto sm = ex.template shared<acc_t>();
    const int64_t T = ex.threads();
    const Sh sh(a.L.Cr, T);
    acc_t* row = a.partials + ex.block() * a.L.size();
    const int64_t n_params = kC * kC + kC + a.L.Cr + 1;
    ex.for_each_thread([&](int64_t t) {
      for (int64_t e = t; e < n_params; e += T)
        sm[e] = static_cast<acc_t>(e < kC * kC ? a.W[e] : (e < n_params - 1 ? a.wg[e - kC * kC] : a.bg[0]));
      for (int64_t e = t; e < sh.acc_ld * kB * kB; e += T) sm[sh.ACC + e] = acc_t(0);
      for (int64_t e = a.L.bias_offset() + t; e < a.L.size(); e += T) row[e] = acc_t(0);
    });
    // NHWC: the tiles of s (then ds) and g; unused otherwise.
    const auto XS = ex.template shared<Chunk16>() + (kNhwc ? tiles_chunk_offset(a.L.Cr, T) : 0);
    const auto XG = XS + Tile::chunks(T);
    for (int64_t tile = ex.block(); tile < num_tiles(T); tile += ex.grid()) {
      const int64_t p0 = tile * T, n = a.P - p0 < T ? a.P - p0 : T;
      // NHWC: the tile's s and g staged before the barrier (they touch no buffer the last reduce
      // phase reads, and the last store phase's chunks are the thread's own: PixelTile).
      if constexpr (kNhwc) {
        ex.for_each_thread([&](int64_t t) {
          Tile::load(XS, a.s.data + p0 * kC, n, t, T);
          Tile::load(XG, a.g.data + p0 * kC, n, t, T);
        });
      }
      // parameters staged (first tile); the last reduce phase read what this one overwrites
      ex.sync();
      ex.for_each_thread([&](int64_t t) {
        pixel_phase(sm, sh, p0 + t, t, XS + t * Tile::kRow, XG + t * Tile::kRow);
      });
      ex.sync();
      ex.for_each_thread([&](int64_t t) {
        reduce_phase(sm, sh, row, t, T);
        if constexpr (kNhwc) Tile::store(a.ds.data + p0 * kC, XS, n, t, T);
      });
    }
    ex.sync();  // every item's accumulators, for the sums over pixel groups
    ex.for_each_thread([&](int64_t t) {
      // entry (at, eb): at-major, so that a warp's lanes read consecutive entry blocks
      for (int64_t e = t; e < kC * kC; e += T) {
        const int64_t at = e / kEB, eb = e % kEB;
        const int64_t o = (eb / (kC / kB)) * kB + at / kB, c = (eb % (kC / kB)) * kB + at % kB;
        acc_t sum = 0;
        for (int64_t pg = 0; pg < sh.groups; ++pg)
          sum += static_cast<acc_t>(sm[sh.ACC + at * sh.acc_ld + pg * kEB + eb]);
        row[o * kC + c] = sum;
      }
    });
  }

  // xs, xg: NHWC, the pixel's rows of the s and g tiles (ds is written over xs).
  template <typename Ptr, typename ChunkPtr>
  GSCNN_HD void pixel_phase(Ptr sm, const Sh& sh, int64_t p, int64_t t,
                            [[maybe_unused]] const ChunkPtr& xs,
                            [[maybe_unused]] const ChunkPtr& xg) const {
    if (p >= a.P) {  // padding pixel of the last tile: contributes nothing to the sums
      for (int64_t i = 0; i < sh.rows; ++i) sm[sh.row(i) + t] = acc_t(0);
      return;
    }
    const Pixel q = Pixel::of(p, a.s.px.HW, a.s.px.W);  // every tensor has the same N, H, W
    const int64_t ro = a.r.px.offset(q);
    [[maybe_unused]] const int64_t so = a.s.px.offset(q), go = a.g.px.offset(q);  // NCHW
    const Ptr WG = sm + sh.WG;
    // x (the pixel's channels) and gu in registers; g and, after the logit, s are read back from
    // the thread's own column of G and S (one shared load per 2 x kC FMAs): fewer live registers.
    acc_t x[kC], gu[kC];
    acc_t z = static_cast<acc_t>(WG[kC + a.L.Cr]);
    if constexpr (kNhwc) {
      Tile::read_row(xs, x);
      GSCNN_UNROLL
      for (int c = 0; c < kC; ++c) z += static_cast<acc_t>(WG[c]) * x[c];
    } else {
      // Channel addresses as pointer walks, as in ForwardProgramSmallC::pixel; the logit summed
      // in the same loop (split off, nvcc gave the bf16 kernel at kC = 32 a stack frame).
      const scalar_t* sp = &a.s.at(so, 0);
      GSCNN_UNROLL
      for (int c = 0; c < kC; ++c) {
        if (c > 0) sp += a.s.sC;
        x[c] = static_cast<acc_t>(*sp);
        z += static_cast<acc_t>(WG[c]) * x[c];
      }
    }
    GSCNN_NO_UNROLL
    for (int64_t j = 0; j < a.L.Cr; ++j) {
      const acc_t rj = static_cast<acc_t>(a.r.at(ro, j));
      z += static_cast<acc_t>(WG[kC + j]) * rj;
      sm[sh.r(j) + t] = rj;
    }
    const acc_t alpha = sigmoid(z);
    const acc_t f = acc_t(1) + alpha;
    sm[sh.f() + t] = f;
    GSCNN_UNROLL
    for (int c = 0; c < kC; ++c) {
      sm[sh.s(c) + t] = x[c];
      gu[c] = acc_t(0);
    }
    if constexpr (kNhwc) {
      GSCNN_UNROLL
      for (int i = 0; i < Tile::kChunks; ++i) {  // a chunk at a time: few live registers
        acc_t v[Tile::kPerChunk];
        Tile::read_chunk(xg, i, v);
        GSCNN_UNROLL
        for (int l = 0; l < Tile::kPerChunk; ++l)
          sm[sh.g(i * Tile::kPerChunk + l) + t] = v[l];
      }
    } else {
      const scalar_t* gp = &a.g.at(go, 0);
      GSCNN_UNROLL
      for (int o = 0; o < kC; ++o) {
        if (o > 0) gp += a.g.sC;
        sm[sh.g(o) + t] = static_cast<acc_t>(*gp);
      }
    }
    GSCNN_UNROLL
    for (int o = 0; o < kC; ++o) {  // gu = W^T g, W's row o a broadcast read
      const Ptr w = sm + o * kC;
      const acc_t go_ = static_cast<acc_t>(sm[sh.g(o) + t]);
      GSCNN_UNROLL
      for (int c0 = 0; c0 < kC; c0 += 4) {
        // 16-byte loads, as nvcc makes of the scalar form (LDS.128), written out so that the
        // emulator counts the accesses the GPU makes
        acc_t wq[4];
        load_vector<4>(w + c0, wq);
        GSCNN_UNROLL
        for (int u = 0; u < 4; ++u) gu[c0 + u] += wq[u] * go_;
      }
    }
    acc_t dalpha = a.g_alpha.data ? static_cast<acc_t>(a.g_alpha.at(a.g_alpha.px.offset(q), 0))
                                : acc_t(0);
    GSCNN_UNROLL
    for (int c = 0; c < kC; ++c) dalpha += gu[c] * static_cast<acc_t>(sm[sh.s(c) + t]);
    const acc_t dz = gate_logit_grad(dalpha, alpha);
    const int64_t dro = a.dr.px.offset(q);
    if constexpr (kNhwc) {
      GSCNN_UNROLL
      for (int i = 0; i < Tile::kChunks; ++i) {
        acc_t v[Tile::kPerChunk];
        GSCNN_UNROLL
        for (int l = 0; l < Tile::kPerChunk; ++l) {
          const int c = i * Tile::kPerChunk + l;
          v[l] = shape_grad(gu[c], f, dz, static_cast<acc_t>(WG[c]));
        }
        Tile::write_chunk(xs, i, v);
      }
    } else {
      scalar_t* dsp = &a.ds.at(a.ds.px.offset(q), 0);
      GSCNN_UNROLL
      for (int c = 0; c < kC; ++c) {
        if (c > 0) dsp += a.ds.sC;
        *dsp = static_cast<scalar_t>(shape_grad(gu[c], f, dz, static_cast<acc_t>(WG[c])));
      }
    }
    GSCNN_NO_UNROLL
    for (int64_t j = 0; j < a.L.Cr; ++j)
      a.dr.at(dro, j) = static_cast<scalar_t>(dz * static_cast<acc_t>(WG[kC + j]));
    sm[sh.dz() + t] = dz;
  }

  template <typename Ptr>
  GSCNN_HD void reduce_phase(Ptr sm, const Sh& sh, acc_t* row, int64_t t, int64_t T) const {
    for (int64_t item = t; item < sh.items; item += T) {
      const int64_t eb = item % kEB, pg = item / kEB;
      const int64_t p0 = pg * sh.span, p1 = p0 + sh.span < T ? p0 + sh.span : T;
      // the rows of the item's blocks of G and S (each in its slot: Sh::row)
      int64_t go[kB], so[kB];
      GSCNN_UNROLL
      for (int i = 0; i < kB; ++i) {
        go[i] = sh.g((eb / (kC / kB)) * kB + i);
        so[i] = sh.s((eb % (kC / kB)) * kB + i);
      }
      const Ptr Fb = sm + sh.f();
      acc_t acc[kB][kB] = {};
      int64_t px = p0;
      if ((sh.span % 4) == 0 && (T % 4) == 0) {  // whole, aligned quads: 16-byte loads
        for (; px < p1; px += 4) {
          acc_t gq[kB][4], uq[kB][4], fq[4];
          load_vector<4>(Fb + px, fq);
          GSCNN_UNROLL
          for (int i = 0; i < kB; ++i) {
            load_vector<4>(sm + (go[i] + px), gq[i]);
            load_vector<4>(sm + (so[i] + px), uq[i]);
          }
          GSCNN_UNROLL
          for (int l = 0; l < 4; ++l) {
            GSCNN_UNROLL
            for (int j = 0; j < kB; ++j) uq[j][l] *= fq[l];  // u = s (1 + alpha)
            GSCNN_UNROLL
            for (int i = 0; i < kB; ++i)
              GSCNN_UNROLL
              for (int j = 0; j < kB; ++j) acc[i][j] += gq[i][l] * uq[j][l];
          }
        }
      }
      for (; px < p1; ++px) {
        const acc_t f = static_cast<acc_t>(Fb[px]);
        GSCNN_UNROLL
        for (int i = 0; i < kB; ++i)
          GSCNN_UNROLL
          for (int j = 0; j < kB; ++j)
            acc[i][j] += static_cast<acc_t>(sm[go[i] + px]) *
                         (static_cast<acc_t>(sm[so[j] + px]) * f);
      }
      // entry-major slots (entry (i, j) of every item in one row): a warp's 32 items touch 32
      // consecutive words, one wavefront per access (item-major, 16 words apart, every access
      // was a 16-way bank conflict: 16 scalar loads and 16 stores of 16 wavefronts each)
      const Ptr slot = sm + sh.ACC + item;
      GSCNN_UNROLL
      for (int i = 0; i < kB; ++i)
        GSCNN_UNROLL
        for (int j = 0; j < kB; ++j) {
          const int at = (i * kB + j) * static_cast<int>(sh.acc_ld);
          slot[at] = static_cast<acc_t>(slot[at]) + acc[i][j];
        }
    }
    // db = sum G, dw_g = sum (S, R) DZ, db_g = sum DZ: rows G, S, R, DZ are contiguous, in
    // the layout's order of these entries.
    const int64_t n_small = a.L.size() - a.L.bias_offset();
    const Ptr DZ = sm + sh.dz();
    for (int64_t e = t; e < n_small; e += T) {
      const Ptr x = sm + sh.row(e);
      const bool plain = e < kC || e == n_small - 1;
      // in order of i; whole quads as 16-byte loads (rows 16-byte aligned), as nvcc makes of
      // the scalar form, written out so that the emulator counts the accesses the GPU makes
      acc_t sum = 0, xq[4], dq[4];
      int64_t i = 0;
      if (plain) {
        for (; i + 4 <= T; i += 4) {
          load_vector<4>(x + i, xq);
          GSCNN_UNROLL
          for (int u = 0; u < 4; ++u) sum += xq[u];
        }
        for (; i < T; ++i) sum += static_cast<acc_t>(x[i]);
      } else {
        for (; i + 4 <= T; i += 4) {
          load_vector<4>(x + i, xq);
          load_vector<4>(DZ + i, dq);
          GSCNN_UNROLL
          for (int u = 0; u < 4; ++u) sum += xq[u] * dq[u];
        }
        for (; i < T; ++i) sum += static_cast<acc_t>(x[i]) * static_cast<acc_t>(DZ[i]);
      }
      row[a.L.bias_offset() + e] += sum;
    }
  }
};

}  // namespace gcl
}  // namespace gscnn
