// Grouped (MoE) quantize kernels (docs/spec.md sec. 8.5): x [T, K] holds tokens sorted by
// group, group_offsets [G] on the device the end row of each group. Nothing is read on the
// host (CUDA-graph safe): a one-thread kernel turns the offsets into each group's first row
// in the 128-row-padded scale layout, a per-row kernel finds each row's group (a binary
// search, as torch.bucketize(right=True)) and its padded scale row, then
//  * NVFP4: (global scale computed) a warp per row folds the row's amax into its group's
//    slot with atomicMax, a small kernel turns the G maxima into global scales; then
//  * the quantize kernel: one thread per 16-byte vector of x (8 bf16/fp16 or 4 fp32), the
//    lanes of one block (16 elements for NVFP4, 32 for MX) adjacent, their amax combined
//    with shuffles; 4 vectors in flight per thread; rows outside every group get zero bytes.
// Torch-free device code; the launchers are in train/ops.cu.
#pragma once

#include <cstdint>

#include "core/bits.h"
#include "core/e8m0.h"
#include "core/swizzle.h"
#include "core/vec.cuh"
#include "mx/quantize.cuh"  // mx::block_scale, encode_elems, store_bytes, lanes_amax
#include "nvfp4/block.h"
#include "train/rng.h"  // e2m1_encode_nearest

namespace nvfp4 {
namespace train {

constexpr int kGroupedThreads = 256;
constexpr int kGroupedUnroll = 4;  // 16-byte vectors in flight per thread

// pstart[g] = sum_{h < g} roundup(n_h, 128), n_h = ends[h] - ends[h - 1] (ends[-1] = 0): the
// first row of group g in the padded scale layout. One thread (G is small).
template <typename I>
__global__ void group_starts_kernel(const I* __restrict__ ends, int64_t groups,
                                    int64_t* __restrict__ pstart) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  int64_t acc = 0, prev = 0;
  for (int64_t g = 0; g < groups; ++g) {
    pstart[g] = acc;
    const int64_t end = static_cast<int64_t>(ends[g]);
    acc += (end - prev + 127) / 128 * 128;
    prev = end;
  }
}

// Per row of x: its group (the number of ends <= row; groups for rows past the last end)
// and its row in the padded scale layout (-1 outside every group).
template <typename I>
__global__ void row_groups_kernel(const I* __restrict__ ends, int64_t groups,
                                  const int64_t* __restrict__ pstart, int64_t rows,
                                  int32_t* __restrict__ row_group, int64_t* __restrict__ row_dest) {
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
       r += int64_t(gridDim.x) * blockDim.x) {
    int64_t lo = 0, hi = groups;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (static_cast<int64_t>(ends[mid]) <= r) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    row_group[r] = static_cast<int32_t>(lo);
    const int64_t start = lo > 0 ? static_cast<int64_t>(ends[lo - 1]) : 0;
    row_dest[r] = lo < groups ? pstart[lo] + r - start : -1;
  }
}

// amax[g] = max(amax[g], abs_bits of every element of the rows of group g): a warp per row.
template <typename T>
__global__ void __launch_bounds__(kGroupedThreads)
    group_amax_kernel(const T* __restrict__ x, int64_t rows, int64_t k,
                      const int32_t* __restrict__ row_group, int64_t groups,
                      uint32_t* __restrict__ amax) {
  constexpr int V = Elem<T>::kPerVec;
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  const int64_t vpr = k / V;
  for (int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5); r < rows;
       r += warps) {
    const int32_t g = __ldg(row_group + r);
    if (g >= groups) continue;  // the whole warp: rows past the last group
    const uint4* xr = reinterpret_cast<const uint4*>(x + r * k);
    uint32_t m = 0;
    for (int64_t c = lane; c < vpr; c += 32) {
      float f[V];
      unpack_vec<T>(load_stream(xr + c), f);
#pragma unroll
      for (int i = 0; i < V; ++i) m = max(m, abs_bits(f[i]));
    }
    m = __reduce_max_sync(0xFFFFFFFFu, m);
    if (lane == 0 && m != 0) atomicMax(amax + g, m);
  }
}

// The element format of a grouped quantize: NVFP4 (E2M1, E4M3 scale per 16, a global scale
// per group) or MX (E4M3 / E2M1 elements, E8M0 scale per 32).
enum class GroupedFormat : int { kNvfp4 = 0, kMxE4m3 = 1, kMxE2m1 = 2 };

