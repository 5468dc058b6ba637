// The MX scale-search kernel (mx_quantize with scale_method "mse", docs/spec.md sec. 5 over E8M0
// bytes): one thread per 32-element block runs mx_choose (search/choose.h), then encodes
// the block. Launched from mx/ops.cu.
#pragma once

#include <cstdint>

#include "core/e4m3.h"
#include "core/swizzle.h"
#include "core/vec.cuh"
#include "search/choose.h"

namespace nvfp4 {
namespace search {

struct MxSearchParams {
  const void* x;   // contiguous [batches, rows, k]
  uint8_t* data;   // E2M1: [.., k / 2]; E4M3: [.., k]
  uint8_t* scales; // linear [batches, rows, kb] or swizzled [batches, mp, kp]
  int64_t batches, rows, kb, mp, kp;
  int64_t n_blocks;
};


// One thread per 32-element block: naive byte (rceil / floor), search, encode, store.
template <typename T, bool kE2M1, MxRounding kR, bool kSwizzle>
__global__ void __launch_bounds__(kThreads) mx_mse_search_kernel(const MxSearchParams p) {
  NoStats st;
  for (int64_t blk = int64_t(blockIdx.x) * kThreads + threadIdx.x; blk < p.n_blocks;
       blk += int64_t(gridDim.x) * kThreads) {
    float v[32];
    load_block<T>(p.x, blk, v);
    uint32_t amax_bits = 0;
#pragma unroll
    for (int i = 0; i < 32; ++i) amax_bits = max(amax_bits, abs_bits(v[i]));
    const bool finite = amax_bits < kInfBits;
    const uint32_t b0 = finite ? e8m0_scale<kR>(amax_bits, kE2M1 ? 6.0f : 448.0f, kE2M1 ? 2 : 8)
                               : 255u;
    const uint32_t b = mx_choose<kE2M1>(v, b0, st);
    const float inv = e8m0_inverse(b);
    if (kE2M1) {
      uint32_t w[4] = {0u, 0u, 0u, 0u};
      if (finite) {
#pragma unroll
        for (int i = 0; i < 32; ++i) {
          const float y = __fmul_rn(v[i], inv);
          const uint32_t code = e2m1_code_of(e2m1_mag_value<false>(fabsf(y))) | ((f32_bits(y) >> 28) & 8u);
          w[i / 8] |= code << (4 * (i % 8));
        }
      }
      __stcs(reinterpret_cast<uint4*>(p.data) + blk, make_uint4(w[0], w[1], w[2], w[3]));
    } else {
      uint32_t w[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const uint32_t lo = e4m3x2_encode(__fmul_rn(v[4 * i], inv), __fmul_rn(v[4 * i + 1], inv));
        const uint32_t hi =
            e4m3x2_encode(__fmul_rn(v[4 * i + 2], inv), __fmul_rn(v[4 * i + 3], inv));
        w[i] = finite ? (lo & 0xFFFFu) | (hi << 16) : 0u;
      }
      uint4* d = reinterpret_cast<uint4*>(p.data) + 2 * blk;
      __stcs(d, make_uint4(w[0], w[1], w[2], w[3]));
      __stcs(d + 1, make_uint4(w[4], w[5], w[6], w[7]));
    }
    if (!kSwizzle) {
      p.scales[blk] = static_cast<uint8_t>(b);
    } else {
      const int64_t row = blk / p.kb;
      const int64_t c = blk - row * p.kb;
      const int64_t batch = row / p.rows;
      uint8_t* s = p.scales + batch * p.mp * p.kp;
      const int64_t r = row - batch * p.rows;
      s[swizzle_offset(r, c, p.kp)] = static_cast<uint8_t>(b);
      if (c + 1 == p.kb) {
        for (int64_t j = p.kb; j < p.kp; ++j) s[swizzle_offset(r, j, p.kp)] = 0;
      }
    }
  }
  if (kSwizzle) {
    zero_swizzled_row_padding(p.scales, p.batches, p.rows, p.mp, p.kp,
                              int64_t(blockIdx.x) * kThreads + threadIdx.x,
                              int64_t(gridDim.x) * kThreads);
  }
}

}  // namespace search
}  // namespace nvfp4
