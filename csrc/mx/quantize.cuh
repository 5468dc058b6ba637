// MX codecs (docs/spec.md sec. 3): MXFP8 (E4M3 elements) and MXFP4 (E2M1 elements), one E8M0
// scale per 32 elements. Torch-free device code; the launchers are in mx/ops.cu.
//
// Three kernels, all memory-bound streaming passes:
//  * mx_quantize_rowwise_kernel: blocks of 32 along the contiguous last dim. A thread owns
//    one 16-byte input vector (8 bf16/fp16 or 4 fp32), so a block is 4 (or 8) adjacent
//    lanes; they combine their amax with __shfl_xor. 4 independent vectors per thread are
//    in flight; every warp load is 512 contiguous bytes and every warp store contiguous.
//  * mx_quantize_colwise_kernel: blocks of 32 along dim -2, output transposed. A CTA reads
//    a 128-row x 128-byte tile of x once (coalesced 16-byte loads) into shared memory as
//    fp32, then each thread walks 16 rows of one column (half an MX block; the other half
//    is the neighbouring lane) and writes 16 contiguous output bytes (E4M3) or 8 (E2M1):
//    8 lanes cover 128 contiguous rows of x = one 128-byte run of an output row.
//  * mx_dequantize_kernel: one thread per 16-byte output vector, 4 in flight per thread.
// The columnwise kernel's tile helpers (ColTile, load_col_tile, store_tile_vector,
// colwise_quantize_tile) and the rowwise lane-vector encode (quantize_lane_vector) also
// serve mx_quantize_rowcol (mx/rowcol.cuh); the tile helpers (col_tile_coord,
// load_col_tile_async, store_col_tile, read_tile_column) also the NVFP4 columnwise training
// kernel (train/colwise_smem.cuh).
// Every fp32 operation is an explicit _rn intrinsic (no FMA contraction can change a bit).
#pragma once

#include <cstdint>

#include "core/bits.h"
#include "core/e2m1.h"
#include "core/e4m3.h"
#include "core/e8m0.h"
#include "core/swizzle.h"
#include "core/vec.cuh"

