// E2M1 (FP4) elements, SPEC.md sec. 1. Software encode: Hopper and Ampere have no
// FP4 convert instruction, and this is bit-identical to the reference everywhere.
#pragma once

#include <cstdint>

namespace nvfp4 {

// fp32 -> 4-bit code: round to nearest, ties to the even code, saturating to 6.
// The comparisons place the ties: 0.25 -> 0, 0.75 -> 1.0, 1.25 -> 1.0, 1.75 -> 2.0,
// 2.5 -> 2.0, 3.5 -> 4.0, 5 -> 4.0. The sign is the fp32 sign bit (-0.0 -> 0x8).
// A NaN magnitude compares false everywhere and gives code 0 (its sign kept);
// non-finite blocks are caught before this and never reach it in practice.
__device__ __forceinline__ uint32_t e2m1_encode(float y) {
  const float a = fabsf(y);
  const uint32_t mag = (a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) +
                       (a >= 3.5f) + (a > 5.0f);
  return mag | ((__float_as_uint(y) >> 28) & 8u);
}

// 4-bit code -> fp32, exactly: {0, .5, 1, 1.5, 2, 3, 4, 6} with sign bit 3.
__device__ __forceinline__ float e2m1_decode(uint32_t code) {
  const uint32_t e = (code >> 1) & 3u, m = code & 1u;
  uint32_t bits = e ? ((e + 126u) << 23) | (m << 22) : (m ? 0x3F000000u : 0u);
  bits |= (code & 8u) << 28;
  return __uint_as_float(bits);
}

}  // namespace nvfp4
