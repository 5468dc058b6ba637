// The direct columnwise NVFP4 training quantize kernel (docs/spec.md sec. 8.1, 8.2, 8.4):
// train_quantize with axis=-2 (blocks of 16 along M, the operand x^T) and
// train_quantize_rowcol (both operands from one read), for 16-bit x and round to nearest,
// with 1-D or 16x16 2-D scales, the Hadamard transform (of the columnwise operand), linear or
// swizzled scales and global scales given, per batch or computed by the tile kernel's amax
// pass; without the tile kernel's fp32 staging through shared memory and its two barriers.
//
// The transpose is free in registers: a lane loads 16 rows x 8 columns of x (sixteen 16-byte
// loads, one per row), which are 8 whole blocks of x^T (one per column) and half of a block
// of x in each of its 16 rows. Work layout: a warp item is 32 rows (two row groups of 16) x
// kColSpan = 128 columns of one batch of x ([B, M, K], contiguous, M % 16 == 0, K % 8 == 0);
// lane l takes row group 2 p + l / 16 and columns 8 (l % 16) .. + 7 of the item, so each
// warp-wide load reads 2 rows x 256 contiguous bytes. A 16x16 tile (2-D scales), and a
// rowwise block, is lanes l and l ^ 1: one shuffle. Stores: the codes of column j of the
// two row groups (lanes l and l ^ 16, 8 bytes each) are adjacent in x^T; one shuffle per
// column pairs them, so each lane writes 16 bytes of one row of x^T per pair of columns
// (lanes below 16 the even columns, the others the odd ones); rowwise codes are 4 bytes per
// lane and row, 64 contiguous bytes per half-warp. The 16 loads of an item are issued at
// once (256 bytes per thread in flight); warps walk the items grid-stride. Stochastic
// rounding would need a Philox word per element of the 128 in registers beside the loaded
// bits: train_colwise_sr_kernel below takes those calls with 4 columns per lane.
#pragma once

#include <cstdint>
#include <type_traits>

#include "train/quantize.cuh"

namespace nvfp4 {
namespace train {

constexpr int kColThreads = 256;
constexpr int kColSpan = 128;  // columns of x per warp item (16 lanes x 8)

// Where a lane's columns of a warp item lie (both columnwise kernels): lane l takes row group
// grp = 2 pr + l / 16 of row pair pr and the kSpan / 16 columns from k = kSpan s +
// (l % 16) kSpan / 16 of column span s; lower_ok / upper_ok: the columns with the pair's
// group 2 pr / 2 pr + 1 are inside x (the same for lanes l and l ^ 16), ok: this lane's.
struct ColItem {
  int64_t b, grp, k;
  uint32_t pair;
  bool lower_ok, upper_ok, ok;
};

template <int kSpan>
__device__ __forceinline__ ColItem col_item(const TileParams& p, const ItemGrid& g,
                                            uint32_t item, int lane) {
  uint32_t b, pair, span;  // ItemGrid outer: row pairs (32 rows), inner: column spans
  g.split(item, b, pair, span);
  const int upper = lane >> 4;
  const int64_t groups = p.m / 16;
  ColItem it;
  it.b = b;
  it.pair = pair;
  it.grp = 2 * int64_t(pair) + upper;
  it.k = int64_t(span) * kSpan + (kSpan / 16) * (lane & 15);
  const bool col_ok = it.k < p.k;
  it.lower_ok = col_ok && 2 * int64_t(pair) < groups;
  it.upper_ok = col_ok && 2 * int64_t(pair) + 1 < groups;
  it.ok = upper ? it.upper_ok : it.lower_ok;
  return it;
}

// The low (hi = 0) or high 16-bit value of word w, as fp32 (exact widening).
template <typename T>
__device__ __forceinline__ float half_elem(uint32_t w, int hi) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __uint_as_float(hi ? (w & 0xFFFF0000u) : (w << 16));
  } else {
    const float2 h = __half22float2(*reinterpret_cast<const __half2*>(&w));
    return hi ? h.y : h.x;
  }
}

// Element j (0..7) of 8 16-bit values in a 16-byte vector, as fp32.
template <typename T>
__device__ __forceinline__ float vec_elem(const uint4& v, int j) {
  return half_elem<T>(j < 2 ? v.x : j < 4 ? v.y : j < 6 ? v.z : v.w, j & 1);
}

