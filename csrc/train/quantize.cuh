// The NVFP4 training quantize kernel (docs/spec.md sec. 8.1-8.4): train_quantize (rowwise or
// columnwise) and train_quantize_rowcol (both from one read of x), with 16x16-tile scales,
// round to nearest or Philox stochastic rounding and the 16x16 random Hadamard transform
// applied in registers. Torch-free device code; the launchers are in train/ops.cu.
//
// Work layout: a CTA tile is 64 rows x 64 columns of one batch of x ([B, M, K], contiguous),
// read once with coalesced 16-byte loads (element loads when a row of x is not a multiple of
// 16 bytes) into shared memory as fp32, zeros outside x; CTAs loop over tiles, the loads of
// the next tile issued before the work on the current one. With stochastic rounding the tile's
// Philox words (one counter per 4 consecutive elements of x in row-major order, whatever the
// axis) are generated next to it. Each of the 256 threads then owns one block of 16 of each
// operand: the rowwise operand (x, blocks along K) takes row 16 sr + j, columns 16 sc..+15,
// the columnwise one (x^T, blocks along M) column 16 sc + j, rows 16 sr..+15, with
// (sr, sc) = the 16x16 sub-tile tid / 16 and j = tid % 16. The 16 lanes of a sub-tile hold
// its 16 blocks, so a 2-D scale is 4 shuffles away. A thread transforms its block (Hadamard),
// takes its amax, computes the scale byte and the multiplier (nvfp4/block.h) and writes 8
// bytes of codes and its scale byte. The same kernel with kAmaxOnly computes the amax of each
// (transformed) operand for a global scale the op computes itself.
//
// kDepth (a template argument) sets how many tiles of loads a CTA keeps in flight while it
// works on one: 1 is the kernel described above, 2 a ring of two register buffers (twice
// the bytes in flight per SM, at 80 registers, 3 CTAs per SM, for 16-bit x).
//
// Kernel variants (all give the same bits), chosen per call by the environment variable
// NVFP4_OPS_TRAIN_KERNEL, read in train/ops.cu, for A/B measurements on the GPU:
//   unset or "auto"  the fastest of each case measured on an H200: the direct kernels where
//                    they apply (train/rowwise.cuh for a quantize pass of the rowwise
//                    operand alone, train/colwise.cuh for one of the columnwise operand,
//                    alone (axis=-2) or with the rowwise one (train_quantize_rowcol), 16-bit
//                    x), with stochastic rounding too for the columnwise operand alone
//                    (train_colwise_sr_kernel), and the tile kernel at kDepth 1 for the rest
//                    (stochastic rowcol, fp32 x, the amax pass of a computed global scale);
//                    below sm_100, train/colwise_smem.cuh's staged kernel for a quantize
//                    pass of the columnwise operand alone with round to nearest (any x
//                    dtype, any transform or scale layout), and train/rowwise.cuh's wide
//                    kernel for one of the untransformed rowwise operand alone of 16-bit x
//                    with round to nearest (2-D scales). On sm_100 and later (where ptxas
//                    spills in the direct kernels) "auto" is "tile".
//   "tile"           the tile kernel at kDepth 1 for everything: the kernel before the variants.
//   "tile2"          the tile kernel at kDepth 2 for everything.
//   "row"            the direct rowwise kernel where it applies, the tile kernel at kDepth 1
//                    for the rest.
//   "direct"         both direct kernels where they apply, the tile kernel at kDepth 1 for
//                    the rest.
//   "sr"             the direct kernels, train/colwise.cuh's train_colwise_sr_kernel for
//                    stochastic rounding (columnwise alone or rowcol, 16-bit x, any
//                    transform), the tile kernel at kDepth 2 for the rest.
//   "smem"           "auto", with train/colwise_smem.cuh's train_colwise_smem_kernel (x staged
//                    through shared memory in the MXFP8 columnwise kernel's tiles) for a
//                    quantize pass of the columnwise operand alone with round to nearest,
//                    any x dtype, on every architecture ("auto" takes it below sm_100).
// Any other value is an error. The direct kernels need 16-byte loads of x (x 16-byte aligned,
// K * sizeof(x) % 16 == 0: always true for axis=-1) and fewer than 2^31 warp items;
// otherwise the tile kernel runs.
#pragma once

