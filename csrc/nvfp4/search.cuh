// The NVFP4 scale-search kernels (quantize with scale_method "mse" / "hessian", docs/spec.md
// sec. 5): one thread per block runs nvfp4_choose (search/choose.h), then encodes the block
// with the chosen byte. Launched from nvfp4/ops.cu.
#pragma once

#include <cstdint>

#include "core/swizzle.h"
#include "core/vec.cuh"
#include "search/choose.h"

namespace nvfp4 {
namespace search {

struct Nvfp4SearchParams {
  const void* x;        // contiguous [batches, rows, k]
  uint8_t* packed;      // [batches, rows, k / 2]
  uint8_t* scales;      // linear [batches, rows, kb] or swizzled [batches, mp, kp]
  const float* gs;      // [1] or [batches]
  const float* hessian; // [kb, 16, 16] ("hessian" only)
  int64_t batches, rows, kb, mp, kp;
  int64_t per_batch;    // rows * kb
  int64_t row_tiles;    // "hessian": tiles of kThreads rows per CTA (grid.y splits them)
  bool gs_per_batch;
};


// Scale byte of block blk = (batch, row r, column c) and, in the swizzled layout, the zero
// column padding after the last column of each row.
template <bool kSwizzle>
__device__ __forceinline__ void store_scale(const Nvfp4SearchParams& p, int64_t batch, int64_t r,
                                            int64_t c, uint32_t byte) {
  if (!kSwizzle) {
    p.scales[(batch * p.rows + r) * p.kb + c] = static_cast<uint8_t>(byte);
    return;
  }
  uint8_t* s = p.scales + batch * p.mp * p.kp;
  s[swizzle_offset(r, c, p.kp)] = static_cast<uint8_t>(byte);
  if (c + 1 == p.kb) {
    for (int64_t j = p.kb; j < p.kp; ++j) s[swizzle_offset(r, j, p.kp)] = 0;
  }
}

// The all-padding rows of swizzled scales (core/swizzle.h), grid-stride over all CTAs of
// the (up to 3-D) grid.
__device__ __forceinline__ void zero_row_padding(const Nvfp4SearchParams& p) {
  const int64_t ctas = int64_t(gridDim.x) * gridDim.y * gridDim.z;
  const int64_t cta = (int64_t(blockIdx.z) * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  zero_swizzled_row_padding(p.scales, p.batches, p.rows, p.mp, p.kp, cta * blockDim.x + threadIdx.x,
                            ctas * blockDim.x);
}

// The multipliers of bytes 0..126 for global scale gs, into shared memory.
__device__ __forceinline__ void fill_table(float* tab_osc, float* tab_s, float gs, float inv_gs) {
  for (int c = threadIdx.x; c <= kMaxByte; c += blockDim.x) {
    const Mult m = nvfp4_mult(static_cast<uint32_t>(c), gs, inv_gs);
    tab_osc[c] = m.osc;
    tab_s[c] = m.s;
  }
}

// Encode block blk of x with the chosen byte and store codes and scale.
template <bool kSwizzle>
__device__ __forceinline__ void finish_block(const Nvfp4SearchParams& p, const float (&v)[16],
                                             int64_t blk, int64_t batch, int64_t r, int64_t c,
                                             uint32_t byte, const float* tab_osc, float gs,
                                             float inv_gs) {
  const float osc = byte <= static_cast<uint32_t>(kMaxByte) ? tab_osc[byte]
                                                            : nvfp4_mult(byte, gs, inv_gs).osc;
  uint32_t lo, hi;
  nvfp4_encode16(v, byte, osc, lo, hi);
  __stcs(reinterpret_cast<uint2*>(p.packed) + blk, make_uint2(lo, hi));
  store_scale<kSwizzle>(p, batch, r, c, byte);
}

// "mse": one thread per block, blocks in memory order (coalesced 16-byte loads). grid.y
// walks the batches when each has its own global scale (one multiplier table per batch).
template <typename T, bool kSwizzle>
__global__ void __launch_bounds__(kThreads) nvfp4_mse_search_kernel(const Nvfp4SearchParams p) {
  __shared__ float tab_osc[kMaxByte + 1], tab_s[kMaxByte + 1];
  __shared__ float ring_buf[8 * kThreads];
  const Ring ring{ring_buf + threadIdx.x, kThreads};
  NoStats st;
  const int64_t n_groups = p.gs_per_batch ? p.batches : 1;
  const int64_t per_group = p.gs_per_batch ? p.per_batch : p.batches * p.per_batch;
  for (int64_t g = blockIdx.y; g < n_groups; g += gridDim.y) {
    const float gs = __ldg(p.gs + (p.gs_per_batch ? g : 0));
    const float inv_gs = __frcp_rn(gs);
    __syncthreads();  // the previous group's table is no longer read
    fill_table(tab_osc, tab_s, gs, inv_gs);
    __syncthreads();
    for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < per_group;
         i += int64_t(gridDim.x) * kThreads) {
      const int64_t blk = g * per_group + i;
      float v[16];
      load_block<T>(p.x, blk, v);
      const uint32_t byte = nvfp4_choose(v, gs, inv_gs, tab_osc, tab_s, nullptr, ring, ring, st);
      const int64_t row = blk / p.kb;
      const int64_t c = blk - row * p.kb;
      const int64_t batch = row / p.rows;
      finish_block<kSwizzle>(p, v, blk, batch, row - batch * p.rows, c, byte, tab_osc, gs, inv_gs);
    }
  }
  if (kSwizzle) zero_row_padding(p);
}

// "hessian": a CTA owns one column group j (grid.x), one batch (grid.z) and every
// gridDim.y-th tile of kThreads rows; a thread owns one row of the tile. The group's H, its
// bound weights and ||H||_F sit in shared memory and every read of them is a broadcast.
template <typename T, bool kSwizzle>
__global__ void __launch_bounds__(kThreads) nvfp4_hessian_search_kernel(const Nvfp4SearchParams p) {
  __shared__ __align__(16) float h_s[256];
  __shared__ float w_s[16];
  __shared__ __align__(16) float u_s[256];
  __shared__ HessScalars k_s;
  __shared__ double work_s[528];
  __shared__ float tab_osc[kMaxByte + 1], tab_s[kMaxByte + 1];
  __shared__ float col_buf[24 * kThreads];
  const Ring ring{col_buf + threadIdx.x, kThreads};
  const Column ei{col_buf + 8 * kThreads + threadIdx.x, kThreads};
  NoStats st;
  for (int64_t j = blockIdx.x; j < p.kb; j += gridDim.x) {
    for (int64_t b = blockIdx.z; b < p.batches; b += gridDim.z) {
      const float gs = __ldg(p.gs + (p.gs_per_batch ? b : 0));
      const float inv_gs = __frcp_rn(gs);
      __syncthreads();
      for (int t = threadIdx.x; t < 256; t += blockDim.x) h_s[t] = __ldg(p.hessian + j * 256 + t);
      fill_table(tab_osc, tab_s, gs, inv_gs);
      __syncthreads();
      if (threadIdx.x == 0) k_s = hessian_group_bounds(h_s, w_s, u_s, work_s);
      __syncthreads();
      const HessGroup hg{h_s, w_s, u_s, k_s};
      for (int64_t tile = blockIdx.y; tile < p.row_tiles; tile += gridDim.y) {
        const int64_t r = tile * kThreads + threadIdx.x;
        if (r >= p.rows) continue;
        const int64_t blk = (b * p.rows + r) * p.kb + j;
        float v[16];
        load_block<T>(p.x, blk, v);
        const uint32_t byte = nvfp4_choose(v, gs, inv_gs, tab_osc, tab_s, &hg, ring, ei, st);
        finish_block<kSwizzle>(p, v, blk, b, r, j, byte, tab_osc, gs, inv_gs);
      }
    }
  }
  if (kSwizzle) zero_row_padding(p);
}

}  // namespace search
}  // namespace nvfp4