// The codes and scale bytes of columns j and j + 1 of a row pair's two groups into x^T
// (codes[h], sf[h]: column j + h of this lane's group, lane l ^ 16 holding the other group).
// The 8 bytes of codes of one column in the two groups are adjacent in x^T, and so are the
// two scale bytes (groups 2 pr and 2 pr + 1 of one row of x^T's scales, in either layout):
// one shuffle each pairs them, the lower lane storing column j, the upper one column j + 1,
// 16 bytes of codes and a 2-byte scale store where aligned.
__device__ __forceinline__ void store_column_pair(const TileParams& p, int64_t b, uint32_t pair,
                                                  int64_t k, int j, int upper, bool lower_ok,
                                                  bool upper_ok, const uint2 (&codes)[2],
                                                  const uint32_t (&sf)[2]) {
  const Operand& o = p.op[1];
  const uint2 send = upper ? codes[0] : codes[1];
  const uint2 got = make_uint2(__shfl_xor_sync(kFull, send.x, 16),
                               __shfl_xor_sync(kFull, send.y, 16));
  const uint32_t sf_got = __shfl_xor_sync(kFull, upper ? sf[0] : sf[1], 16);
  const uint2 lo = upper ? got : codes[0];  // group 2 pr
  const uint2 hi = upper ? codes[1] : got;  // group 2 pr + 1
  const uint32_t sf_lo = upper ? sf_got : sf[0], sf_hi = upper ? sf[1] : sf_got;
  // x^T row k + j + upper, elements 32 pr .. + 31: bytes (b K + row) M / 2 + 16 pr ..
  const int64_t half_m = p.m / 2, row = k + j + upper, g0 = 2 * int64_t(pair);
  uint8_t* dst = o.packed + (b * p.k + row) * half_m + 8 * g0;
  if (upper_ok && ((reinterpret_cast<uintptr_t>(dst) | half_m) & 15) == 0) {
    __stcs(reinterpret_cast<uint4*>(dst), make_uint4(lo.x, lo.y, hi.x, hi.y));
  } else {
    if (lower_ok) __stcs(reinterpret_cast<uint2*>(dst), lo);
    if (upper_ok) __stcs(reinterpret_cast<uint2*>(dst) + 1, hi);
  }
  uint8_t* sdst = o.scales + (p.swizzle ? b * o.mp * o.kp + swizzle_offset(row, g0, o.kp)
                                        : (b * p.k + row) * o.kb + g0);
  if (upper_ok && (reinterpret_cast<uintptr_t>(sdst) & 1) == 0) {
    *reinterpret_cast<uint16_t*>(sdst) = static_cast<uint16_t>(sf_lo | (sf_hi << 8));
  } else {
    if (lower_ok) sdst[0] = static_cast<uint8_t>(sf_lo);
    if (upper_ok) sdst[1] = static_cast<uint8_t>(sf_hi);
  }
}

// Column j of the lane's 16 x 8 elements, Hadamard-transformed when signs are given; returns
// the bits of its amax.
template <typename T>
__device__ __forceinline__ uint32_t colwise_block(const uint4 (&raw)[16], int j, bool hadamard,
                                                  const float* signs, float (&v)[16]) {
#pragma unroll
  for (int i = 0; i < 16; ++i) v[i] = vec_elem<T>(raw[i], j);
  return transformed_amax(v, hadamard, signs);
}

// train_quantize_rowcol: the rowwise operand p.op[0] (no transform) from the same loaded
// bits. Row i of the lane's 16 rows holds 8 elements of a block; lanes l and l ^ 1 hold its
// two halves (and the two halves of a 16x16 tile): the amax is one shuffle away, each lane
// writes its 4 bytes of codes and the even lane the scale byte.
template <typename T>
__device__ __forceinline__ void colwise_rowcol_rows(const TileParams& p, const uint4 (&raw)[16],
                                                    int64_t b, int64_t grp, int64_t k, bool ok) {
  const Operand& o = p.op[0];
  const float gs = __ldg(o.gs + (o.gs_per_batch ? b : 0));
  uint32_t tile_amax = 0;
  if (p.block_2d) {
#pragma unroll
    for (int i = 0; i < 16; ++i) {
#pragma unroll
      for (int j = 0; j < 8; ++j) tile_amax = max(tile_amax, abs_bits(vec_elem<T>(raw[i], j)));
    }
    tile_amax = max(tile_amax, __shfl_xor_sync(kFull, tile_amax, 1));
  }
  const int64_t cb = k / 16;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    float v[8];
    uint32_t amax = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      v[j] = vec_elem<T>(raw[i], j);
      amax = max(amax, abs_bits(v[j]));
    }
    amax = max(amax, __shfl_xor_sync(kFull, amax, 1));
    uint32_t sf;
    const uint2 codes = encode_block(v, p.block_2d ? tile_amax : amax, gs, false,
                                     [](int) { return 0u; }, sf);
    if (ok) {
      const int64_t m = 16 * grp + i, row = b * p.m + m;
      __stcs(reinterpret_cast<uint32_t*>(o.packed + (row * p.k + k) / 2), codes.x);
      if (((k / 8) & 1) == 0) {
        o.scales[p.swizzle ? b * o.mp * o.kp + swizzle_offset(m, cb, o.kp) : row * o.kb + cb] =
            static_cast<uint8_t>(sf);
      }
    }
  }
}