namespace nvfp4 {
namespace mx {

constexpr int kBlock = 32;
constexpr int kThreads = 256;           // every MX kernel runs 256-thread CTAs
constexpr uint32_t kNanByte = 255u;     // E8M0 NaN: the scale of a block holding NaN/inf

// Emax (largest element magnitude) and emax (its unbiased exponent) per element type.
template <bool E2M1>
struct ElemFormat {
  static constexpr float kMax = 448.0f;
  static constexpr int kEmax = 8;
};
template <>
struct ElemFormat<true> {
  static constexpr float kMax = 6.0f;
  static constexpr int kEmax = 2;
};

// Where the E8M0 byte of block (row, c) of a [batches * rows, kb] scale matrix goes:
// linear, or the 128x4 swizzled layout with each batch padded to [mp, kp] (docs/spec.md sec. 4).
struct ScaleLayout {
  int64_t kb = 0, rows = 0, mp = 0, kp = 0;
  FastDiv div_kb, div_rows;
  bool swizzle = false;
  bool fast = true;  // batches * rows * kb < 2^31: the FastDiv path is exact
};

// Byte offset of the scale of flat block index blk (= row_total * kb + c).
__device__ __forceinline__ int64_t scale_offset(int64_t blk, const ScaleLayout& s) {
  if (!s.swizzle) return blk;
  int64_t row_total, batch;
  if (s.fast) {
    const uint32_t q = s.div_kb.div(static_cast<uint32_t>(blk));
    row_total = q;
    batch = s.div_rows.div(q);
  } else {
    row_total = blk / s.kb;
    batch = row_total / s.rows;
  }
  const int64_t c = blk - row_total * s.kb;
  const int64_t r = row_total - batch * s.rows;
  return batch * s.mp * s.kp + swizzle_offset(r, c, s.kp);
}

// Zero the swizzled padding of [batches] x [mp, kp] scales whose unpadded part is
// [rows, cols] (the unpadded bytes are written by the codec itself). The rows rows..mp-1
// all lie in the last 128-row tile, where the 4 scales of one row and column group are
// one aligned 32-bit word: those are zeroed as words; the columns cols..kp-1 of the
// rows < rows (at most 3 per row) as bytes. Grid-stride over the whole grid; index math
// in I (uint32_t when the counts allow: this runs after the codec, on the critical path
// of small shapes).
template <typename I>
__host__ __device__ __forceinline__ void write_scale_padding_impl(
    uint8_t* __restrict__ scales, I batches, I rows, I cols, I mp, I kp, I start, I stride) {
  zero_swizzled_row_padding<I>(scales, batches, rows, mp, kp, start, stride);
  const I side_w = kp - cols;  // 0..3
  const I bytes_per_batch = rows * side_w;
  const I n_bytes = batches * bytes_per_batch;
  for (I i = start; i < n_bytes; i += stride) {
    const I batch = i / bytes_per_batch;
    const I q = i - batch * bytes_per_batch;
    const I r = q / side_w;
    const I c = cols + (q - r * side_w);
    scales[int64_t(batch) * int64_t(mp) * int64_t(kp) +
           swizzle_offset(int64_t(r), int64_t(c), int64_t(kp))] = 0;
  }
}

__device__ __forceinline__ void write_scale_padding(uint8_t* __restrict__ scales,
                                                    int64_t batches, int64_t rows,
                                                    int64_t cols, int64_t mp, int64_t kp) {
  const int64_t lim = int64_t(1) << 31;
  if (batches * mp * kp < lim) {
    write_scale_padding_impl<uint32_t>(scales, uint32_t(batches), uint32_t(rows),
                                       uint32_t(cols), uint32_t(mp), uint32_t(kp),
                                       blockIdx.x * blockDim.x + threadIdx.x,
                                       gridDim.x * blockDim.x);
  } else {
    write_scale_padding_impl<uint64_t>(
        scales, uint64_t(batches), uint64_t(rows), uint64_t(cols), uint64_t(mp), uint64_t(kp),
        uint64_t(blockIdx.x) * blockDim.x + threadIdx.x, uint64_t(gridDim.x) * blockDim.x);
  }
}

// E8M0 byte of a block from the integer max of abs_bits over it (docs/spec.md sec. 3):
// NaN/inf anywhere -> 255; else rceil/floor on the bits (amax 0 -> 0).
template <bool E2M1, MxRounding R>
__device__ __forceinline__ uint32_t block_scale(uint32_t amax_bits) {
  const uint32_t b = e8m0_scale<R>(amax_bits < kInfBits ? amax_bits : 0u, ElemFormat<E2M1>::kMax,
                                   ElemFormat<E2M1>::kEmax);
  return amax_bits < kInfBits ? b : kNanByte;
}

// N elements -> their bytes as little-endian 32-bit words: y = RN(x * mul), then E4M3
// (satfinite RNE; N bytes, N/4 words) or E2M1 (N/2 bytes; element 2i in the low nibble).
// For E2M1 with N = 4 the 2 bytes sit in the low half of w[0].
template <bool E2M1, int N>
struct Encoded {
  static constexpr int kBytes = E2M1 ? N / 2 : N;
  static constexpr int kWords = (kBytes + 3) / 4;
  uint32_t w[kWords];
};

template <bool E2M1, int N>
__device__ __forceinline__ Encoded<E2M1, N> encode_elems(const float* f, float mul, bool zero) {
  Encoded<E2M1, N> e;
  if constexpr (!E2M1) {
    static_assert(N % 4 == 0, "E4M3 path packs 4 elements per word");
#pragma unroll
    for (int i = 0; i < N / 4; ++i) {
      const uint32_t lo = e4m3x2_encode(__fmul_rn(f[4 * i], mul), __fmul_rn(f[4 * i + 1], mul));
      const uint32_t hi =
          e4m3x2_encode(__fmul_rn(f[4 * i + 2], mul), __fmul_rn(f[4 * i + 3], mul));
      e.w[i] = (lo & 0xFFFFu) | (hi << 16);
    }
  } else {
#pragma unroll
    for (int i = 0; i < e.kWords; ++i) e.w[i] = 0;
#pragma unroll
    for (int j = 0; j < N; ++j)
      e.w[j / 8] |= e2m1_encode(__fmul_rn(f[j], mul)) << (4 * (j % 8));
  }
  if (zero) {  // non-finite block: element bytes 0
#pragma unroll
    for (int i = 0; i < e.kWords; ++i) e.w[i] = 0;
  }
  return e;
}

// Store kBytes (2, 4, 8 or 16; p aligned to it) from the words.
template <int kBytes>
__device__ __forceinline__ void store_bytes(uint8_t* p, const uint32_t* w) {
  if constexpr (kBytes == 16) {
    *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
  } else if constexpr (kBytes == 8) {
    *reinterpret_cast<uint2*>(p) = make_uint2(w[0], w[1]);
  } else if constexpr (kBytes == 4) {
    *reinterpret_cast<uint32_t*>(p) = w[0];
  } else {
    static_assert(kBytes == 2, "unsupported store width");
    *reinterpret_cast<uint16_t*>(p) = static_cast<uint16_t>(w[0]);
  }
}

// Load kBytes (2, 4 or 8; p aligned to it) as little-endian words (streaming: read once).
template <int kBytes>
__device__ __forceinline__ uint2 load_bytes(const uint8_t* p) {
  if constexpr (kBytes == 8) {
    return __ldcs(reinterpret_cast<const uint2*>(p));
  } else if constexpr (kBytes == 4) {
    return make_uint2(__ldcs(reinterpret_cast<const unsigned int*>(p)), 0u);
  } else {
    static_assert(kBytes == 2, "unsupported load width");
    return make_uint2(__ldcs(reinterpret_cast<const unsigned short*>(p)), 0u);
  }
}

// ---------------------------------------------------------------------------------------
// Rowwise quantize (axis -1). x: contiguous [batches * rows, K], 16-byte aligned.
// ---------------------------------------------------------------------------------------

struct RowwiseParams {
  int64_t n_vec;    // 16-byte vectors in x (numel / kPerVec)
  int64_t batches;  // for the padding of swizzled scales
  ScaleLayout layout;
};

// Independent 16-byte vectors in flight per thread of the rowwise kernel (its U): 4 by
// default; mx/ops.cu launches U = 2 for MXFP8 with linear scales and 16-bit x.
constexpr int kRowwiseUnroll = 4;

// The bits of the largest |f| over the kLanes adjacent, aligned lanes that hold one MX block
// (every lane of the warp must call it).
template <int kLanes, int V>
__device__ __forceinline__ uint32_t lanes_amax(const float (&f)[V]) {
  uint32_t amax = 0;
#pragma unroll
  for (int j = 0; j < V; ++j) amax = max(amax, abs_bits(f[j]));
#pragma unroll
  for (int o = 1; o < kLanes; o <<= 1) amax = max(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, o));
  return amax;
}

// One 16-byte vector of x as fp32 f[V], part of an MX block spread over kBlock / V adjacent,
// aligned lanes (4 for bf16 / fp16, 8 for fp32): the block's amax over those lanes (every
// lane of the warp must call), its scale byte b and this vector's element codes.
template <bool E2M1, MxRounding R, int V>
__device__ __forceinline__ Encoded<E2M1, V> quantize_lane_vector(const float (&f)[V],
                                                                 uint32_t& b) {
  b = block_scale<E2M1, R>(lanes_amax<kBlock / V>(f));
  return encode_elems<E2M1, V>(f, e8m0_inverse(b), b == kNanByte);
}

// The U vectors raw[i] = vector base + i * kThreads of the rowwise kernel
// (zeros past n): amax over each MX block's lanes, scale byte, codes, stores. kSwizzle ==
// p.layout.swizzle: the kernel branches once per iteration into one of two copies, so the
// linear copy stores its scales with a predicated store and no layout branch. (NVVM used to
// unswitch the loop on the runtime flag by itself and stopped after small changes elsewhere:
// a divergent branch per vector, MXFP4 quantize +3 % on H200.)
template <typename T, bool E2M1, MxRounding R, bool kSwizzle, int U>
__device__ __forceinline__ void rowwise_quantize_vectors(const uint4 (&raw)[U],
                                                         int64_t base, int64_t n,
                                                         uint8_t* __restrict__ data,
                                                         uint8_t* __restrict__ scales,
                                                         const ScaleLayout& layout) {
  constexpr int V = Elem<T>::kPerVec;  // elements per 16-byte vector
  constexpr int kLanes = kBlock / V;   // lanes per MX block: 4 (bf16/fp16) or 8 (fp32)
  constexpr int kOut = E2M1 ? V / 2 : V;
#pragma unroll
  for (int i = 0; i < U; ++i) {
    const int64_t v = base + i * kThreads;
    float f[V];
    unpack_vec<T>(raw[i], f);
    // The kLanes lanes of a block are adjacent and aligned (kThreads * U and
    // the vector count per block are multiples of kLanes); all 32 lanes take part.
    uint32_t b;
    const auto e = quantize_lane_vector<E2M1, R>(f, b);
    if (v < n) {
      store_bytes<kOut>(data + v * kOut, e.w);
      if ((threadIdx.x & (kLanes - 1)) == 0) {
        const int64_t blk = static_cast<int64_t>(static_cast<uint64_t>(v) / kLanes);
        scales[kSwizzle ? scale_offset(blk, layout) : blk] = b;
      }
    }
  }
}

// Minimum CTAs per SM of the rowwise kernel. Up to sm_90: 6 (48 warps, at most 40 registers),
// what the single-copy loop had; the two copies would take up to 44 (sm_90) or 47 (sm_80)
// registers in some instantiations and lose a CTA (all 12 are spill-free at 40 on sm_80 and
// sm_90). Blackwell: the compiler's choice (sm_100 / sm_120 builds use 48-69 registers and
// would spill under that cap).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 1000
constexpr int kRowwiseMinBlocks = 6;
#else
constexpr int kRowwiseMinBlocks = 1;
#endif

template <typename T, bool E2M1, MxRounding R, int U = kRowwiseUnroll>
__global__ void __launch_bounds__(kThreads, kRowwiseMinBlocks)
    mx_quantize_rowwise_kernel(const T* __restrict__ x, uint8_t* __restrict__ data,
                               uint8_t* __restrict__ scales, RowwiseParams p) {
  constexpr int V = Elem<T>::kPerVec;
  const int64_t n = p.n_vec;
  const int64_t step = int64_t(gridDim.x) * kThreads * U;
  for (int64_t base = int64_t(blockIdx.x) * kThreads * U + threadIdx.x; base - threadIdx.x < n;
       base += step) {
    uint4 raw[U];
#pragma unroll
    for (int i = 0; i < U; ++i) {
      const int64_t v = base + i * kThreads;
      raw[i] = v < n ? load_stream(x + v * V) : make_uint4(0u, 0u, 0u, 0u);
    }
    if (p.layout.swizzle) {
      rowwise_quantize_vectors<T, E2M1, R, true, U>(raw, base, n, data, scales, p.layout);
    } else {
      rowwise_quantize_vectors<T, E2M1, R, false, U>(raw, base, n, data, scales, p.layout);
    }
  }
  if (p.layout.swizzle) {
    write_scale_padding(scales, p.batches, p.layout.rows, p.layout.kb, p.layout.mp,
                        p.layout.kp);
  }
}

// ---------------------------------------------------------------------------------------
// Columnwise quantize (axis -2). x: contiguous [batches, m, k], m % 32 == 0. The result is
// that of the rowwise cast of x^T: data [batches, k, m] (E4M3) or [batches, k, m / 2]
// (E2M1), scales [batches, k, m / 32] or swizzled [batches, roundup(k, 128), roundup(m/32, 4)].
// ---------------------------------------------------------------------------------------

struct ColwiseParams {
  int64_t batches, m, k;
  int64_t tiles_m, tiles_k;
  int64_t mp, kp;  // swizzled scale dims (rows = k, cols = m / 32)
  bool swizzle;
  bool vec;        // k * sizeof(T) % 16 == 0 and x 16-byte aligned: 16-byte tile loads
};

constexpr int kColTileRows = 128;  // 4 MX blocks along m
constexpr int kColTileBytes = 128; // bytes of each x row in a tile

// Shared-memory tile: fp32 [kColTileRows][TK], the 16-byte chunks (4 floats) of row r
// XOR-permuted by h = (r / 16) % 8. Reading one column down 16 rows, the 8 lanes that
// differ in h (and 4 adjacent columns) then hit 32 distinct banks; the row-wise 16-byte
// stores of the load phase stay conflict-free too.
template <int TK>
__device__ __forceinline__ int tile_word(int row, int col) {
  return row * TK + (((col >> 2) ^ ((row >> 4) & 7)) << 2) + (col & 3);
}

// The tile geometry of the columnwise kernels for input type T: TM rows x TK columns of x
// (128 bytes of each row), read as kLoads 16-byte vectors per thread; vector
// i * kThreads + tid is tile row idx / kVecPerRow, columns (idx % kVecPerRow) * V...
template <typename T>
struct ColTile {
  static constexpr int TM = kColTileRows;
  static constexpr int TK = kColTileBytes / sizeof(T);  // 64 (bf16/fp16) or 32 (fp32) columns
  static constexpr int V = Elem<T>::kPerVec;
  static constexpr int kVecPerRow = TK / V;              // 8
  static constexpr int kLoads = TM * kVecPerRow / kThreads;  // 4 vectors per thread
  static_assert(kVecPerRow == 8 && kLoads * kThreads == TM * kVecPerRow, "tile shape");
};

// Where tile t lies in x: batch, first row m0 and column k0, and how many of its rows
// (a multiple of 32) and columns are inside x.
struct ColTileCoord {
  int64_t batch, m0, k0;
  int rows_valid, cols_valid;
};

// The tile helpers below take any parameter struct P with the fields batches, m, k, tiles_m,
// tiles_k of ColwiseParams (tiles_m, tiles_k counting ColTile<T> tiles): ColwiseParams here,
// train::TileParams in the NVFP4 training kernel train/colwise_smem.cuh.

// rows_valid, cols_valid of the tile at c.m0, c.k0.
template <typename T, typename P>
__device__ __forceinline__ void col_tile_extent(const P& p, ColTileCoord& c) {
  c.rows_valid = static_cast<int>(p.m - c.m0 < ColTile<T>::TM ? p.m - c.m0 : ColTile<T>::TM);
  c.cols_valid = static_cast<int>(p.k - c.k0 < ColTile<T>::TK ? p.k - c.k0 : ColTile<T>::TK);
}

// Tile t, numbered along k fastest, then m, then the batch; the divisions in I (uint32_t
// where the tile count allows: fewer registers).
template <typename T, typename P, typename I = int64_t>
__device__ __forceinline__ ColTileCoord col_tile_coord(const P& p, I t) {
  ColTileCoord c;
  const I tiles_k = static_cast<I>(p.tiles_k), tiles_m = static_cast<I>(p.tiles_m);
  const I t2 = t / tiles_k;
  const I batch = t2 / tiles_m;
  c.k0 = int64_t(t - t2 * tiles_k) * ColTile<T>::TK;
  c.batch = batch;
  c.m0 = int64_t(t2 - batch * tiles_m) * ColTile<T>::TM;
  col_tile_extent<T>(p, c);
  return c;
}

// This thread's kLoads 16-byte vectors of tile c (p.vec: rows 16-byte aligned): fn(i, src,
// row, col, ok) for vector i, row `row` of the tile (idx / kVecPerRow, idx = i * kThreads +
// tid), columns col.., at src + row * p.k + col in x (src: the tile's first element); ok:
// inside x (not to be read otherwise).
template <typename T, typename P, typename F>
__device__ __forceinline__ void col_tile_vectors(const T* __restrict__ x, const P& p,
                                                 const ColTileCoord& c, F fn) {
  using G = ColTile<T>;
  const T* src = x + (c.batch * p.m + c.m0) * p.k + c.k0;
#pragma unroll
  for (int i = 0; i < G::kLoads; ++i) {
    const int idx = i * kThreads + threadIdx.x;
    const int row = idx / G::kVecPerRow, col = (idx % G::kVecPerRow) * G::V;
    fn(i, src, row, col, row < c.rows_valid && col < c.cols_valid);
  }
}

// Issue this thread's kLoads 16-byte loads of tile c into registers; zeros outside x.
template <typename T, typename P>
__device__ __forceinline__ void load_col_tile(const T* __restrict__ x, const P& p,
                                              const ColTileCoord& c,
                                              uint4 (&raw)[ColTile<T>::kLoads]) {
  col_tile_vectors<T>(x, p, c, [&](int i, const T* src, int row, int col, bool ok) {
    raw[i] = ok ? load_stream(src + int64_t(row) * p.k + col) : make_uint4(0u, 0u, 0u, 0u);
  });
}

// The same vectors copied asynchronously (cp.async, one commit group) into this thread's
// slots of a shared staging buffer: vector i to byte s_raw + 16 (i * kThreads + tid); zeros
// outside x. No registers hold them in flight; cp_async_wait<0>() before reading them.
template <typename T, typename P>
__device__ __forceinline__ void load_col_tile_async(const T* __restrict__ x, const P& p,
                                                    const ColTileCoord& c, uint32_t s_raw) {
  col_tile_vectors<T>(x, p, c, [&](int i, const T* src, int row, int col, bool ok) {
    cp_async16(s_raw + 16u * (i * kThreads + threadIdx.x),
               ok ? src + int64_t(row) * p.k + col : x, ok);
  });
  cp_async_commit();
}

// Vector q (columns q * V..) of tile row `row`, as fp32 f[V], into the shared tile.
template <typename T>
__device__ __forceinline__ void store_tile_vector(float* tile, int row, int q,
                                                  const float (&f)[Elem<T>::kPerVec]) {
  constexpr int TK = ColTile<T>::TK;
  if constexpr (Elem<T>::kPerVec == 4) {
    *reinterpret_cast<float4*>(&tile[tile_word<TK>(row, q * 4)]) =
        make_float4(f[0], f[1], f[2], f[3]);
  } else {
    // Two 16-byte chunks; lanes q >= 4 store their upper chunk first so that the
    // 8 lanes of a store phase hit 8 distinct 4-bank groups.
    const int first = (q & 4) ? 1 : 0;
    const float4 lo = make_float4(f[0], f[1], f[2], f[3]);
    const float4 hi = make_float4(f[4], f[5], f[6], f[7]);
    *reinterpret_cast<float4*>(&tile[tile_word<TK>(row, q * 8 + 4 * first)]) = first ? hi : lo;
    *reinterpret_cast<float4*>(&tile[tile_word<TK>(row, q * 8 + 4 * (1 - first))]) =
        first ? lo : hi;
  }
}

// This thread's kLoads vectors of a tile (load_col_tile) as fp32 into the shared tile.
template <typename T>
__device__ __forceinline__ void store_col_tile(float* tile,
                                               const uint4 (&raw)[ColTile<T>::kLoads]) {
  using G = ColTile<T>;
#pragma unroll
  for (int i = 0; i < G::kLoads; ++i) {
    const int idx = i * kThreads + threadIdx.x;
    float f[G::V];
    unpack_vec<T>(raw[i], f);
    store_tile_vector<T>(tile, idx / G::kVecPerRow, idx % G::kVecPerRow, f);
  }
}

// Rows 16 h .. 16 h + 15 of column kk of the shared tile (TK columns) into f: one 16-row
// segment, whose rows all have XOR key h (tile_word).
template <int TK>
__device__ __forceinline__ void read_tile_column(const float* tile, int h, int kk,
                                                 float (&f)[16]) {
  const float* col = tile + 16 * h * TK + ((((kk >> 2) ^ h) << 2) | (kk & 3));
#pragma unroll
  for (int s = 0; s < 16; ++s) f[s] = col[s * TK];
}

// The columnwise quantization of the shared tile (tile c of x): each thread walks 16 rows of
// one column (half an MX block; the other half is the neighbouring lane) and writes 16
// output bytes (E4M3) or 8 (E2M1) of output row k0 + column, and the scale byte.
template <typename T, bool E2M1, MxRounding R>
__device__ __forceinline__ void colwise_quantize_tile(const float* tile, const ColwiseParams& p,
                                                      const ColTileCoord& c,
                                                      uint8_t* __restrict__ data,
                                                      uint8_t* __restrict__ scales) {
  constexpr int TM = ColTile<T>::TM;
  constexpr int TK = ColTile<T>::TK;
  constexpr int kPairs = TK * (TM / 16);  // (column, 16-row half block) pairs
  constexpr int kOut = E2M1 ? 8 : 16;     // output bytes per pair
  static_assert(kPairs % kThreads == 0, "pairs per thread");
#pragma unroll 1
  for (int it = 0; it < kPairs / kThreads; ++it) {
    const int pi = it * kThreads + threadIdx.x;
    const int h = pi & 7;   // 16-row half block: rows 16h..16h+15 of the tile
    const int kk = pi >> 3; // tile column = output row k0 + kk
    float f[16];
    read_tile_column<TK>(tile, h, kk, f);
    uint32_t amax = 0;
#pragma unroll
    for (int s = 0; s < 16; ++s) amax = max(amax, abs_bits(f[s]));
    amax = max(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, 1));  // the other half block
    const uint32_t b = block_scale<E2M1, R>(amax);
    const auto e = encode_elems<E2M1, 16>(f, e8m0_inverse(b), b == kNanByte);
    if (kk < c.cols_valid && 16 * h < c.rows_valid) {
      const int64_t orow = c.batch * p.k + c.k0 + kk;
      const int64_t ocol = c.m0 + 16 * h;  // element index along the output row
      store_bytes<kOut>(data + (E2M1 ? orow * (p.m / 2) + ocol / 2 : orow * p.m + ocol), e.w);
      if ((h & 1) == 0) {
        const int64_t sc = (c.m0 >> 5) + (h >> 1);
        scales[p.swizzle ? c.batch * p.mp * p.kp + swizzle_offset(c.k0 + kk, sc, p.kp)
                         : orow * (p.m / kBlock) + sc] = b;
      }
    }
  }
}

