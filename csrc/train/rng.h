// The element math of the training recipes (docs/spec.md sec. 8.2-8.4), written once for the
// device and for a host build: Philox4x32-10, the uniform of a Philox word, stochastic
// rounding to E2M1 and the 16-point random Hadamard butterfly. Every fp32 operation is an
// explicit RN operation of core/bits.h (no FMA contraction), and every step is exact or one
// IEEE operation, as in nvfp4_ops/reference/training.py.
#pragma once

#include <cstdint>

#include "core/bits.h"
#include "core/e2m1.h"

namespace nvfp4 {
namespace train {

// Philox4x32-10 constants (Salmon et al., SC'11; Random123), as the reference names them.
constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;
// Counter word 3 of each use of the generator (docs/spec.md sec. 8.3).
constexpr uint32_t kSrStream = 0u;

struct Philox4 {
  uint32_t w[4];
};

NVFP4_HD uint32_t mulhi32(uint32_t a, uint32_t b) {
#ifdef __CUDA_ARCH__
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((uint64_t(a) * b) >> 32);
#endif
}

// Philox4x32-10 of counter (c0, c1, c2, c3) and key (k0, k1): ten rounds of
// (hi0, lo0) = mulhilo(M0, c0), (hi1, lo1) = mulhilo(M1, c2),
// c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0), the key bumped by (W0, W1) between rounds.
NVFP4_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                               uint32_t k1) {
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    if (r) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const uint32_t hi0 = mulhi32(kPhiloxM0, c0), lo0 = kPhiloxM0 * c0;
    const uint32_t hi1 = mulhi32(kPhiloxM1, c2), lo1 = kPhiloxM1 * c2;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  return {{c0, c1, c2, c3}};
}

// The 4 stochastic-rounding words of counter index n (the 64-bit n = offset + e / 4 of
// docs/spec.md sec. 8.3): Philox4x32-10 of counter (n mod 2^32, n >> 32, 0, 0) with the key
// words of the int64 seed (low word k0, high word k1).
NVFP4_HD Philox4 sr_words(uint64_t n, uint64_t seed) {
  return philox4x32_10(static_cast<uint32_t>(n), static_cast<uint32_t>(n >> 32), 0u, kSrStream,
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// u = (w >> 8) * 2^-24, exact, in [0, 1).
NVFP4_HD float uniform_from_word(uint32_t w) {
  return rn_mul(static_cast<float>(w >> 8), 0x1p-24f);
}

// Stochastic E2M1 rounding of y = RN(x * osc) (docs/spec.md sec. 8.3) to a 4-bit code.
// x: the element (finite: blocks holding NaN or inf get codes 0 elsewhere); a NaN y (only
// 0 * inf) counts as x * 0, a zero with the sign of x. a = min(|y|, 6); the step of the E2M1
// grid is 0.5 below 2, 1 below 4, 2 above; lo = floor(a / step) * step,
// p = (a - lo) / step (every operation exact); the magnitude is lo + step if u < p, else lo.
// The sign is that of y (section 1 rules: -0 and negatives rounding to 0 give 0x8).
NVFP4_HD uint32_t e2m1_encode_stochastic(float x, float osc, uint32_t word) {
  float y = rn_mul(x, osc);
  if (y != y) y = rn_mul(x, 0.0f);
  const float a = fminf(fabsf(y), 6.0f);
  const float inv_step = a < 2.0f ? 2.0f : (a < 4.0f ? 1.0f : 0.5f);
  const float step = a < 2.0f ? 0.5f : (a < 4.0f ? 1.0f : 2.0f);
  const float lo = rn_mul(floorf(rn_mul(a, inv_step)), step);
  const float p = rn_mul(rn_sub(a, lo), inv_step);
  const float q = uniform_from_word(word) < p ? rn_add(lo, step) : lo;
  return e2m1_code_of(q) | ((f32_bits(y) >> 28) & 8u);
}

// Round-to-nearest E2M1 code of RN(x * osc), the sign bit of x (docs/spec.md sec. 2: osc is
// never negative, and a NaN product, 0 * inf, takes the sign of x).
NVFP4_HD uint32_t e2m1_encode_nearest(float x, float osc) {
  return e2m1_mag_code<true>(rn_mul(x, osc)) | ((f32_bits(x) >> 28) & 8u);
}

// e2m1_encode_nearest(x, osc) << 4i, i = 0..7 a constant; accumulate with + (disjoint
// nibbles: the magnitude's shift then fuses into the add).
NVFP4_HD uint32_t e2m1_encode_nearest_at_nibble(float x, float osc, int i) {
  return e2m1_shl22_at_nibble(e2m1_mag_code_shl22<true>(rn_mul(x, osc)), i) +
         e2m1_sign_at_nibble(f32_bits(x), i);
}

// The random Hadamard transform of one block of 16 (docs/spec.md sec. 8.4), in place:
// t = s * v; butterfly stages h = 1, 2, 4, 8, pairs (i, i + h) with bit h of i clear become
// (RN(t_i + t_{i+h}), RN(t_i - t_{i+h})); then t * 0.25.
NVFP4_HD void hadamard16(float (&v)[16], const float* signs) {
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (int i = 0; i < 16; ++i) v[i] = rn_mul(v[i], signs[i]);
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (int h = 1; h < 16; h <<= 1) {
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (int i = 0; i < 16; ++i) {
      if (i & h) continue;
      const float a = v[i], b = v[i + h];
      v[i] = rn_add(a, b);
      v[i + h] = rn_sub(a, b);
    }
  }
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (int i = 0; i < 16; ++i) v[i] = rn_mul(v[i], 0.25f);
}

}  // namespace train
}  // namespace nvfp4