// The columnwise operand p.op[1] of every item, and with kRowcol (p.op[0] active:
// train_quantize_rowcol) the rowwise one, untransformed; then the swizzled padding; p.vec true,
// round to nearest, 16-bit x. 2 CTAs of 256 per SM (128 registers: the
// 64 of the loaded bits stay live through the math).
template <typename T, bool kRowcol>
__global__ void __launch_bounds__(kColThreads, 2)
    train_colwise_kernel(const TileParams p, const ItemGrid g) {
  static_assert(sizeof(T) == 2, "16-bit x: 8 columns per 16-byte load");
  __shared__ float s_signs[16];
  const Operand& o = p.op[1];
  load_signs(o, s_signs);
  const bool hadamard = o.signs != nullptr;
  const int lane = threadIdx.x & 31, upper = lane >> 4;
  const uint32_t n_warps = gridDim.x * (kColThreads / 32);
  for (uint32_t item = (blockIdx.x * kColThreads + threadIdx.x) >> 5; item < g.items;
       item += n_warps) {  // (warp-uniform)
    const auto [b, grp, k, pair, lower_ok, upper_ok, ok] = col_item<kColSpan>(p, g, item, lane);

    uint4 raw[16];
    const T* x = static_cast<const T*>(p.x) + (b * p.m + 16 * grp) * p.k + k;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      raw[i] = ok ? load_stream(x + i * p.k) : make_uint4(0u, 0u, 0u, 0u);
    }

    if constexpr (kRowcol) colwise_rowcol_rows<T>(p, raw, b, grp, k, ok);

    uint32_t tile_amax = 0;  // 2-D: the max over the 16x16 tile of lanes l and l ^ 1
    if (p.block_2d) {
      float v[16];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        tile_amax = max(tile_amax, colwise_block<T>(raw, j, hadamard, s_signs, v));
      }
      tile_amax = max(tile_amax, __shfl_xor_sync(kFull, tile_amax, 1));
    }
    const float gs = __ldg(o.gs + (o.gs_per_batch ? b : 0));
#pragma unroll
    for (int j = 0; j < 8; j += 2) {
      uint2 codes[2];
      uint32_t sf[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float v[16];
        const uint32_t amax = colwise_block<T>(raw, j + h, hadamard, s_signs, v);
        codes[h] = encode_block(v, p.block_2d ? tile_amax : amax, gs, false,
                                [](int) { return 0u; }, sf[h]);
      }
      store_column_pair(p, b, pair, k, j, upper, lower_ok, upper_ok, codes, sf);
    }
  }
  write_operand_padding(p);
}

// ---- stochastic rounding: 4 columns per lane ---------------------------------------------
//
// With stochastic rounding a lane takes 16 rows x 4 columns (eight-byte loads; a warp item is
// 32 rows x kColSpanSr = 64 columns, lane l: row group 2 p + l / 16, columns 4 (l % 16) .. + 3):
// the 4 columns are Hadamard-transformed into 64 fp32 registers and their multipliers
// computed first, then the rows are encoded in order, so that the single Philox call of a
// row (counter offset + e / 4 for its first element e = (b M + m) K + k, a multiple of 4: the
// words of exactly these 4 columns) serves its 4 columns at once, and, in
// train_quantize_rowcol, the 4 elements of the row's rowwise block that the lane holds
// (a rowwise block is lanes l .. l ^ 3: two shuffles; each lane writes 2 bytes of codes, the
// first of the 4 lanes the scale byte).
constexpr int kColSpanSr = 64;

