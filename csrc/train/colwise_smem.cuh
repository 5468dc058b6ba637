// The shared-memory staged columnwise NVFP4 training quantize kernel (docs/spec.md sec. 8.1,
// 8.2, 8.4; issue 14): train_quantize with axis=-2 (blocks of 16 along M, the operand x^T)
// for the columnwise operand alone, round to nearest, any x dtype with 16-byte loads
// (p.vec), 1-D or 16x16 2-D scales, the Hadamard transform, linear or swizzled scales,
// global scale given (per batch or not) or computed by the op before this pass.
// NVFP4_OPS_TRAIN_KERNEL=smem selects it (train/quantize.cuh lists the variants).
//
// Why: train_colwise_kernel (train/colwise.cuh) keeps 16 rows x 8 columns of x per lane in
// registers (128 registers, 25 % occupancy, its warps mostly waiting on their loads: 29 % of
// a device copy on an H200 at 8192 x 8192 bf16). This kernel takes
// the structure of the MXFP8 columnwise kernel (mx/quantize.cuh, mx_quantize_colwise_kernel)
// and its tile helpers: a CTA stages a 128-row x 128-byte tile of x (mx::ColTile<T>: 64
// columns of 16-bit x, 32 of fp32) through shared memory as fp32 (XOR-permuted 16-byte
// chunks, mx::tile_word). The CTA's next tile is copied with cp.async into a shared staging
// buffer while the current one is encoded (no registers hold it in flight; held in
// registers, 16 per thread as in mx_quantize_rowcol_kernel, 16-bit x spilled 12-16 bytes at
// 64 registers on sm_80 and sm_90); each thread then widens its own staged vectors into the
// fp32 tile. Each thread encodes kBlocks (2 for 16-bit x, 1 for fp32) 16-row segments
// of one tile column, each a whole block of x^T: block pi = it * 256 + tid is rows
// 16 h .. 16 h + 15 (h = pi % 8) of tile column kk = pi / 8, i.e. elements m0 + 16 h .. + 15
// of row k0 + kk of x^T. The Hadamard transform of a block is local to the thread; the amax,
// scale byte, multiplier and codes are the functions of every training kernel (hadamard16,
// encode_block), so the bits are those of the other kernels by construction. 8 adjacent
// lanes write 64 contiguous bytes of codes (8 each) and 8 contiguous scale bytes of one row
// of x^T.
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
  return transformed_amax(v, hadamard, signs);
}

// The dynamic shared memory of train_colwise_smem_kernel<T>: the fp32 tile, the staging
// buffer of the next tile's raw vectors (cp.async) and the 2-D scales' block amaxes
// (s_amax[h * kAmaxPitch + kk], the pitch putting the 8 groups' rows in distinct banks).
// 16-bit x: 32 + 16 + 2.1 KB (over the 48 KB of static shared memory; the launcher opts in):
// 4 CTAs per SM on sm_90 / sm_100 (228 KB), 3 on sm_80 (164 KB), 1 where an SM has 100 KB
// (sm_86, sm_89, sm_120: a case to measure before this kernel serves "auto" there).
template <typename T>
struct SmemLayout {
  using G = SmemTile<T>;
  static constexpr int kGroups = G::TM / 16;  // 16-row segments per tile column
  static constexpr int kAmaxPitch = G::TK + 4;
  static constexpr int kTileBytes = G::TM * G::TK * 4;
  static constexpr int kRawBytes = G::kLoads * kThreads * 16;
  static constexpr int kBytes = kTileBytes + kRawBytes + kGroups * kAmaxPitch * 4;
};

// Minimum CTAs per SM: 4 (at most 64 registers), what the shared memory of sm_90 / sm_100
// holds. sm_120 (100 KB per SM: 1 CTA of 16-bit x, 2 of fp32) leaves the registers to the
// compiler (16-bit x spilled at 64 there). (sm_86 / sm_89 run the sm_80 code: 64 registers.)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 1200
constexpr int kSmemMinBlocks = 1;
#else
constexpr int kSmemMinBlocks = 4;
#endif

// p.op[1] only; p.tiles_m, p.tiles_k count SmemTile<T> tiles (set by the launcher), p.vec
// true, round to nearest; SmemLayout<T>::kBytes of dynamic shared memory.
template <typename T>
__global__ void __launch_bounds__(kThreads, kSmemMinBlocks)
    train_colwise_smem_kernel(const TileParams p) {
  using G = SmemTile<T>;
  using L = SmemLayout<T>;
  constexpr int TK = G::TK;
  constexpr int kBlocks = TK * L::kGroups / kThreads;  // blocks per thread and tile
  static_assert(kBlocks * kThreads == TK * L::kGroups && kThreads == mx::kThreads, "tile shape");
  extern __shared__ __align__(16) unsigned char smem[];
  float* tile = reinterpret_cast<float*>(smem);
  const uint4* s_raw = reinterpret_cast<const uint4*>(smem + L::kTileBytes);
  uint32_t* s_amax = reinterpret_cast<uint32_t*>(smem + L::kTileBytes + L::kRawBytes);
  const uint32_t s_raw_addr = static_cast<uint32_t>(__cvta_generic_to_shared(s_raw));
  __shared__ float s_signs[16];
  const Operand& o = p.op[1];
  load_signs(o, s_signs);
  const bool hadamard = o.signs != nullptr;
  const T* x = static_cast<const T*>(p.x);
  const int tid = threadIdx.x;
  // (tile indices fit 32 bits: a tile holds 4096 elements of x or more)
  const uint32_t n_tiles = static_cast<uint32_t>(p.batches * p.tiles_m * p.tiles_k);
  const int64_t cols = 16 * o.kb;  // elements per row of x^T (= M)

  // (the grid has at most n_tiles CTAs)
  mx::load_col_tile_async<T>(x, p, mx::col_tile_coord<T>(p, uint32_t(blockIdx.x)), s_raw_addr);
  for (uint32_t t = blockIdx.x; t < n_tiles; t += gridDim.x) {
    cp_async_wait<0>();
    asm volatile("" ::: "memory");  // (the reads below stay after the wait)
    {  // this thread's own staged vectors (no barrier needed) into the fp32 tile
      uint4 raw[G::kLoads];
#pragma unroll
      for (int i = 0; i < G::kLoads; ++i) raw[i] = s_raw[i * kThreads + tid];
      mx::store_col_tile<T>(tile, raw);
    }
    __syncthreads();
    if (t + gridDim.x < n_tiles) {  // the next tile's copies, in flight during the encode
      mx::load_col_tile_async<T>(x, p, mx::col_tile_coord<T>(p, t + gridDim.x), s_raw_addr);
    }
    const mx::ColTileCoord c = mx::col_tile_coord<T>(p, t);
    if (p.block_2d) {  // every block's amax into s_amax
#pragma unroll
      for (int it = 0; it < kBlocks; ++it) {
        const int pi = it * kThreads + tid, h = pi & 7, kk = pi >> 3;
        float v[16];
        s_amax[h * L::kAmaxPitch + kk] = smem_tile_block<TK>(tile, h, kk, hadamard, s_signs, v);
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
        const uint4* a = reinterpret_cast<const uint4*>(s_amax + h * L::kAmaxPitch + (kk & ~15));
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
    __syncthreads();  // the next tile (and its s_amax) overwrites the shared tile
  }
  write_operand_padding(p);
}

}  // namespace train
}  // namespace nvfp4
