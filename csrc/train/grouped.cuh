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
//    NVFP4 (grouped_nvfp4_kernel) splits the per-block work as the inference quantize does
//    (nvfp4/quantize.cuh): the kG lanes of a block handle kG vectors per round, lane q owns
//    the block of vector q (its group, scale byte, multiplier, scale store) and hands the
//    multiplier to the others with one shuffle.
// Torch-free device code; the launchers are in train/ops.cu.
#pragma once

#include <cstdint>

#include "core/bits.h"
#include "core/e8m0.h"
#include "core/swizzle.h"
#include "core/vec.cuh"
#include "mx/quantize.cuh"  // mx::block_scale, encode_elems, store_bytes, lanes_amax
#include "nvfp4/block.h"
#include "nvfp4/chunk.cuh"  // quant::chunk_amax_bits, group_max_scatter, encode_chunk

namespace nvfp4 {
namespace train {

constexpr int kGroupedThreads = 256;
constexpr int kGroupedUnroll = 4;  // 16-byte vectors in flight per thread

// The size of group g in the padded scale layout: roundup(n_g, 128), n_g = ends[g] - ends[g - 1]
// (ends[-1] = 0).
template <typename E>
__device__ __forceinline__ int64_t padded_group_rows(const E* ends, int64_t g) {
  const int64_t prev = g > 0 ? static_cast<int64_t>(ends[g - 1]) : 0;
  return (static_cast<int64_t>(ends[g]) - prev + 127) / 128 * 128;
}

// pstart[g] = sum_{h < g} padded_group_rows(h): the first row of group g in the padded scale
// layout. One thread (the path for more groups than kLocalGroups).
template <typename I>
__global__ void group_starts_kernel(const I* __restrict__ ends, int64_t groups,
                                    int64_t* __restrict__ pstart) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  int64_t acc = 0;
  for (int64_t g = 0; g < groups; ++g) {
    pstart[g] = acc;
    acc += padded_group_rows(ends, g);
  }
}

// Groups up to which row_groups_kernel<I, true> keeps the ends and pstart in shared memory
// (16 bytes a group: 48 KB, no opt-in needed).
constexpr int64_t kLocalGroups = 3072;

// Per row of x: its group (the number of ends <= row; groups for rows past the last end)
// and its row in the padded scale layout (-1 outside every group). kLocal: every CTA first
// copies the ends into shared memory and computes pstart there (a warp: a chunk of groups
// per lane, an exclusive scan of the chunk sums), so no separate group_starts_kernel runs;
// otherwise pstart comes from it.
template <typename I, bool kLocal>
__global__ void row_groups_kernel(const I* __restrict__ ends, int64_t groups,
                                  const int64_t* __restrict__ pstart, int64_t rows,
                                  int32_t* __restrict__ row_group, int64_t* __restrict__ row_dest) {
  extern __shared__ int64_t s_groups[];  // kLocal: ends [0, G), pstart [G, 2 G)
  if constexpr (kLocal) {
    int64_t* s_end = s_groups;
    int64_t* s_start = s_groups + groups;
    for (int64_t g = threadIdx.x; g < groups; g += blockDim.x) {
      s_end[g] = static_cast<int64_t>(ends[g]);
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      const int lane = threadIdx.x;
      const int64_t per = (groups + 31) / 32;
      const int64_t g0 = min(groups, lane * per), g1 = min(groups, g0 + per);
      int64_t sum = 0;
      for (int64_t g = g0; g < g1; ++g) sum += padded_group_rows(s_end, g);
      int64_t incl = sum;  // inclusive scan of the chunk sums over the lanes
#pragma unroll
      for (int d = 1; d < 32; d <<= 1) {
        const int64_t up = __shfl_up_sync(0xFFFFFFFFu, incl, d);
        if (lane >= d) incl += up;
      }
      int64_t acc = incl - sum;
      for (int64_t g = g0; g < g1; ++g) {
        s_start[g] = acc;
        acc += padded_group_rows(s_end, g);
      }
    }
    __syncthreads();
  }
  const int64_t* end_of = kLocal ? s_groups : nullptr;
  const int64_t* start_of = kLocal ? s_groups + groups : pstart;
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
       r += int64_t(gridDim.x) * blockDim.x) {
    int64_t lo = 0, hi = groups;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if ((kLocal ? end_of[mid] : static_cast<int64_t>(ends[mid])) <= r) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    row_group[r] = static_cast<int32_t>(lo);
    const int64_t start =
        lo > 0 ? (kLocal ? end_of[lo - 1] : static_cast<int64_t>(ends[lo - 1])) : 0;
    row_dest[r] = lo < groups ? start_of[lo] + r - start : -1;
  }
}