#include <cstdint>

#include "core/bits.h"
#include "core/e2m1.h"
#include "core/swizzle.h"
#include "core/vec.cuh"
#include "mx/quantize.cuh"  // mx::write_scale_padding
#include "nvfp4/block.h"
#include "train/rng.h"

namespace nvfp4 {
namespace train {

constexpr int kTile = 64;                    // rows and columns of x per CTA tile
constexpr int kPitch = kTile + 4;            // shared row pitch in words (conflict-free reads)
constexpr int kThreads = 256;                // one block of 16 per thread, operand and tile
constexpr int kCountersPerRow = kTile / 4 + 1;  // Philox counters a tile row can touch
constexpr unsigned kFull = 0xFFFFFFFFu;

// One output operand: 0 = rowwise (x, blocks along K), 1 = columnwise (x^T, blocks along M).
struct Operand {
  uint8_t* packed = nullptr;  // [B, rows, cols / 2]; null: not produced
  uint8_t* scales = nullptr;  // [B, rows, cols / 16] or swizzled [B, mp, kp]
  const float* gs = nullptr;  // encode global scale on the device: [1] or [B]
  bool gs_per_batch = false;
  const float* signs = nullptr;  // Hadamard signs [16] on the device; null: no transform
  uint32_t* amax = nullptr;      // kAmaxOnly: the running max of abs_bits (zeroed before)
  int64_t rows = 0, kb = 0, mp = 0, kp = 0;  // operand rows, blocks per row, swizzled dims
  bool active = false;
};

struct TileParams {
  const void* x;  // contiguous [batches, m, k]
  int64_t batches, m, k, tiles_m, tiles_k;
  bool vec;       // k * sizeof(T) % 16 == 0 and x 16-byte aligned: 16-byte loads
  bool block_2d, swizzle, stochastic;
  const int64_t* seed;    // stochastic rounding: int64 [1] each, read on the device
  const int64_t* offset;
  Operand op[2];
};

// The warp items of the direct kernels (train/rowwise.cuh, train/colwise.cuh): items =
// batches * outer * inner, item i = (b * outer + o) * inner + n; the launcher keeps
// items < 2^31 (else the tile kernel runs), so 32-bit division by multiplication works.
struct ItemGrid {
  uint32_t items, outer, inner;
  FastDiv div_outer, div_inner;

