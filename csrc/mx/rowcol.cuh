// mx_quantize_rowcol (docs/spec.md sec. 3): MXFP8 of x along both axes from one read, bit for
// bit mx_quantize(x, "e4m3", rounding, swizzle, axis) for axis -1 and for axis -2.
// Torch-free device code; the launcher is in mx/ops.cu.
//
// Work layout: the tiles of the columnwise kernel (mx/quantize.cuh: 128 rows x 128 bytes of
// x, ColTile). A persistent CTA loops over tiles. Each thread holds its 4 16-byte vectors of
// the tile in registers and
//  * quantizes them rowwise right there (a vector is a quarter (16-bit x) or an eighth (fp32)
//    of an MX block along K; the block's lanes are adjacent, as in the rowwise kernel) and
//    stores its 8 (or 4) E4M3 bytes: a warp writes 4 rows x 64 bytes (16-bit x);
//  * stores them as fp32 into the shared tile, whose columns are then quantized as in the
//    columnwise kernel (colwise_quantize_tile: 8 lanes write 128 contiguous output bytes).
// The loads of the next tile are issued as soon as the current one is in shared memory, so
// they are in flight during its columnwise half (the rowwise half waits for them).
#pragma once

#include <cstdint>

#include "mx/quantize.cuh"

namespace nvfp4 {
namespace mx {

struct RowcolParams {
  ColwiseParams col;      // tiling of x, the columnwise outputs, col.swizzle for both
  int64_t row_mp, row_kp; // swizzled rowwise scale dims: roundup(m, 128), roundup(k / 32, 4)
  // col.tiles_k, col.tiles_m as divisors. Tile indices fit 31 bits: every tile holds at least
  // 32 x 32 elements of x (m, k multiples of 32), so 2^31 tiles would take 2^41 elements.
  FastDiv div_tiles_k, div_tiles_m;
};

// Tile t of x (col_tile_coord with 32-bit multiplicative divisions: this runs twice per tile
// and thread).
template <typename T>
__device__ __forceinline__ ColTileCoord rowcol_tile(const RowcolParams& p, uint32_t t) {
  ColTileCoord c;
  const uint32_t t2 = p.div_tiles_k.div(t);
  const uint32_t batch = p.div_tiles_m.div(t2);
  c.k0 = int64_t(t - t2 * uint32_t(p.col.tiles_k)) * ColTile<T>::TK;
  c.batch = batch;
  c.m0 = int64_t(t2 - batch * uint32_t(p.col.tiles_m)) * ColTile<T>::TM;
  col_tile_extent<T>(p.col, c);
  return c;
}

// Minimum CTAs per SM: 3 (at most 85 registers; 68-77 used, no spills, on sm_90, sm_100 and
// sm_120). Before sm_89 the E4M3 encode is software and needs more registers: 2 there.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 890
constexpr int kRowcolMinBlocks = 2;
#else
constexpr int kRowcolMinBlocks = 3;
#endif

template <typename T, MxRounding R>
__global__ void __launch_bounds__(kThreads, kRowcolMinBlocks)
    mx_quantize_rowcol_kernel(const T* __restrict__ x, uint8_t* __restrict__ row_data,
                              uint8_t* __restrict__ row_scales, uint8_t* __restrict__ col_data,
                              uint8_t* __restrict__ col_scales, RowcolParams p) {
  using G = ColTile<T>;
  constexpr int V = G::V;
  constexpr int kLanes = kBlock / V;  // lanes of one rowwise MX block: 4 or 8
  __shared__ __align__(16) float tile[G::TM * G::TK];

  const int tid = threadIdx.x;
  const ColwiseParams& cp = p.col;
  const uint32_t n_tiles = uint32_t(cp.batches * cp.tiles_m * cp.tiles_k);
  uint32_t t = blockIdx.x;
  uint4 raw[G::kLoads];
  if (t < n_tiles) load_col_tile<T>(x, cp, rowcol_tile<T>(p, t), raw);
  for (; t < n_tiles; t += gridDim.x) {
    const ColTileCoord c = rowcol_tile<T>(p, t);
#pragma unroll
    for (int i = 0; i < G::kLoads; ++i) {
      const int idx = i * kThreads + tid;
      const int row = idx / G::kVecPerRow, q = idx % G::kVecPerRow;
      float f[V];
      unpack_vec<T>(raw[i], f);
      // Rowwise: the kLanes lanes of a block share row and 32 columns (all lanes call).
      uint32_t b;
      const auto e = quantize_lane_vector<false, R>(f, b);
      const int col = q * V;
      if (row < c.rows_valid && col < c.cols_valid) {  // whole blocks: m, k multiples of 32
        const int64_t r = c.batch * cp.m + c.m0 + row;
        store_bytes<V>(row_data + r * cp.k + c.k0 + col, e.w);
        if ((q & (kLanes - 1)) == 0) {
          const int64_t sc = (c.k0 + col) >> 5;
          row_scales[cp.swizzle ? c.batch * p.row_mp * p.row_kp +
                                      swizzle_offset(c.m0 + row, sc, p.row_kp)
                                : r * (cp.k / kBlock) + sc] = b;
        }
      }
      store_tile_vector<T>(tile, row, q, f);
    }
    __syncthreads();
    if (t + gridDim.x < n_tiles) load_col_tile<T>(x, cp, rowcol_tile<T>(p, t + gridDim.x), raw);
    colwise_quantize_tile<T, false, R>(tile, cp, c, col_data, col_scales);
    __syncthreads();  // the next tile overwrites the shared memory
  }
  if (cp.swizzle) {
    write_scale_padding(row_scales, cp.batches, cp.m, cp.k / kBlock, p.row_mp, p.row_kp);
    write_scale_padding(col_scales, cp.batches, cp.k, cp.m / kBlock, cp.mp, cp.kp);
  }
}

}  // namespace mx
}  // namespace nvfp4