// amax[g] = max(amax[g], abs_bits of every element of the rows of group g): a warp per row,
// 4 loads in flight per lane.
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
    int64_t c = lane;
    for (; c + 3 * 32 < vpr; c += 4 * 32) {  // 4 loads in flight per lane
      uint4 v[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) v[u] = load_stream(xr + c + 32 * u);
#pragma unroll
      for (int u = 0; u < 4; ++u) m = max(m, quant::chunk_amax_bits<T>(v[u]));
    }
    for (; c < vpr; c += 32) m = max(m, quant::chunk_amax_bits<T>(load_stream(xr + c)));
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
  const int32_t* row_group;      // [rows]; null: MX with linear scales (rows below the last
                                 // end are inside a group: ends32 / ends64, one of them set)
  const int64_t* row_dest;       // [rows] (swizzled scales)
  const int32_t* ends32;         // the group ends (group_offsets) where row_group is null
  const int64_t* ends64;
  const float* gs;               // NVFP4: [groups]
  uint8_t* data;                 // [rows, k] (E4M3) or [rows, k / 2] (E2M1)
  uint8_t* scales;               // [rows, kb], or swizzled [scale_rows, kp] (zeroed before)
  int64_t kb, kp, scale_rows;
  bool swizzle;
};

// The scale byte sf of block column cb of x's row `row` (inside: the row is in a group; the
// swizzled rows of no group stay as zeroed).
__device__ __forceinline__ void store_group_scale(const GroupedParams& p, int64_t row,
                                                  int64_t cb, bool inside, uint32_t sf) {
  if (!p.swizzle) {
    p.scales[row * p.kb + cb] = static_cast<uint8_t>(inside ? sf : 0u);
  } else if (inside) {
    const int64_t dest = __ldg(p.row_dest + row);
    if (dest >= 0 && dest < p.scale_rows) {  // (offsets out of contract: no stray write)
      p.scales[swizzle_offset(dest, cb, p.kp)] = static_cast<uint8_t>(sf);
    }
  }
}

// MX (F = kMxE4m3 or kMxE2m1). 16-bit x: the 4 lanes of a block hold U = 4 vectors of 4
// blocks, and lane q does the per-block work of vector q's block (amax by
// quant::group_max_scatter, its row's group, the scale byte and its store), handing the byte
// to the others with one shuffle, as grouped_nvfp4_kernel does; fp32 x (8 lanes a block):
// every lane computes its block's byte. Without the row table (linear scales) a row is in a
// group iff it is below the last end.
template <typename T, GroupedFormat F, MxRounding R>
__global__ void __launch_bounds__(kGroupedThreads)
    grouped_quantize_kernel(const GroupedParams p) {
  static_assert(F != GroupedFormat::kNvfp4, "NVFP4: grouped_nvfp4_kernel");
  constexpr int V = Elem<T>::kPerVec;
  constexpr bool kE2M1 = F == GroupedFormat::kMxE2m1;
  constexpr int kLanes = mx::kBlock / V;    // lanes per block
  constexpr int kOut = kE2M1 ? V / 2 : V;  // output bytes per vector
  constexpr int U = kGroupedUnroll;
  constexpr int kW = (kOut + 3) / 4;       // output words per vector
  const int tid = threadIdx.x;
  const int64_t n = p.n_vec;
  const int64_t step = int64_t(gridDim.x) * kGroupedThreads * U;
  int64_t last_end = 0;
  if (p.row_group == nullptr && p.groups > 0) {
    last_end = p.ends64 != nullptr ? __ldg(p.ends64 + p.groups - 1)
                                   : static_cast<int64_t>(__ldg(p.ends32 + p.groups - 1));
  }
  auto inside_group = [&](int64_t row) {
    return p.row_group != nullptr ? __ldg(p.row_group + row) < p.groups : row < last_end;
  };
  for (int64_t base = int64_t(blockIdx.x) * kGroupedThreads * U + tid; base - tid < n;
       base += step) {
    uint4 raw[U];
#pragma unroll
    for (int i = 0; i < U; ++i) {
      const int64_t v = base + i * kGroupedThreads;
      raw[i] = v < n ? load_stream(static_cast<const T*>(p.x) + v * V)
                     : make_uint4(0u, 0u, 0u, 0u);
    }
    if constexpr (kLanes == U) {
      const int q = tid & (kLanes - 1);
      uint32_t am[U];
#pragma unroll
      for (int i = 0; i < U; ++i) am[i] = quant::chunk_amax_bits<T>(raw[i]);
      const uint32_t amax = quant::group_max_scatter<kLanes>(am, q);
      const int64_t vm = base + q * kGroupedThreads;
      uint32_t mine = 0x100u;  // the scale byte of vector q's block; 0x100: no group
      if (vm < n) {
        const int64_t row = p.fast ? int64_t(p.div_vpr.div(static_cast<uint32_t>(vm)))
                                   : vm / p.vec_per_row;
        const bool inside = inside_group(row);
        const uint32_t sf = mx::block_scale<kE2M1, R>(amax);
        store_group_scale(p, row, (vm - row * p.vec_per_row) / kLanes, inside, sf);
        if (inside) mine = sf;
      }
#pragma unroll
      for (int i = 0; i < U; ++i) {
        const uint32_t sf = __shfl_sync(quant::kFullMask, mine, i, kLanes);
        const int64_t v = base + i * kGroupedThreads;
        if (v >= n) continue;
        uint32_t w[kW] = {};
        if (sf != 0x100u) {
          float f[V];
          unpack_vec<T>(raw[i], f);
          const auto e = mx::encode_elems<kE2M1, V>(f, e8m0_inverse(sf), sf == mx::kNanByte);
#pragma unroll
          for (int j = 0; j < kW; ++j) w[j] = e.w[j];
        }
        mx::store_bytes<kOut>(p.data + v * kOut, w);
      }
    } else {
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
        const bool inside = inside_group(row);
        uint32_t sf = mx::block_scale<kE2M1, R>(amax), w[kW];
        const auto e = mx::encode_elems<kE2M1, V>(f, e8m0_inverse(sf), sf == mx::kNanByte);
#pragma unroll
        for (int j = 0; j < kW; ++j) w[j] = inside ? e.w[j] : 0u;
        if (!inside) sf = 0;
        mx::store_bytes<kOut>(p.data + v * kOut, w);
        if (tid % kLanes == 0) {
          const int64_t cb = (v - row * p.vec_per_row) / kLanes;
          store_group_scale(p, row, cb, inside, sf);
        }
      }
    }
  }
}