struct GroupedParams {
  const void* x;                 // contiguous [rows, k], 16-byte aligned
  int64_t rows, k, groups;
  int64_t n_vec, vec_per_row;    // 16-byte vectors of x, per row
  FastDiv div_vpr;               // / vec_per_row, when n_vec < 2^31
  bool fast;
  const int32_t* row_group;      // [rows]
  const int64_t* row_dest;       // [rows]
  const float* gs;               // NVFP4: [groups]
  uint8_t* data;                 // [rows, k] (E4M3) or [rows, k / 2] (E2M1)
  uint8_t* scales;               // [rows, kb], or swizzled [scale_rows, kp] (zeroed before)
  int64_t kb, kp, scale_rows;
  bool swizzle;
};

template <typename T, GroupedFormat F, MxRounding R>
__global__ void __launch_bounds__(kGroupedThreads)
    grouped_quantize_kernel(const GroupedParams p) {
  constexpr int V = Elem<T>::kPerVec;
  constexpr bool kNv = F == GroupedFormat::kNvfp4;
  constexpr bool kE2M1 = F != GroupedFormat::kMxE4m3;
  constexpr int kLanes = (kNv ? 16 : mx::kBlock) / V;  // lanes per block
  constexpr int kOut = kE2M1 ? V / 2 : V;              // output bytes per vector
  constexpr int U = kGroupedUnroll;
  const int tid = threadIdx.x;
  const int64_t n = p.n_vec;
  const int64_t step = int64_t(gridDim.x) * kGroupedThreads * U;
  for (int64_t base = int64_t(blockIdx.x) * kGroupedThreads * U + tid; base - tid < n;
       base += step) {
    uint4 raw[U];
#pragma unroll
    for (int i = 0; i < U; ++i) {
      const int64_t v = base + i * kGroupedThreads;
      raw[i] = v < n ? load_stream(static_cast<const T*>(p.x) + v * V)
                     : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int i = 0; i < U; ++i) {
      const int64_t v = base + i * kGroupedThreads;
      const bool valid = v < n;
      float f[V];
      unpack_vec<T>(raw[i], f);
      const uint32_t amax = mx::lanes_amax<kLanes>(f);
      if (!valid) continue;
      const int64_t row = p.fast ? int64_t(p.div_vpr.div(static_cast<uint32_t>(v)))
                                 : v / p.vec_per_row;
      const int32_t g = __ldg(p.row_group + row);
      const bool inside = g < p.groups;
      uint32_t sf, w[(kOut + 3) / 4];
      if constexpr (kNv) {
        const float gs = inside ? __ldg(p.gs + g) : 1.0f;
        sf = nvfp4_block_scale(amax, gs);
        const float osc = nvfp4_osc(sf, rn_rcp(gs));
        w[0] = 0;
        if (osc == osc) {  // a NaN multiplier (scale 0x7F): codes 0
#pragma unroll
          for (int j = 0; j < V; ++j) w[0] += e2m1_encode_nearest_at_nibble(f[j], osc, j);
        }
      } else {
        sf = mx::block_scale<kE2M1, R>(amax);
        const auto e = mx::encode_elems<kE2M1, V>(f, e8m0_inverse(sf), sf == mx::kNanByte);
#pragma unroll
        for (int j = 0; j < (kOut + 3) / 4; ++j) w[j] = e.w[j];
      }
      if (!inside) {
        sf = 0;
#pragma unroll
        for (int j = 0; j < (kOut + 3) / 4; ++j) w[j] = 0;
      }
      mx::store_bytes<kOut>(p.data + v * kOut, w);
      if (tid % kLanes == 0) {
        const int64_t cb = (v - row * p.vec_per_row) / kLanes;
        if (!p.swizzle) {
          p.scales[row * p.kb + cb] = static_cast<uint8_t>(sf);
        } else if (inside) {
          const int64_t dest = __ldg(p.row_dest + row);
          if (dest >= 0 && dest < p.scale_rows) {  // (offsets out of contract: no stray write)
            p.scales[swizzle_offset(dest, cb, p.kp)] = static_cast<uint8_t>(sf);
          }
        }
      }
    }
  }
}

}  // namespace train
}  // namespace nvfp4
