// E8M0 block scales of the MX formats (docs/spec.md sec. 3), computed on the bits: never log2,
// never a float8_e8m0fnu cast.
#pragma once

#include "core/bits.h"

namespace nvfp4 {

enum class MxRounding : int { kRceil = 0, kFloor = 1 };

// Scale byte for a block of amax `amax_bits` (bits of a finite |x| max, sign clear).
// rceil: d = RN(amax / Emax) rounded up to a power of two on the bits (never clips).
// floor: the biased exponent of amax minus emax, at least 0 (OCP MX v1.0; can clip).
// amax == 0 gives 0 in both.
template <MxRounding R>
NVFP4_HD uint32_t e8m0_scale(uint32_t amax_bits, float emax_value, int emax) {
  if (R == MxRounding::kRceil) {
    const uint32_t d = f32_bits(rn_div(f32_from_bits(amax_bits), emax_value));
    return ((d + 0x007FFFFFu) & 0x7F800000u) >> 23;
  } else {
    const int e = static_cast<int>(amax_bits >> 23) - emax;
    return e > 0 ? static_cast<uint32_t>(e) : 0u;
  }
}

// 2^(127 - b) for b in 0..254, exactly (b = 254 is the fp32 subnormal 2^-127):
// the multiplier that brings a block into the element range.
NVFP4_HD float e8m0_inverse(uint32_t b) {
  return f32_from_bits(b < 254u ? (254u - b) << 23 : 0x00400000u);
}

// 2^(b - 127), exactly; b = 255 is NaN. The decode multiplier.
NVFP4_HD float e8m0_decode(uint32_t b) {
  if (b == 255u) return f32_from_bits(0x7FC00000u);
  return f32_from_bits(b ? b << 23 : 0x00400000u);
}

}  // namespace nvfp4