  __device__ __forceinline__ void split(uint32_t item, uint32_t& b, uint32_t& o,
                                        uint32_t& n) const {
    const uint32_t rest = div_inner.div(item);
    n = item - rest * inner;
    b = div_outer.div(rest);
    o = rest - b * outer;
  }
};

// The Hadamard signs of operand o into shared memory (1 where o has no transform), then a
// barrier: the direct kernels' first step.
__device__ __forceinline__ void load_signs(const Operand& o, float* s_signs) {
  if (threadIdx.x < 16) {
    s_signs[threadIdx.x] = o.signs != nullptr ? __ldg(o.signs + threadIdx.x) : 1.0f;
  }
  __syncthreads();
}

// Swizzled scales: the padding of every active operand is zeroed (the threads of the whole
// grid share the work; every kernel of this folder ends with it).
__device__ __forceinline__ void write_operand_padding(const TileParams& p) {
  if (!p.swizzle) return;
#pragma unroll
  for (int d = 0; d < 2; ++d) {
    const Operand& o = p.op[d];
    if (o.active) mx::write_scale_padding(o.scales, p.batches, o.rows, o.kb, o.mp, o.kp);
  }
}

// Where a tile lies: batch b, first row m0 and column k0 of x, and how many of its rows and
// columns are inside x.
struct TileCoord {
  int64_t b, m0, k0;
  int rows_valid, cols_valid;
};

__device__ __forceinline__ TileCoord tile_coord(const TileParams& p, int64_t t) {
  const int64_t t2 = t / p.tiles_k;
  TileCoord c;
  c.k0 = (t - t2 * p.tiles_k) * kTile;
  c.b = t2 / p.tiles_m;
  c.m0 = (t2 - c.b * p.tiles_m) * kTile;
  c.rows_valid = static_cast<int>(p.m - c.m0 < kTile ? p.m - c.m0 : kTile);
  c.cols_valid = static_cast<int>(p.k - c.k0 < kTile ? p.k - c.k0 : kTile);
  return c;
}

// The 16-byte chunks of a tile this thread loads (p.vec only): chunk q = u * kThreads + tid
// is row q / kChunksPerRow, columns (q % kChunksPerRow) * kPerVec.. of the tile.
template <typename T>
struct TileChunks {
  static constexpr int kV = Elem<T>::kPerVec;
  static constexpr int kChunksPerRow = kTile / kV;
  static constexpr int kLoads = kTile * kChunksPerRow / kThreads;
  uint4 raw[kLoads];
};

// Issue the loads of tile c (zeros outside x); the caller stores them once the previous tile
// is consumed, so the loads of the next tile overlap the work on this one.
template <typename T>
__device__ __forceinline__ void load_chunks(const TileParams& p, const TileCoord& c,
                                            TileChunks<T>& ch) {
  using C = TileChunks<T>;
  const T* x = static_cast<const T*>(p.x);
#pragma unroll
  for (int u = 0; u < C::kLoads; ++u) {
    const int q = u * kThreads + threadIdx.x;
    const int r = q / C::kChunksPerRow, col = (q % C::kChunksPerRow) * C::kV;
    ch.raw[u] = (r < c.rows_valid && col < c.cols_valid)
                    ? load_stream(x + ((c.b * p.m + c.m0 + r) * p.k + c.k0 + col))
                    : make_uint4(0u, 0u, 0u, 0u);
  }
}

// The tile as fp32 into s[r * kPitch + c]: the chunks loaded by load_chunks (p.vec), or
// element loads (rows of x not a multiple of 16 bytes), zeros outside x.
template <typename T>
__device__ __forceinline__ void store_tile(const TileParams& p, const TileCoord& c,
                                           const TileChunks<T>& ch, float* s) {
  using C = TileChunks<T>;
  const int tid = threadIdx.x;
  if (p.vec) {
#pragma unroll
    for (int u = 0; u < C::kLoads; ++u) {
      const int q = u * kThreads + tid;
      const int r = q / C::kChunksPerRow, col = (q % C::kChunksPerRow) * C::kV;
      float f[C::kV];
      unpack_vec<T>(ch.raw[u], f);
#pragma unroll
      for (int i = 0; i < C::kV; i += 4) {
        *reinterpret_cast<float4*>(s + r * kPitch + col + i) =
            make_float4(f[i], f[i + 1], f[i + 2], f[i + 3]);
      }
    }
  } else {
    const T* x = static_cast<const T*>(p.x);
    for (int i = tid; i < kTile * kTile; i += kThreads) {
      const int r = i / kTile, col = i % kTile;
      s[r * kPitch + col] = (r < c.rows_valid && col < c.cols_valid)
                                ? Elem<T>::to_float(x[(c.b * p.m + c.m0 + r) * p.k + c.k0 + col])
                                : 0.0f;
    }
  }
}

// The stochastic-rounding word of each element of the tile into w[r * kPitch + c]: element
// e = (b M + m) K + k of x takes word e % 4 of the Philox counter offset + e / 4. A tile row
// touches at most kCountersPerRow counters; each is evaluated once per tile.
__device__ __forceinline__ void tile_words(const TileParams& p, const TileCoord& t, uint64_t seed,
                                           uint64_t offset, uint32_t* w) {
  for (int i = threadIdx.x; i < kTile * kCountersPerRow; i += kThreads) {
    const int r = i / kCountersPerRow, slot = i % kCountersPerRow;
    if (r >= t.rows_valid) continue;
    const uint64_t e0 = static_cast<uint64_t>((t.b * p.m + t.m0 + r) * p.k + t.k0);
    const uint64_t e_end = e0 + static_cast<uint64_t>(t.cols_valid);
    const uint64_t c = (e0 >> 2) + static_cast<uint64_t>(slot);
    if (4 * c >= e_end) continue;
    const Philox4 words = sr_words(offset + c, seed);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint64_t e = 4 * c + j;
      if (e >= e0 && e < e_end) w[r * kPitch + static_cast<int>(e - e0)] = words.w[j];
    }
  }
}

// Block v Hadamard-transformed in place when hadamard (signs: the 16 signs); returns the bits
// of its amax (the direct columnwise kernels' block, before its scale).
__device__ __forceinline__ uint32_t transformed_amax(float (&v)[16], bool hadamard,
                                                     const float* signs) {
  if (hadamard) hadamard16(v, signs);
  uint32_t amax = 0;
#pragma unroll
  for (int i = 0; i < 16; ++i) amax = max(amax, abs_bits(v[i]));
  return amax;
}

// The scale byte sf (returned through sf) of a block from the bits of its amax (of the 16x16
// tile for 2-D scales) and the encode global scale gs, and its element multiplier (NaN for
// the scale 0x7F: the block's codes are then 0, which the caller sees to).
__device__ __forceinline__ float block_multiplier(uint32_t amax, float gs, uint32_t& sf) {
  sf = nvfp4_block_scale(amax, gs);
  return nvfp4_osc(sf, rn_rcp(gs));
}

// The 4-bit code of element v with multiplier osc (not NaN): round to nearest, or stochastic
// rounding with word (docs/spec.md sec. 8.3).
__device__ __forceinline__ uint32_t encode_elem(float v, float osc, bool stochastic,
                                                uint32_t word) {
  return stochastic ? e2m1_encode_stochastic(v, osc, word) : e2m1_encode_nearest(v, osc);
}

// The scale byte sf (returned through sf) and the N codes of one block v (element i in bits
// 4i..4i+3 of .x for i < 8, of .y above) from the bits of its amax (of the 16x16 tile for
// 2-D scales) and the encode global scale gs. word(i): the stochastic-rounding word of
// element i, called only when stochastic. N = 16: a whole block; N = 8: the half of a block
// that one lane holds (train/colwise.cuh's rowwise operand; .y is 0). Shared by every kernel
// of this folder.
template <int N, typename Word>
__device__ __forceinline__ uint2 encode_block(const float (&v)[N], uint32_t amax, float gs,
                                              bool stochastic, Word word, uint32_t& sf) {
  static_assert(N == 8 || N == 16, "a block or half of one");
  const float osc = block_multiplier(amax, gs, sf);
  uint32_t lo = 0, hi = 0;
  if (osc != osc) return make_uint2(0u, 0u);  // a NaN multiplier (scale 0x7F): codes 0
  if (stochastic) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const uint32_t code = e2m1_encode_stochastic(v[i], osc, word(i));
      if (i < 8) {
        lo |= code << (4 * i);
      } else {
        hi |= code << (4 * (i - 8));
      }
    }
  } else {  // (the nibbles are disjoint: + fuses each code's shift into its add)
#pragma unroll
    for (int i = 0; i < N; ++i) {
      if (i < 8) {
        lo += e2m1_encode_nearest_at_nibble(v[i], osc, i);
      } else {
        hi += e2m1_encode_nearest_at_nibble(v[i], osc, i - 8);
      }
    }
  }
  return make_uint2(lo, hi);
}