template <typename T, bool kRowcol>
__global__ void __launch_bounds__(kColThreads, 2)
    train_colwise_sr_kernel(const TileParams p, const ItemGrid g) {
  static_assert(sizeof(T) == 2, "16-bit x: 4 columns per 8-byte load");
  const uint64_t seed = static_cast<uint64_t>(__ldg(p.seed));
  const uint64_t offset = static_cast<uint64_t>(__ldg(p.offset));
  __shared__ float s_signs[16];
  load_signs(p.op[1], s_signs);
  const Operand& o = p.op[1];
  const int lane = threadIdx.x & 31, upper = lane >> 4;
  const uint32_t n_warps = gridDim.x * (kColThreads / 32);
  for (uint32_t item = (blockIdx.x * kColThreads + threadIdx.x) >> 5; item < g.items;
       item += n_warps) {  // (warp-uniform)
    const auto [b, grp, k, pair, lower_ok, upper_ok, ok] = col_item<kColSpanSr>(p, g, item, lane);
    const int64_t row0 = b * p.m + 16 * grp;  // first row of the group in the flattened x

    uint2 raw[16];
    const T* x = static_cast<const T*>(p.x) + row0 * p.k + k;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      // (rowcol: cached in L1, where the row loop reads them again; keeping them in registers
      // through it would spill)
      const uint2* src = reinterpret_cast<const uint2*>(x + i * p.k);
      raw[i] = ok ? (kRowcol ? __ldca(src) : __ldcs(src)) : make_uint2(0u, 0u);
    }
    // the columnwise blocks, transformed, and their multipliers
    float t[4][16];
    uint32_t amax[4], sf[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int i = 0; i < 16; ++i) t[j][i] = half_elem<T>(j < 2 ? raw[i].x : raw[i].y, j & 1);
      if (o.signs != nullptr) hadamard16(t[j], s_signs);
      amax[j] = 0;
#pragma unroll
      for (int i = 0; i < 16; ++i) amax[j] = max(amax[j], abs_bits(t[j][i]));
    }
    if (p.block_2d) {  // the 16x16 tile: lanes l .. l ^ 3
      uint32_t m = max(max(amax[0], amax[1]), max(amax[2], amax[3]));
      m = max(m, __shfl_xor_sync(kFull, m, 1));
      m = max(m, __shfl_xor_sync(kFull, m, 2));
#pragma unroll
      for (int j = 0; j < 4; ++j) amax[j] = m;
    }
    const float gs = __ldg(o.gs + (o.gs_per_batch ? b : 0));
    float osc[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) osc[j] = block_multiplier(amax[j], gs, sf[j]);

    uint32_t row_tile = 0;  // rowcol, 2-D: the rowwise tile's amax (untransformed x)
    float rgs = 0.0f;
    if constexpr (kRowcol) {
      const Operand& r = p.op[0];
      rgs = __ldg(r.gs + (r.gs_per_batch ? b : 0));
      if (p.block_2d) {
#pragma unroll
        for (int i = 0; i < 16; ++i) {
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            row_tile = max(row_tile, abs_bits(half_elem<T>(j < 2 ? raw[i].x : raw[i].y, j & 1)));
          }
        }
        row_tile = max(row_tile, __shfl_xor_sync(kFull, row_tile, 1));
        row_tile = max(row_tile, __shfl_xor_sync(kFull, row_tile, 2));
      }
    }

    uint2 codes[4] = {};
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const int64_t e = (row0 + i) * p.k + k;
      const Philox4 w = sr_words(offset + static_cast<uint64_t>(e) / 4, seed);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint32_t code = encode_elem(t[j][i], osc[j], true, w.w[j]);
        if (i < 8) {
          codes[j].x |= code << (4 * i);
        } else {
          codes[j].y |= code << (4 * (i - 8));
        }
      }
      if constexpr (kRowcol) {  // the lane's 4 elements of row i's rowwise block
        const Operand& r = p.op[0];
        float v[4];
        uint32_t ra = 0;
        const uint2 xi =
            ok ? __ldca(reinterpret_cast<const uint2*>(x + i * p.k)) : make_uint2(0u, 0u);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          v[j] = half_elem<T>(j < 2 ? xi.x : xi.y, j & 1);
          ra = max(ra, abs_bits(v[j]));
        }
        ra = max(ra, __shfl_xor_sync(kFull, ra, 1));
        ra = max(ra, __shfl_xor_sync(kFull, ra, 2));
        uint32_t rsf;
        const float rosc = block_multiplier(p.block_2d ? row_tile : ra, rgs, rsf);
        uint32_t rc = 0;
        if (rosc == rosc) {  // a NaN multiplier: codes 0
#pragma unroll
          for (int j = 0; j < 4; ++j) rc |= encode_elem(v[j], rosc, true, w.w[j]) << (4 * j);
        }
        if (ok) {
          const int64_t row = row0 + i, cb = k / 16;
          *reinterpret_cast<uint16_t*>(r.packed + (row * p.k + k) / 2) = static_cast<uint16_t>(rc);
          if ((lane & 3) == 0) {
            r.scales[p.swizzle ? b * r.mp * r.kp + swizzle_offset(16 * grp + i, cb, r.kp)
                               : row * r.kb + cb] = static_cast<uint8_t>(rsf);
          }
        }
      }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {  // a NaN multiplier (scale 0x7F): codes 0
      if (osc[j] != osc[j]) codes[j] = make_uint2(0u, 0u);
    }
#pragma unroll
    for (int j = 0; j < 4; j += 2) {
      const uint2 c2[2] = {codes[j], codes[j + 1]};
      const uint32_t s2[2] = {sf[j], sf[j + 1]};
      store_column_pair(p, b, pair, k, j, upper, lower_ok, upper_ok, c2, s2);
    }
  }
  write_operand_padding(p);
}

}  // namespace train
}  // namespace nvfp4