// NVFP4 (E2M1, E4M3 scale per 16, the global scale of the row's group).
template <typename T>
__global__ void __launch_bounds__(kGroupedThreads) grouped_nvfp4_kernel(const GroupedParams p) {
  constexpr int V = Elem<T>::kPerVec;
  constexpr int kG = 16 / V;  // lanes per block
  constexpr int U = kGroupedUnroll;
  constexpr int kR = U / kG;  // rounds of kG vectors
  const int tid = threadIdx.x, q = tid & (kG - 1);
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
    for (int r = 0; r < kR; ++r) {
      float f[kG][V];
      uint32_t am[kG];
#pragma unroll
      for (int j = 0; j < kG; ++j) {
        am[j] = quant::chunk_amax_bits<T>(raw[r * kG + j]);
        unpack_vec<T>(raw[r * kG + j], f[j]);
      }
      // The block of vector r kG + q: its amax, then (inside x) its group's scale.
      const uint32_t amax = quant::group_max_scatter<kG>(am, q);
      const int64_t vm = base + (r * kG + q) * kGroupedThreads;
      float osc = __uint_as_float(0x7FC00000u);  // NaN: codes 0 (no group, or past x)
      if (vm < n) {
        const int64_t row = p.fast ? int64_t(p.div_vpr.div(static_cast<uint32_t>(vm)))
                                   : vm / p.vec_per_row;
        const int32_t g = __ldg(p.row_group + row);
        const bool inside = g < p.groups;
        uint32_t sf = 0;
        if (inside) {
          const float gs = __ldg(p.gs + g);
          sf = nvfp4_block_scale(amax, gs);
          osc = nvfp4_osc(sf, rn_rcp(gs));
        }
        store_group_scale(p, row, (vm - row * p.vec_per_row) / kG, inside, sf);
      }
#pragma unroll
      for (int j = 0; j < kG; ++j) {
        const float o = __shfl_sync(quant::kFullMask, osc, j, kG);
        const int u = r * kG + j;
        const int64_t v = base + u * kGroupedThreads;
        if (v >= n) continue;
        // x * osc is NaN only for 0 * inf: a multiplier of +inf takes the NaN-safe rounding
        uint32_t w = 0;
        if (o == o) {
          w = f32_bits(o) == kInfBits ? quant::encode_chunk<T, true>(raw[u], f[j], o)
                                      : quant::encode_chunk<T, false>(raw[u], f[j], o);
        }
        mx::store_bytes<V / 2>(p.data + v * (V / 2), &w);
      }
    }
  }
}

}  // namespace train
}  // namespace nvfp4