// This thread's block of operand kCol in the tile: transform, amax, scale, codes, stores.
// Every thread of the CTA calls it (the 2-D scale reduces over the 16 lanes of a sub-tile).
template <bool kCol, bool kAmaxOnly>
__device__ __forceinline__ void operand_block(const TileParams& p, const Operand& o,
                                              const TileCoord& t, const float* s,
                                              const uint32_t* w, const float* signs,
                                              uint32_t& running_amax) {
  const int tid = threadIdx.x;
  const int sub = tid >> 4, j = tid & 15;
  // element 0 of the block at tile row r0, column c0; it runs along c (rowwise) or r.
  const int r0 = kCol ? 16 * (sub >> 2) : 16 * (sub >> 2) + j;
  const int c0 = kCol ? 16 * (sub & 3) + j : 16 * (sub & 3);
  float v[16];
  if constexpr (kCol) {
#pragma unroll
    for (int i = 0; i < 16; ++i) v[i] = s[(r0 + i) * kPitch + c0];
  } else {
#pragma unroll
    for (int i = 0; i < 16; i += 4) {
      const float4 f = *reinterpret_cast<const float4*>(s + r0 * kPitch + c0 + i);
      v[i] = f.x;
      v[i + 1] = f.y;
      v[i + 2] = f.z;
      v[i + 3] = f.w;
    }
  }
  if (o.signs != nullptr) hadamard16(v, signs);
  uint32_t amax = 0;
#pragma unroll
  for (int i = 0; i < 16; ++i) amax = max(amax, abs_bits(v[i]));
  if constexpr (kAmaxOnly) {
    running_amax = max(running_amax, amax);
    return;
  }
  if (p.block_2d) {  // one scale per 16x16 tile: the max over the sub-tile's 16 lanes
#pragma unroll
    for (int d = 1; d < 16; d <<= 1) amax = max(amax, __shfl_xor_sync(kFull, amax, d));
  }
  if (r0 >= t.rows_valid || c0 >= t.cols_valid) return;
  const int64_t b = t.b;
  uint32_t sf;
  const uint2 codes = encode_block(v, amax, __ldg(o.gs + (o.gs_per_batch ? b : 0)), p.stochastic,
                                   [&](int i) {
                                     return kCol ? w[(r0 + i) * kPitch + c0]
                                                 : w[r0 * kPitch + c0 + i];
                                   },
                                   sf);
  // The operand's row and first element along it (x^T for the columnwise one).
  const int64_t row = kCol ? t.k0 + c0 : t.m0 + r0;
  const int64_t col = kCol ? t.m0 + r0 : t.k0 + c0;
  const int64_t cols = 16 * o.kb;
  __stcs(reinterpret_cast<uint2*>(o.packed + ((b * o.rows + row) * cols + col) / 2),
         codes);
  const int64_t cb = col / 16;
  o.scales[p.swizzle ? b * o.mp * o.kp + swizzle_offset(row, cb, o.kp)
                     : (b * o.rows + row) * o.kb + cb] = static_cast<uint8_t>(sf);
}

