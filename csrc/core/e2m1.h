// E2M1 (FP4) elements, docs/spec.md sec. 1. Software rounding: Hopper and Ampere have no FP4
// convert instruction, and this is bit-identical to the reference everywhere.
//
// The rounding, as the reference's _e2m1_round_mag formulates it: a = min(|y|, 6) (kNanSafe:
// a NaN gives 0, as max/min return the non-NaN operand), rounded to a multiple of the E2M1
// spacing 2^(E - 1), E = max(e, 0) where 2^e is the binade of a, with IEEE ties-to-even,
// which is the ties-to-even-code rule of docs/spec.md sec. 1 (0.25 -> 0, 0.75 -> 1,
// 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4, above 5 and +inf -> 6).
//
// The code (e2m1_mag_code_shl22): with c = max(a, 1.5) * 2^-104, s = RN(c - a * 2^-126) (one
// FMA: the product is exact inside it) and v = c - s (exact), v = q * 2^-126 where q is the
// E2M1 magnitude nearest a, and the fp32 bits of v are code << 22: E2M1 values below 1 (0,
// 0.5) become fp32 subnormals (0, 2^22 ulps of 2^-149), those from 1 up normals with the
// same 1-bit mantissa (the layout of e2m1_decode_top in reverse). Why: c lies in the binade
// 2^(E - 104), whose ulp 2^(E - 127) is the spacing 2^(E - 1) scaled by 2^-126, so RN rounds
// a to the spacing; any c of that binade works, not only its power of two: c is a multiple
// of its ulp; at a tie a is an odd multiple of 2^(E - 2), so c (a * 2^-104, or
// 1.5 * 2^-104 below 1.5) has an even mantissa and RN's even result is the even count of
// spacings, the even code; s leaves the binade of c only for a within 2 ulps of 2^E
// (E >= 1), where it lands on the finer grid of the binade below at the value that still
// gives q = 2^E. c is one integer max-add on the bits of a (VIADDMNMX on sm_90), no
// exponent mask, and the bits of v are zero outside 22..24, so a caller packing nibbles
// shifts them straight into place (e2m1_shl22_at_nibble, fused into its add). About 4
// instructions per element (5 NaN-safe) where the shift fuses, against 6 (7) for the
// previous formulation (code = bits(RN(a + C)) - bits(C) + 2E with C = 2^(E + 22)) and
// about 24 for a chain of 7 comparisons. Device code must keep fp32 subnormals (no -ftz,
// as the build). The value (e2m1_mag_value) keeps RN(a + C) - C, C = 2^(E + 22).
// tests/cpp/test_core.cpp checks the code and value against the comparison chain of
// docs/spec.md sec. 1 (every fp32 in the binades where the code changes, [2^-3, 2^4), both
// signs, every 251st fp32 elsewhere; NaN inputs for the kNanSafe variant only), and
// tests/cpp/test_e2m1_forms.cpp against the previous formulation, kept there, on every
// value a = min(|y|, 6) can take plus a strided sweep of all 2^32 inputs (all of them with
// --full).
#pragma once

#include "core/bits.h"

namespace nvfp4 {

// min(|y|, 6); kNanSafe = false only for y that is never NaN (then the max with 0, which
// maps NaN to 0, is a no-op and is left out).
template <bool kNanSafe>
NVFP4_HD float e2m1_clamp_mag(float y) {
  return fminf(kNanSafe ? fmaxf(fabsf(y), 0.0f) : fabsf(y), 6.0f);
}

// max(a, 1.5) * 2^kShift for a clamped magnitude a (0 <= a <= 6), kShift in [-104, 22]:
// the bits of a and of 1.5 moved by kShift binades (a 32-bit add) and compared as signed
// integers; a * 2^-104 may be subnormal or 0, and its moved bits, then negative, lose to
// 1.5's. One VIADDMNMX on sm_90.
template <int kShift>
NVFP4_HD float e2m1_round_const(float a) {
  constexpr uint32_t k = static_cast<uint32_t>(kShift) << 23;
  const int32_t b = static_cast<int32_t>(f32_bits(a) + k);
  const int32_t lo = static_cast<int32_t>(0x3FC00000u + k);  // 1.5 * 2^kShift
  return f32_from_bits(static_cast<uint32_t>(b > lo ? b : lo));
}

// Magnitude code 0..7 of y, shifted left by 22 (zero outside bits 22..24): the bits of
// q * 2^-126, q the E2M1 magnitude nearest |y| (header comment).
template <bool kNanSafe = true>
NVFP4_HD uint32_t e2m1_mag_code_shl22(float y) {
  const float a = e2m1_clamp_mag<kNanSafe>(y);
  const float c = e2m1_round_const<-104>(a);
  return f32_bits(rn_sub(c, rn_fma(a, -0x1p-126f, c)));
}

// Magnitude code 0..7 of y (the code of the E2M1 magnitude nearest |y|).
template <bool kNanSafe = true>
NVFP4_HD uint32_t e2m1_mag_code(float y) {
  return e2m1_mag_code_shl22<kNanSafe>(y) >> 22;
}

// Bits of C = 2^(max(e, 0) + 22) for a clamped magnitude a.
NVFP4_HD uint32_t e2m1_magic_bits(float a) {
  const uint32_t e = (f32_bits(a) & 0x7F800000u) + (22u << 23);
  const uint32_t lo = 0x3F800000u + (22u << 23);
  return e > lo ? e : lo;
}

// The E2M1 magnitude nearest |y| as fp32: RN(a + C) - C with the power of two
// C = 2^(E + 22) (e2m1_magic_bits). The code's constant at scale 2^22,
// c = e2m1_round_const<22>(a), gives the same bits one instruction shorter
// (rn_sub(c, rn_sub(c, a)), no exponent mask; equal on all 2^32 inputs), but it raised the
// registers of the 4over6 quantize and the search kernels on sm_100 (80 -> 97, 79 -> 89),
// so the value keeps this form.
template <bool kNanSafe = true>
NVFP4_HD float e2m1_mag_value(float y) {
  const float a = e2m1_clamp_mag<kNanSafe>(y);
  const float c = f32_from_bits(e2m1_magic_bits(a));
  return rn_sub(rn_add(a, c), c);
}

// A magnitude code << 22 (e2m1_mag_code_shl22) moved to nibble i (bits 4i .. 4i + 2),
// i = 0..7 a compile-time constant: one shift, which a caller's accumulation by + fuses
// into its add (LEA.HI / LEA), where e2m1_mag_code costs a shift of its own.
NVFP4_HD uint32_t e2m1_shl22_at_nibble(uint32_t b, int i) {
  return 4 * i >= 22 ? b << (4 * i - 22) : b >> (22 - 4 * i);
}

// The sign bit of s as the sign bit of nibble i (bit 4i + 3), i = 0..7 a constant.
NVFP4_HD uint32_t e2m1_sign_at_nibble(uint32_t s, int i) {
  return (s >> (28 - 4 * i)) & (8u << (4 * i));
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