template <typename T, bool E2M1, MxRounding R>
__global__ void __launch_bounds__(kThreads, 4)
    mx_quantize_colwise_kernel(const T* __restrict__ x, uint8_t* __restrict__ data,
                               uint8_t* __restrict__ scales, ColwiseParams p) {
  using G = ColTile<T>;
  constexpr int TM = G::TM, TK = G::TK;
  __shared__ __align__(16) float tile[TM * TK];

  const int tid = threadIdx.x;
  const int64_t n_tiles = p.batches * p.tiles_m * p.tiles_k;
  for (int64_t t = blockIdx.x; t < n_tiles; t += gridDim.x) {
    const ColTileCoord c = col_tile_coord<T>(p, t);

    if (p.vec) {
      uint4 raw[G::kLoads];
      load_col_tile<T>(x, p, c, raw);
      store_col_tile<T>(tile, raw);
    } else {
      // Unaligned rows (k * sizeof(T) not a multiple of 16): element loads, still
      // coalesced along the rows. 8 loads in flight per thread.
      const T* src = x + (c.batch * p.m + c.m0) * p.k + c.k0;
      constexpr int kElems = TM * TK / kThreads;
#pragma unroll 1
      for (int i0 = 0; i0 < kElems; i0 += 8) {
        float f[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const int e = (i0 + j) * kThreads + tid;
          const int row = e / TK, col = e % TK;
          f[j] = (row < c.rows_valid && col < c.cols_valid)
                     ? Elem<T>::to_float(src[int64_t(row) * p.k + col])
                     : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const int e = (i0 + j) * kThreads + tid;
          tile[tile_word<TK>(e / TK, e % TK)] = f[j];
        }
      }
    }
    __syncthreads();
    colwise_quantize_tile<T, E2M1, R>(tile, p, c, data, scales);
    __syncthreads();  // the next tile overwrites the shared memory
  }
  if (p.swizzle) write_scale_padding(scales, p.batches, p.k, p.m / kBlock, p.mp, p.kp);
}