// kAmaxOnly = false: quantize every active operand of every tile (grid-stride over tiles),
// then zero the swizzled padding. kAmaxOnly = true: atomicMax of the abs_bits of every
// element of each active (transformed) operand into its o.amax.
// kDepth: tiles whose loads are in flight while one is worked on (a ring of kDepth register
// buffers; buffer s holds the CTA's tiles t with (t - blockIdx.x) / gridDim.x = s mod kDepth).
// 1 = the original kernel (8 KB of bf16 loads ahead per CTA); 2 doubles the bytes in flight.
// CTAs per SM by the prefetched bytes per thread (sizeof(T) * kDepth): 4 (64 registers) for
// 16-bit x at depth 1, 3 (80) for fp32 x or depth 2, 2 (128) for fp32 x at depth 2; each the
// most that does not spill (in-flight bytes per SM: 32, 48, 64 KB of x).
template <typename T, bool kAmaxOnly, int kDepth = 1>
__global__ void __launch_bounds__(kThreads, sizeof(T) * kDepth == 2   ? 4
                                            : sizeof(T) * kDepth == 4 ? 3
                                                                      : 2)
    train_quantize_kernel(const TileParams p) {
  static_assert(kDepth >= 1, "at least the next tile in flight");
  __shared__ __align__(16) float s_val[kTile * kPitch];
  __shared__ __align__(16) uint32_t s_words[kAmaxOnly ? 1 : kTile * kPitch];
  __shared__ float s_signs[2][16];
  const int tid = threadIdx.x;
  if (tid < 32) {  // (no dynamic index into the parameter struct: that would copy it)
    const float* sg = tid < 16 ? p.op[0].signs : p.op[1].signs;
    s_signs[tid >> 4][tid & 15] = sg != nullptr ? __ldg(sg + (tid & 15)) : 1.0f;
  }
  uint64_t seed = 0, offset = 0;
  if (!kAmaxOnly && p.stochastic) {
    seed = static_cast<uint64_t>(__ldg(p.seed));
    offset = static_cast<uint64_t>(__ldg(p.offset));
  }
  uint32_t amax[2] = {0u, 0u};
  const int64_t n_tiles = p.batches * p.tiles_m * p.tiles_k;
  int64_t t = blockIdx.x;
  // kDepth 1 keeps the coordinates of the buffered tile (as the kernel before the ring did);
  // deeper rings recompute them from t, which costs fewer registers than keeping kDepth.
  TileCoord kept[kDepth];
  TileChunks<T> chunks[kDepth];
#pragma unroll
  for (int s = 0; s < kDepth; ++s) {
    const int64_t ts = t + s * int64_t(gridDim.x);
    if (s == 0 || ts < n_tiles) {  // (the grid has at most n_tiles CTAs)
      kept[s] = tile_coord(p, ts);
      if (p.vec) load_chunks<T>(p, kept[s], chunks[s]);
    }
  }
  while (t < n_tiles) {
#pragma unroll
    for (int s = 0; s < kDepth; ++s) {  // (unrolled: the ring is indexed at compile time)
      if (t < n_tiles) {
        const TileCoord cur = kDepth == 1 ? kept[s] : tile_coord(p, t);
        __syncthreads();  // the previous tile is consumed (and s_signs written)
        store_tile<T>(p, cur, chunks[s], s_val);
        if (!kAmaxOnly && p.stochastic) tile_words(p, cur, seed, offset, s_words);
        __syncthreads();
        t += gridDim.x;
        const int64_t ahead = t + (kDepth - 1) * int64_t(gridDim.x);
        if (ahead < n_tiles) {  // refill the buffer: kDepth tiles ahead of this one
          kept[s] = tile_coord(p, ahead);
          if (p.vec) load_chunks<T>(p, kept[s], chunks[s]);
        }
        if (p.op[0].active) {
          operand_block<false, kAmaxOnly>(p, p.op[0], cur, s_val, s_words, s_signs[0], amax[0]);
        }
        if (p.op[1].active) {
          operand_block<true, kAmaxOnly>(p, p.op[1], cur, s_val, s_words, s_signs[1], amax[1]);
        }
      }
    }
  }
  if constexpr (kAmaxOnly) {
    __shared__ uint32_t s_max[2][kThreads / 32];
#pragma unroll
    for (int d = 0; d < 2; ++d) {
      const uint32_t m = __reduce_max_sync(kFull, amax[d]);
      if ((tid & 31) == 0) s_max[d][tid >> 5] = m;
    }
    __syncthreads();
    if (tid < 2) {
      const Operand& o = tid == 0 ? p.op[0] : p.op[1];
      uint32_t m = 0;
#pragma unroll
      for (int i = 0; i < kThreads / 32; ++i) m = max(m, s_max[tid][i]);
      if (o.active && m != 0) atomicMax(o.amax, m);
    }
  } else {
    write_operand_padding(p);
  }
}

// out[i] = the encode global scale of the amax bits amax[i] (docs/spec.md sec. 2), i < n.
__global__ void global_scale_from_amax_kernel(const uint32_t* __restrict__ amax,
                                              float* __restrict__ out, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = nvfp4_global_scale_from_amax(amax[i]);
  }
}

}  // namespace train
}  // namespace nvfp4
