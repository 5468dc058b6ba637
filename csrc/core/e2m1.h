// E2M1 (FP4) elements, docs/spec.md sec. 1. Software rounding: Hopper and Ampere have no FP4
// convert instruction, and this is bit-identical to the reference everywhere.
//
// The rounding is written once, as the reference's _e2m1_round_mag formulates it: with
// a = min(|y|, 6) (kNanSafe: a NaN gives 0, as max/min return the non-NaN operand) and
// C = 2^(max(e, 0) + 22) where 2^e is the binade of a, RN(a + C) rounds a to a multiple of
// the E2M1 spacing 2^(max(e, 0) - 1) with IEEE ties-to-even, which is the ties-to-even-code
// rule of docs/spec.md sec. 1 (0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4,
// 5 -> 4, above 5 and +inf -> 6). Two projections of that one sum: the code (bits of the
// sum minus bits of C count spacings, plus 2e) and the value (the sum minus C, exact).
// About 5 instructions per element, against about 24 for a chain of 7 comparisons.
// tests/cpp/test_core.cpp checks both against the comparison chain of docs/spec.md sec. 1:
// every fp32 in the binades where the code changes ([2^-3, 2^4), both signs) and every 251st
// fp32 elsewhere (NaN inputs for the kNanSafe variant only).
#pragma once

#include "core/bits.h"

namespace nvfp4 {

// min(|y|, 6); kNanSafe = false only for y that is never NaN (then the max with 0, which
// maps NaN to 0, is a no-op and is left out).
template <bool kNanSafe>
NVFP4_HD float e2m1_clamp_mag(float y) {
  return fminf(kNanSafe ? fmaxf(fabsf(y), 0.0f) : fabsf(y), 6.0f);
}

// Bits of C = 2^(max(e, 0) + 22) for a clamped magnitude a.
NVFP4_HD uint32_t e2m1_magic_bits(float a) {
  const uint32_t e = (f32_bits(a) & 0x7F800000u) + (22u << 23);
  const uint32_t lo = 0x3F800000u + (22u << 23);
  return e > lo ? e : lo;
}

// Magnitude code 0..7 of y (the code of the E2M1 magnitude nearest |y|). The sum
// RN(a + C) - C counts steps of the binade's spacing; adding 2 * (binade) makes it the code.
template <bool kNanSafe = true>
NVFP4_HD uint32_t e2m1_mag_code(float y) {
  const float a = e2m1_clamp_mag<kNanSafe>(y);
  const uint32_t cb = e2m1_magic_bits(a);
  const uint32_t sb = f32_bits(rn_add(a, f32_from_bits(cb)));
  return sb - cb + ((cb >> 22) - 298u);
}

// The E2M1 magnitude nearest |y| as fp32.
template <bool kNanSafe = true>
NVFP4_HD float e2m1_mag_value(float y) {
  const float a = e2m1_clamp_mag<kNanSafe>(y);
  const float c = f32_from_bits(e2m1_magic_bits(a));
  return rn_sub(rn_add(a, c), c);
}

// 4-bit code of y (not NaN): magnitude code, sign from the fp32 sign bit (-0.0 -> 0x8).
NVFP4_HD uint32_t e2m1_encode(float y) {
  return e2m1_mag_code<false>(y) | ((f32_bits(y) >> 28) & 8u);
}

// Code 0..7 of a magnitude already on the E2M1 grid (+0, 0.5, 1, 1.5, 2, 3, 4, 6): from 1.0
// up, (bits >> 22) - 0xFC counts the codes.
NVFP4_HD uint32_t e2m1_code_of(float q) {
  const uint32_t b = f32_bits(q);
  return b == 0u ? 0u : (b == 0x3F000000u ? 1u : (b >> 22) - 0xFCu);
}

// 4-bit code -> fp32, exactly: {0, .5, 1, 1.5, 2, 3, 4, 6} with sign bit 3.
NVFP4_HD float e2m1_decode(uint32_t code) {
  const uint32_t e = (code >> 1) & 3u, m = code & 1u;
  uint32_t bits = e ? ((e + 126u) << 23) | (m << 22) : (m ? 0x3F000000u : 0u);
  bits |= (code & 8u) << 28;
  return f32_from_bits(bits);
}

// e2m1_decode of the code in bits 31..28 of t: an arithmetic shift puts the sign at bit 31
// and the magnitude bits at 24..22, which read as e2m1 * 2^-126 (exactly, subnormals
// included); the product with 2^126 is exact. Two instructions fewer than e2m1_decode
// where the code sits at the top of a word (the NVFP4 dequantize).
NVFP4_HD float e2m1_decode_top(uint32_t t) {
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(t) >> 6) & 0x81C00000u;
  return rn_mul(f32_from_bits(bits), 0x1p126f);
}

}  // namespace nvfp4
