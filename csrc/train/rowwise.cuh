// The direct rowwise NVFP4 training quantize kernel (docs/spec.md sec. 8.1-8.4): train_quantize
// with axis=-1 only (blocks of 16 along K), every option of the tile kernel (1-D or 16x16 2-D
// scales, round to nearest or Philox stochastic rounding, the Hadamard transform, linear or
// swizzled scales, a global scale given, per batch or computed by the tile kernel's amax
// pass), without the tile kernel's staging of x through shared memory: the rowwise operand
// needs no transpose, so each thread owns whole blocks of 16 loaded straight from global
// memory with 16-byte loads.
//
// Work layout: a warp item is 16 rows x kW blocks of 16 elements of one batch of x
// ([B, M, K], contiguous, K % 16 == 0); lane l takes row 16 g + (l % 16) and the kBlocks
// adjacent blocks (l / 16) kBlocks .. + kBlocks - 1 of the item's kW = 2 kBlocks (64 bytes
// of x per lane, a full 128-byte line per row for 16-bit x). The 16 rows of each 16x16 tile
// are then 16 lanes of one warp: a 2-D scale is 4 shuffles away, with no shared memory. Warps
// walk the items grid-stride, the loads of their next item issued before the math of the
// current one (64 bytes per thread in flight beside the one being worked on). A thread's codes
// for its kBlocks blocks are adjacent: one 16-byte store where aligned (two 8-byte stores
// otherwise). Stochastic rounding: a block starts at an element index e0 = (b M + m) K + 16 c,
// a multiple of 16, so its 16 words are exactly the 4 Philox counters offset + e0 / 4 + q,
// q < 4 (word j of counter q for element 4 q + j), the same words as the tile kernel's.
#pragma once

#include <cstdint>

#include "nvfp4/chunk.cuh"
#include "train/quantize.cuh"

