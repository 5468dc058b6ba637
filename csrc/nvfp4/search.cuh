// The NVFP4 scale-search kernels (quantize with scale_method "mse" / "hessian", docs/spec.md
// sec. 5): one thread per block runs nvfp4_choose (search/choose.h), then encodes the block
// with the chosen byte. The grids cover the blocks of all batches with full CTAs, also when
// each batch has its own global scale (the multiplier tables of the batches a tile spans
// are filled in shared memory, with_batch_tables), and the fp64 bounds of each column group
// of a Hessian are computed once per group (nvfp4_hessian_bounds_kernel). Launched from
// nvfp4/ops.cu.
#pragma once

#include <cstdint>

#include "core/swizzle.h"
#include "core/vec.cuh"
#include "search/choose.h"

namespace nvfp4 {
namespace search {

// The per-column-group data of the "hessian" search that hessian_group_bounds derives from
// H_j (fp64, serial): computed once per group by nvfp4_hessian_bounds_kernel, then read by
// every CTA and batch of the search.
struct HessBounds {
  float w[16];   // bound weights [P6]
  float U[256];  // shifted Cholesky factor [P7] (k.chol only)
  HessScalars k;
};

struct Nvfp4SearchParams {
  const void* x;        // contiguous [batches, rows, k]
  uint8_t* packed;      // [batches, rows, k / 2]
  uint8_t* scales;      // linear [batches, rows, kb] or swizzled [batches, mp, kp]
  const float* gs;      // [1] or [batches]
  const float* hessian; // [kb, 16, 16] ("hessian" only)
  HessBounds* bounds;   // [kb] ("hessian" only; written by nvfp4_hessian_bounds_kernel)
  int64_t batches, rows, kb, mp, kp;
  int64_t per_batch;    // rows * kb
  int64_t row_tiles;    // "hessian": tiles of kThreads rows of all batches (batches * rows)
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

// Multiplier tables (bytes 0..126) of up to kTabBatches global scales, in shared memory.
constexpr int kTabBatches = 8;
struct BatchTables {
  float osc[kTabBatches][kMaxByte + 1];
  float s[kTabBatches][kMaxByte + 1];
};
// Which batches' tables a CTA holds: batches [lo, lo + n). Every thread keeps its own copy
// (it sees the same sequence of windows), so that checking it needs no shared memory and no
// barrier.
struct HeldTables {
  int64_t lo = -1;
  int n = 0;
};

// Tables t.osc[i], t.s[i] of the global scales of batches w0 + i, i < n (gs[0] for every
// batch unless p.gs_per_batch). Every thread of the CTA takes a share; no barrier.
__device__ __forceinline__ void fill_tables(const Nvfp4SearchParams& p, BatchTables& t,
                                            int64_t w0, int n) {
  for (int e = threadIdx.x; e < n * (kMaxByte + 1); e += blockDim.x) {
    const int tb = e / (kMaxByte + 1), c = e - tb * (kMaxByte + 1);
    const float gs = __ldg(p.gs + (p.gs_per_batch ? w0 + tb : 0));
    const Mult m = nvfp4_mult(static_cast<uint32_t>(c), gs, __frcp_rn(gs));
    t.osc[tb][c] = m.osc;
    t.s[tb][c] = m.s;
  }
}

// The work of one tile of a search kernel: body(tab_osc, tab_s, gs, inv_gs) for this
// thread's item (if active) of batch b, with the multiplier tables of b's global scale. The
// tile's items span the batches [b_lo, b_hi] (the same for every thread of the CTA; all 0
// when one global scale serves every batch); their tables are filled in windows of
// kTabBatches batches, and only when the CTA does not hold them yet (then with two
// barriers), so a tile inside the batch of the previous tile, and every tile with one global
// scale after the first, runs without a barrier. Every thread of the CTA calls it.
template <class Body>
__device__ __forceinline__ void with_batch_tables(const Nvfp4SearchParams& p, BatchTables& t,
                                                  HeldTables& held, int64_t b_lo, int64_t b_hi,
                                                  bool active, int64_t b, Body&& body) {
  for (int64_t w0 = b_lo; w0 <= b_hi; w0 += kTabBatches) {
    const int n = static_cast<int>(b_hi - w0 + 1 < kTabBatches ? b_hi - w0 + 1 : kTabBatches);
    if (w0 != held.lo || n > held.n) {  // uniform over the CTA
      __syncthreads();  // the tables held are no longer read
      fill_tables(p, t, w0, n);
      __syncthreads();
      held.lo = w0;
      held.n = n;
    }
    if (active && b >= w0 && b < w0 + n) {
      const float gs = __ldg(p.gs + (p.gs_per_batch ? b : 0));
      body(t.osc[b - w0], t.s[b - w0], gs, __frcp_rn(gs));
    }
  }
}

// The tiles [first, end) of a CTA when n_tiles tiles are split over `ctas` CTAs in
// contiguous runs (neighbouring tiles mostly share a batch, hence its tables).
__device__ __forceinline__ void cta_tiles(int64_t n_tiles, int64_t cta, int64_t ctas,
                                          int64_t& first, int64_t& end) {
  const int64_t per = (n_tiles + ctas - 1) / ctas;
  first = cta * per;
  end = first + per < n_tiles ? first + per : n_tiles;
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

// "mse": one thread per block, blocks in memory order (coalesced 16-byte loads). With one
// global scale (!kPerBatch): one table, the blocks of all batches grid-stride. kPerBatch
// (p.gs_per_batch): tiles of kThreads consecutive blocks of all batches, a contiguous run of
// tiles per CTA; a tile may span several batches (with_batch_tables).
template <typename T, bool kSwizzle, bool kPerBatch>
__global__ void __launch_bounds__(kThreads) nvfp4_mse_search_kernel(const Nvfp4SearchParams p) {
  __shared__ BatchTables tabs;
  __shared__ float ring_buf[8 * kThreads];
  const Ring ring{ring_buf + threadIdx.x, kThreads};
  NoStats st;
  const int64_t n_blocks = p.batches * p.per_batch;
  auto search_block = [&](int64_t blk, const float (&v)[16], const float* tab_osc,
                          const float* tab_s, float gs, float inv_gs) {
    const uint32_t byte = nvfp4_choose(v, gs, inv_gs, tab_osc, tab_s, nullptr, ring, ring, st);
    const int64_t row = blk / p.kb;
    const int64_t c = blk - row * p.kb;
    const int64_t batch = row / p.rows;
    finish_block<kSwizzle>(p, v, blk, batch, row - batch * p.rows, c, byte, tab_osc, gs, inv_gs);
  };
  if constexpr (!kPerBatch) {  // one table; the blocks grid-stride
    const float gs = __ldg(p.gs);
    const float inv_gs = __frcp_rn(gs);
    fill_tables(p, tabs, 0, 1);
    __syncthreads();
    for (int64_t blk = int64_t(blockIdx.x) * kThreads + threadIdx.x; blk < n_blocks;
         blk += int64_t(gridDim.x) * kThreads) {
      float v[16];
      load_block<T>(p.x, blk, v);
      search_block(blk, v, tabs.osc[0], tabs.s[0], gs, inv_gs);
    }
  } else {  // tiles of kThreads blocks, a contiguous run of them per CTA
    HeldTables held;
    int64_t tile, tile_end;
    cta_tiles((n_blocks + kThreads - 1) / kThreads, blockIdx.x, gridDim.x, tile, tile_end);
    for (; tile < tile_end; ++tile) {
      const int64_t t0 = tile * kThreads;
      const int64_t blk = t0 + threadIdx.x;
      const bool active = blk < n_blocks;
      const int64_t last = (t0 + kThreads < n_blocks ? t0 + kThreads : n_blocks) - 1;
      float v[16];
      if (active) load_block<T>(p.x, blk, v);
      with_batch_tables(p, tabs, held, t0 / p.per_batch, last / p.per_batch, active,
                        (active ? blk : last) / p.per_batch,
                        [&](const float* tab_osc, const float* tab_s, float gs, float inv_gs) {
                          search_block(blk, v, tab_osc, tab_s, gs, inv_gs);
                        });
    }
  }
  if (kSwizzle) zero_row_padding(p);
}

// The fp64 bounds of column group j of the Hessian (hessian_group_bounds), once per group:
// one CTA of 32 threads per group (grid-stride), thread 0 computes, all copy out.
__global__ void __launch_bounds__(32) nvfp4_hessian_bounds_kernel(const float* __restrict__ hessian,
                                                                  HessBounds* __restrict__ out,
                                                                  int64_t kb) {
  __shared__ float h_s[256], w_s[16], u_s[256];
  __shared__ HessScalars k_s;
  __shared__ double work_s[528];
  for (int64_t j = blockIdx.x; j < kb; j += gridDim.x) {
    __syncthreads();
    for (int t = threadIdx.x; t < 256; t += blockDim.x) {
      h_s[t] = __ldg(hessian + j * 256 + t);
      u_s[t] = 0.0f;
    }
    __syncthreads();
    if (threadIdx.x == 0) k_s = hessian_group_bounds(h_s, w_s, u_s, work_s);
    __syncthreads();
    HessBounds& o = out[j];
    for (int t = threadIdx.x; t < 256; t += blockDim.x) o.U[t] = u_s[t];
    if (threadIdx.x < 16) o.w[threadIdx.x] = w_s[threadIdx.x];
    if (threadIdx.x == 0) o.k = k_s;
  }
}

// "hessian": a CTA owns one column group j (grid.x) and a contiguous run of tiles (grid.y) of
// kThreads rows of all batches (flat row R = batch * rows + r); a thread owns one row of the
// tile. The group's H, its bound weights and Cholesky factor (from nvfp4_hessian_bounds_kernel)
// sit in shared memory and every read of them is a broadcast.
template <typename T, bool kSwizzle>
__global__ void __launch_bounds__(kThreads) nvfp4_hessian_search_kernel(const Nvfp4SearchParams p) {
  __shared__ __align__(16) float h_s[256];
  __shared__ float w_s[16];
  __shared__ __align__(16) float u_s[256];
  __shared__ HessScalars k_s;
  __shared__ BatchTables tabs;
  __shared__ float col_buf[24 * kThreads];
  const Ring ring{col_buf + threadIdx.x, kThreads};
  const Column ei{col_buf + 8 * kThreads + threadIdx.x, kThreads};
  NoStats st;
  HeldTables held;
  const int64_t n_rows = p.batches * p.rows;
  int64_t tile_first, tile_end;
  cta_tiles(p.row_tiles, blockIdx.y, gridDim.y, tile_first, tile_end);
  for (int64_t j = blockIdx.x; j < p.kb; j += gridDim.x) {
    __syncthreads();
    for (int t = threadIdx.x; t < 256; t += blockDim.x) {
      h_s[t] = __ldg(p.hessian + j * 256 + t);
      u_s[t] = p.bounds[j].U[t];
    }
    if (threadIdx.x < 16) w_s[threadIdx.x] = p.bounds[j].w[threadIdx.x];
    if (threadIdx.x == 0) k_s = p.bounds[j].k;
    __syncthreads();
    const HessGroup hg{h_s, w_s, u_s, k_s};
    for (int64_t tile = tile_first; tile < tile_end; ++tile) {
      const int64_t t0 = tile * kThreads;
      const int64_t row = t0 + threadIdx.x;  // flat row of all batches
      const bool active = row < n_rows;
      const int64_t last = (t0 + kThreads < n_rows ? t0 + kThreads : n_rows) - 1;
      const int64_t b = (active ? row : last) / p.rows;
      const int64_t b_lo = p.gs_per_batch ? t0 / p.rows : 0;
      const int64_t b_hi = p.gs_per_batch ? last / p.rows : 0;
      const int64_t blk = row * p.kb + j;
      float v[16];
      if (active) load_block<T>(p.x, blk, v);
      with_batch_tables(p, tabs, held, b_lo, b_hi, active, p.gs_per_batch ? b : 0,
                        [&](const float* tab_osc, const float* tab_s, float gs, float inv_gs) {
        const uint32_t byte = nvfp4_choose(v, gs, inv_gs, tab_osc, tab_s, &hg, ring, ei, st);
        finish_block<kSwizzle>(p, v, blk, b, row - b * p.rows, j, byte, tab_osc, gs, inv_gs);
      });
    }
  }
  if (kSwizzle) zero_row_padding(p);
}

}  // namespace search
}  // namespace nvfp4
