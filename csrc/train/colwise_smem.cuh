// The shared-memory staged columnwise NVFP4 training quantize kernel (docs/spec.md sec. 8.1,
// 8.2, 8.4; issue 14): train_quantize with axis=-2 (blocks of 16 along M, the operand x^T)
// for the columnwise operand alone, round to nearest, any x dtype with 16-byte loads
// (p.vec), 1-D or 16x16 2-D scales, the Hadamard transform, linear or swizzled scales,
// global scale given (per batch or not) or computed by the op before this pass.
// NVFP4_OPS_TRAIN_KERNEL=smem selects it (train/quantize.cuh lists the variants).
//
// Why: train_colwise_kernel (train/colwise.cuh) keeps 16 rows x 8 columns of x per lane in
// registers (128 registers, 2 CTAs per SM, mostly waiting on its loads). This kernel takes
// the structure of the MXFP8 columnwise kernel (mx/quantize.cuh, mx_quantize_colwise_kernel)
// and its tile helpers: a CTA stages a 128-row x 128-byte tile of x (mx::ColTile<T>: 64
// columns of 16-bit x, 32 of fp32) through shared memory as fp32 (XOR-permuted 16-byte
// chunks, mx::tile_word), so only 4 16-byte vectors per thread are in registers. The loads
// of the CTA's next tile are issued once the current one is in shared memory, so they are in
// flight while it is encoded. Each thread then encodes kBlocks (2 for 16-bit x, 1 for fp32)
// 16-row segments of one tile column, each a whole block of x^T: block pi = it * 256 + tid
// is rows 16 h .. 16 h + 15 (h = pi % 8) of tile column kk = pi / 8, i.e. elements
// m0 + 16 h .. + 15 of row k0 + kk of x^T. The Hadamard transform of a block is local to the
// thread; the amax, scale byte, multiplier and codes are the functions of every training
// kernel (hadamard16, encode_block), so the bits are those of the other kernels by
// construction. 8 adjacent lanes write 64 contiguous bytes of codes (8 each) and 8
// contiguous scale bytes of one row of x^T.
//
// 2-D scales: the scale of a 16x16 tile of x is shared by its 16 columns, which lie in 4
// warps here (a warp holds 4 columns x 8 row groups); the block amaxes go through a small
// shared table instead of shuffles (one more barrier per tile), and each block is read and
// transformed again after it rather than kept in registers (2-D scales are the weights'
// recipe, where this pass is not the hot one).
#pragma once

#include <cstdint>

#include "mx/quantize.cuh"
#include "train/quantize.cuh"

namespace nvfp4 {
namespace train {

// The tiles of train_colwise_smem_kernel (mx::ColTile<T>: kThreads = mx::kThreads = 256).
template <typename T>
using SmemTile = mx::ColTile<T>;

// Block pi of a tile: the 16-row segment h = pi % 8 of tile column kk = pi / 8, transformed
// when signs are given, into v; returns the bits of its amax.
template <int TK>
__device__ __forceinline__ uint32_t smem_tile_block(const float* tile, int h, int kk,
                                                    bool hadamard, const float* signs,
                                                    float (&v)[16]) {
  mx::read_tile_column<TK>(tile, h, kk, v);
  if (hadamard) hadamard16(v, signs);
  uint32_t amax = 0;
#pragma unroll
  for (int i = 0; i < 16; ++i) amax = max(amax, abs_bits(v[i]));
  return amax;
}

// p.op[1] only; p.tiles_m, p.tiles_k count SmemTile<T> tiles (set by the launcher), p.vec
// true, round to nearest. 4 CTAs of 256 per SM (at most 64 registers; 32 KB of shared tile
// each).
template <typename T>
__global__ void __launch_bounds__(kThreads, 4) train_colwise_smem_kernel(const TileParams p) {
  using G = SmemTile<T>;
  constexpr int TM = G::TM, TK = G::TK;
  constexpr int kGroups = TM / 16;                  // 16-row segments per tile column
  constexpr int kBlocks = TK * kGroups / kThreads;  // blocks per thread and tile
  constexpr int kAmaxPitch = TK + 4;  // s_amax row pitch: the 8 groups' rows in distinct banks
  static_assert(kBlocks * kThreads == TK * kGroups && kThreads == mx::kThreads, "tile shape");
  __shared__ __align__(16) float tile[TM * TK];
  __shared__ __align__(16) uint32_t s_amax[kGroups * kAmaxPitch];  // 2-D: block amaxes
  __shared__ float s_signs[16];
  const Operand& o = p.op[1];
  load_signs(o, s_signs);
  const bool hadamard = o.signs != nullptr;
  const T* x = static_cast<const T*>(p.x);
  const int tid = threadIdx.x;
  const int64_t n_tiles = p.batches * p.tiles_m * p.tiles_k;
  const int64_t cols = 16 * o.kb;  // elements per row of x^T (= M)

  // (the grid has at most n_tiles CTAs)
  mx::ColTileCoord next = mx::col_tile_coord<T>(p, blockIdx.x);
  uint4 raw[G::kLoads];
  mx::load_col_tile<T>(x, p, next, raw);
  for (int64_t t = blockIdx.x; t < n_tiles; t += gridDim.x) {
    const mx::ColTileCoord c = next;
    mx::store_col_tile<T>(tile, raw);
    __syncthreads();
    if (t + gridDim.x < n_tiles) {  // the next tile's loads, in flight during the encode
      next = mx::col_tile_coord<T>(p, t + gridDim.x);
      mx::load_col_tile<T>(x, p, next, raw);
    }
    if (p.block_2d) {  // every block's amax into s_amax[h][kk]
#pragma unroll
      for (int it = 0; it < kBlocks; ++it) {
        const int pi = it * kThreads + tid, h = pi & 7, kk = pi >> 3;
        float v[16];
        s_amax[h * kAmaxPitch + kk] = smem_tile_block<TK>(tile, h, kk, hadamard, s_signs, v);
      }
      __syncthreads();
    }
    const float gs = __ldg(o.gs + (o.gs_per_batch ? c.batch : 0));
#pragma unroll 1
    for (int it = 0; it < kBlocks; ++it) {
      const int pi = it * kThreads + tid, h = pi & 7, kk = pi >> 3;
      float v[16];
      uint32_t amax = smem_tile_block<TK>(tile, h, kk, hadamard, s_signs, v);
      if (p.block_2d) {  // the max over the tile's 16 columns 16 (kk / 16) .. + 15
        const uint4* a = reinterpret_cast<const uint4*>(s_amax + h * kAmaxPitch + (kk & ~15));
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const uint4 w = a[q];
          amax = max(amax, max(max(w.x, w.y), max(w.z, w.w)));
        }
      }
      uint32_t sf;
      const uint2 codes = encode_block(v, amax, gs, false, [](int) { return 0u; }, sf);
      if (kk < c.cols_valid && 16 * h < c.rows_valid) {
        const int64_t row = c.batch * o.rows + c.k0 + kk;  // row of x^T, batch included
        const int64_t col = c.m0 + 16 * h;                 // its first element
        __stcs(reinterpret_cast<uint2*>(o.packed + (row * cols + col) / 2), codes);
        const int64_t cb = col / 16;
        o.scales[p.swizzle ? c.batch * o.mp * o.kp + swizzle_offset(c.k0 + kk, cb, o.kp)
                           : row * o.kb + cb] = static_cast<uint8_t>(sf);
      }
    }
    __syncthreads();  // the next tile (and its s_amax) overwrites the shared memory
  }
  write_operand_padding(p);
}

}  // namespace train
}  // namespace nvfp4