namespace nvfp4 {
namespace train {

constexpr int kRowThreads = 256;

// Blocks per lane and item: 64 bytes of x per lane (2 blocks of 16-bit x, 1 of fp32).
template <typename T>
struct RowwiseShape {
  static constexpr int kBlocks = sizeof(T) == 4 ? 1 : 2;
  static constexpr int kW = 2 * kBlocks;                      // blocks per row of an item
  static constexpr int kVecs = 16 * int(sizeof(T)) / 16;      // 16-byte loads per block
  static constexpr int kV = Elem<T>::kPerVec;                  // elements per load
};

// Where this lane's blocks of an item lie: flat row b M + m of x and its first block column.
// (32-bit where the value fits: the launcher keeps the items, so b and the block column, below
// 2^31; m < M fits as int64 K * M does.)
struct RowwiseSlot {
  int64_t row;   // the row of the flattened [B M, K] x
  uint32_t b;    // batch
  uint32_t m;    // row within the batch (swizzled scales)
  uint32_t cb;   // first block column of the lane
  bool row_ok;   // m < M
};

template <typename T>
__device__ __forceinline__ RowwiseSlot rowwise_slot(const TileParams& p, const ItemGrid& g,
                                                    uint32_t item, int lane) {
  using S = RowwiseShape<T>;
  uint32_t b, grp, span;  // ItemGrid outer: row groups of 16, inner: spans of kW blocks
  g.split(item, b, grp, span);
  RowwiseSlot sl;
  sl.b = b;
  sl.m = 16 * grp + (lane & 15);
  sl.row = int64_t(b) * p.m + sl.m;
  sl.cb = span * S::kW + (lane >> 4) * S::kBlocks;
  sl.row_ok = sl.m < p.m;
  return sl;
}

// Issue the 16-byte loads of the lane's blocks of slot sl (zeros for blocks outside x).
template <typename T>
__device__ __forceinline__ void rowwise_load(const TileParams& p, const RowwiseSlot& sl,
                                             uint4 (&raw)[RowwiseShape<T>::kBlocks]
                                                         [RowwiseShape<T>::kVecs]) {
  using S = RowwiseShape<T>;
  const int64_t kb = p.k / 16;
  const T* x = static_cast<const T*>(p.x) + sl.row * p.k + 16 * int64_t(sl.cb);
#pragma unroll
  for (int u = 0; u < S::kBlocks; ++u) {
    const bool ok = sl.row_ok && sl.cb + u < kb;
#pragma unroll
    for (int q = 0; q < S::kVecs; ++q) {
      raw[u][q] = ok ? load_stream(x + 16 * u + S::kV * q) : make_uint4(0u, 0u, 0u, 0u);
    }
  }
}

// Quantize the lane's blocks of slot sl from their loaded bits. Called by every lane of the
// warp (the 2-D scale shuffles), whether or not its blocks are inside x.
template <typename T>
__device__ __forceinline__ void rowwise_blocks(const TileParams& p, const RowwiseSlot& sl,
                                               const uint4 (&raw)[RowwiseShape<T>::kBlocks]
                                                                 [RowwiseShape<T>::kVecs],
                                               const float* signs, uint64_t seed,
                                               uint64_t offset) {
  using S = RowwiseShape<T>;
  const Operand& o = p.op[0];
  const int64_t kb = p.k / 16;
  uint2 codes[S::kBlocks];
  uint32_t sfs[S::kBlocks];
#pragma unroll
  for (int u = 0; u < S::kBlocks; ++u) {
    float v[16];
#pragma unroll
    for (int q = 0; q < S::kVecs; ++q) unpack_vec<T>(raw[u][q], v + S::kV * q);
    if (o.signs != nullptr) hadamard16(v, signs);
    uint32_t amax = 0;
#pragma unroll
    for (int i = 0; i < 16; ++i) amax = max(amax, abs_bits(v[i]));
    if (p.block_2d) {  // one scale per 16x16 tile: its 16 rows are lanes l ^ 1 .. l ^ 15
#pragma unroll
      for (int d = 1; d < 16; d <<= 1) amax = max(amax, __shfl_xor_sync(kFull, amax, d));
    }
    // the 4 counters of the block, each evaluated where its first element is encoded
    const int64_t e0 = sl.row * p.k + 16 * (int64_t(sl.cb) + u);
    const uint64_t c0 = offset + static_cast<uint64_t>(e0) / 4;
    Philox4 words;
    codes[u] = encode_block(v, amax, __ldg(o.gs + (o.gs_per_batch ? sl.b : 0)), p.stochastic,
                            [&](int i) {
                              if ((i & 3) == 0) words = sr_words(c0 + (i >> 2), seed);
                              return words.w[i & 3];
                            },
                            sfs[u]);
  }
  if (!sl.row_ok) return;
  uint8_t* packed = o.packed + (sl.row * p.k + 16 * int64_t(sl.cb)) / 2;
  const bool all_in = sl.cb + S::kBlocks <= kb;
  if (S::kBlocks == 2 && all_in && (reinterpret_cast<uintptr_t>(packed) & 15) == 0) {
    __stcs(reinterpret_cast<uint4*>(packed),
           make_uint4(codes[0].x, codes[0].y, codes[S::kBlocks - 1].x, codes[S::kBlocks - 1].y));
  } else {
#pragma unroll
    for (int u = 0; u < S::kBlocks; ++u) {
      if (sl.cb + u < kb) __stcs(reinterpret_cast<uint2*>(packed) + u, codes[u]);
    }
  }
  // (byte stores: one 2-byte store of the adjacent scale bytes costs registers that spill)
#pragma unroll
  for (int u = 0; u < S::kBlocks; ++u) {
    const int64_t cb = int64_t(sl.cb) + u;
    if (cb < kb) {
      o.scales[p.swizzle ? sl.b * o.mp * o.kp + swizzle_offset(sl.m, cb, o.kp)
                         : sl.row * kb + cb] = static_cast<uint8_t>(sfs[u]);
    }
  }
}

// The rowwise operand p.op[0] of every item (p.op[1] inactive, p.vec true), then the
// swizzled padding. 3 CTAs of 256 per SM (80 registers: the two buffers of raw bits, a block
// as fp32 and the Philox state fit without spills): 48 KB of x in flight per SM.
template <typename T>
__global__ void __launch_bounds__(kRowThreads, 3)
    train_rowwise_kernel(const TileParams p, const ItemGrid g) {
  using S = RowwiseShape<T>;
  __shared__ float s_signs[16];
  load_signs(p.op[0], s_signs);
  uint64_t seed = 0, offset = 0;
  if (p.stochastic) {
    seed = static_cast<uint64_t>(__ldg(p.seed));
    offset = static_cast<uint64_t>(__ldg(p.offset));
  }
  const int lane = threadIdx.x & 31;
  const uint32_t n_warps = gridDim.x * (kRowThreads / 32);
  uint32_t item = (blockIdx.x * kRowThreads + threadIdx.x) >> 5;  // warp-uniform
  RowwiseSlot cur{};
  uint4 raw[S::kBlocks][S::kVecs];
  if (item < g.items) {
    cur = rowwise_slot<T>(p, g, item, lane);
    rowwise_load<T>(p, cur, raw);
  }
  while (item < g.items) {
    const uint32_t next = item + n_warps;
    RowwiseSlot nxt{};
    uint4 raw_next[S::kBlocks][S::kVecs];
    if (next < g.items) {  // the next item's loads in flight during this item's math
      nxt = rowwise_slot<T>(p, g, next, lane);
      rowwise_load<T>(p, nxt, raw_next);
    }
    rowwise_blocks<T>(p, cur, raw, s_signs, seed, offset);
    cur = nxt;
#pragma unroll
    for (int u = 0; u < S::kBlocks; ++u) {
#pragma unroll
      for (int q = 0; q < S::kVecs; ++q) raw[u][q] = raw_next[u][q];
    }
    item = next;
  }
  write_operand_padding(p);
}

// ---- the wide layout: 16-bit x, round to nearest ------------------------------------------
//
// train_rowwise_wide_kernel: the rowwise operand of 16-bit x with round to nearest and no
// transform (2-D scales; 1-D blocks take the inference quantize, whose layout this kernel
// follows). A CTA tile is 16 rows x 512 elements (16 KB of x; the CTAs loop over the
// tiles): warp w takes tile rows w and w + 8, lane l the 16-byte chunks l and l + 32 of each
// (so every warp load is 512 contiguous bytes), i.e. half of the blocks
// l / 2 and 16 + l / 2; the two lanes of a block are l and l ^ 1. As in the inference
// quantize (nvfp4/quantize.cuh), lane q = l & 1 does the per-block work of the block of its
// chunk q (amax by quant::group_max_scatter, scale byte, multiplier, scale store) and hands
// the multiplier to the other lane with one shuffle; codes by quant::encode_chunk, 4 bytes
// per lane: a warp's code stores are 128 contiguous bytes (the direct layout above wrote 16
// rows x 32 bytes per store and issued 6x the L2 write requests of the inference quantize,
// ncu, benchmarks/RESULTS.md). 2-D scales: a 16x16 tile is the owner lanes of one block
// column in the 8 warps: each owner takes the max of its two rows, a table in shared memory
// (one barrier per tile, two buffers) gives the tile's. Measured at 8192^2 bf16 on an H200
// (benchmarks/RESULTS.md, "seventh part"): 2-D 0.071 ms against 0.077 for the direct kernel;
// with the Hadamard transform (stage 8 of the butterfly between the block's two lanes) it
// was slower than the direct kernel (0.096 vs 0.086 ms), which keeps the transform.
constexpr int kWideRows = 16;      // rows of a tile
constexpr int kWideElems = 512;    // elements of a tile row (32 blocks of 16)

// p.op[0] only (no signs), p.vec true, round to nearest; 4 CTAs of 256 per SM (56
// registers: each chunk is widened only where it is encoded).
template <typename T>
__global__ void __launch_bounds__(kRowThreads, 4)
    train_rowwise_wide_kernel(const TileParams p, const ItemGrid g) {
  static_assert(sizeof(T) == 2, "16-bit x: 8 elements per chunk, 2 lanes per block");
  __shared__ uint32_t s_amax[2][kRowThreads / 32][32];  // 2-D: [buffer][warp][block column]
  const Operand& o = p.op[0];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, q = lane & 1;
  const int bq = 16 * q + (lane >> 1);  // the tile block column whose work this lane does
  const int64_t kb = o.kb;
  int par = 0;
  for (uint32_t t = blockIdx.x; t < g.items; t += gridDim.x, par ^= 1) {
    uint32_t b, grp, span;
    g.split(t, b, grp, span);
    const int64_t k0 = int64_t(span) * kWideElems;
    uint4 raw[4];  // j: row w + 8 (j >> 1), chunk lane + 32 (j & 1)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t m = int64_t(kWideRows) * grp + w + 8 * (j >> 1);
      const int64_t col = k0 + 8 * (lane + 32 * (j & 1));
      raw[j] = m < p.m && col < p.k
                   ? load_stream(static_cast<const T*>(p.x) + (int64_t(b) * p.m + m) * p.k + col)
                   : make_uint4(0u, 0u, 0u, 0u);
    }
    const float gs = __ldg(o.gs + (o.gs_per_batch ? b : 0));
    const float inv_gs = rn_rcp(gs);
    uint32_t own[2];  // the amax of block bq of row w + 8 r (this lane's work)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      uint32_t am[2];
#pragma unroll
      for (int j = 0; j < 2; ++j) am[j] = quant::chunk_amax_bits<T>(raw[2 * r + j]);
      own[r] = quant::group_max_scatter<2>(am, q);
    }
    if (p.block_2d) {  // the 16x16 tile of block column bq: both rows, then the 8 warps
      s_amax[par][w][bq] = max(own[0], own[1]);
      __syncthreads();
      uint32_t a = 0;
#pragma unroll
      for (int v = 0; v < kRowThreads / 32; ++v) a = max(a, s_amax[par][v][bq]);
      own[0] = own[1] = a;
    }
    const int64_t cb = k0 / 16 + bq;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t m = int64_t(kWideRows) * grp + w + 8 * r;
      const int64_t row = int64_t(b) * p.m + m;
      const uint32_t sf = nvfp4_block_scale(own[r], gs);
      const float osc = nvfp4_osc(sf, inv_gs);
      if (m < p.m && cb < kb) {
        o.scales[p.swizzle ? int64_t(b) * o.mp * o.kp + swizzle_offset(m, cb, o.kp)
                           : row * kb + cb] = static_cast<uint8_t>(sf);
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const float oj = __shfl_sync(kFull, osc, j, 2);  // the multiplier of chunk j's block
        const int64_t col = k0 + 8 * (lane + 32 * j);
        if (m >= p.m || col >= p.k) continue;
        uint32_t word = 0;  // a NaN multiplier (scale 0x7F): codes 0
        if (oj == oj) {  // x * osc is NaN only for 0 * inf: osc = +inf is NaN-safe
          float a[8];
          unpack_vec<T>(raw[2 * r + j], a);
          word = f32_bits(oj) == kInfBits ? quant::encode_chunk<T, true>(raw[2 * r + j], a, oj)
                                          : quant::encode_chunk<T, false>(raw[2 * r + j], a, oj);
        }
        __stcs(reinterpret_cast<uint32_t*>(o.packed + (row * p.k + col) / 2), word);
      }
    }
  }
  write_operand_padding(p);
}

}  // namespace train
}  // namespace nvfp4