// ---------------------------------------------------------------------------------------
// Dequantize. data: contiguous [batches * rows, K] E4M3 bytes or [.., K / 2] packed E2M1.
// out = elem * 2^(b - 127) in fp32 (exact), one RNE cast to O. b = 255 gives NaN.
// ---------------------------------------------------------------------------------------

struct DequantParams {
  int64_t n_units;  // 16-byte output vectors (numel / kPerVec of O)
  ScaleLayout layout;
};

template <typename O, bool E2M1>
__global__ void __launch_bounds__(kThreads)
    mx_dequantize_kernel(const uint8_t* __restrict__ data, const uint8_t* __restrict__ scales,
                         O* __restrict__ out, DequantParams p) {
  constexpr int V = Elem<O>::kPerVec;  // outputs per unit: 8 (bf16/fp16) or 4 (fp32)
  constexpr int kIn = E2M1 ? V / 2 : V;
  constexpr int kUnitsPerBlock = kBlock / V;
  constexpr int U = 4;
  const int64_t n = p.n_units;
  const int64_t step = int64_t(gridDim.x) * kThreads * U;
  for (int64_t base = int64_t(blockIdx.x) * kThreads * U + threadIdx.x; base - threadIdx.x < n;
       base += step) {
    uint2 raw[U];
    uint32_t sb[U];
#pragma unroll
    for (int i = 0; i < U; ++i) {
      const int64_t u = base + i * kThreads;
      if (u < n) {
        raw[i] = load_bytes<kIn>(data + u * kIn);
        const int64_t blk = static_cast<int64_t>(static_cast<uint64_t>(u) / kUnitsPerBlock);
        sb[i] = scales[scale_offset(blk, p.layout)];
      } else {
        raw[i] = make_uint2(0u, 0u);
        sb[i] = 0u;
      }
    }
#pragma unroll
    for (int i = 0; i < U; ++i) {
      const int64_t u = base + i * kThreads;
      const float s = e8m0_decode(sb[i]);
      float f[V];
      if constexpr (E2M1) {
#pragma unroll
        for (int j = 0; j < V; ++j)
          f[j] = __fmul_rn(e2m1_decode((raw[i].x >> (4 * j)) & 0xFu), s);
      } else {
#pragma unroll
        for (int j = 0; j < V / 2; ++j) {
          const uint32_t word = j < 2 ? raw[i].x : raw[i].y;
          const float2 v = e4m3x2_decode((word >> (16 * (j % 2))) & 0xFFFFu);
          f[2 * j] = __fmul_rn(v.x, s);
          f[2 * j + 1] = __fmul_rn(v.y, s);
        }
      }
      if (u < n) *reinterpret_cast<uint4*>(out + u * V) = pack_vec<O>(f);
    }
  }
}

}  // namespace mx
}  // namespace nvfp4
