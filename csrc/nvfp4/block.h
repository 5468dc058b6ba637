// The NVFP4 block math of docs/spec.md sec. 2, one function per step, each written once and used
// by the quantize, fake-quant, dequantize, global_scale and scale-search kernels (and the
// host build of tests/cpp). Every fp32 operation is an explicit RN operation (core/bits.h),
// so no FMA contraction changes a bit.
#pragma once

#include "core/bits.h"
#include "core/e4m3.h"

namespace nvfp4 {

constexpr float kRcp6 = 1.0f / 6.0f;   // RN(1/6), evaluated in fp32
constexpr uint32_t kNanScale = 0x7Fu;  // E4M3 NaN: the scale of a block holding NaN/inf
constexpr float kFltMax = 3.4028234663852886e38f;

// Naive (amax) scale byte: E4M3_satfinite(RN(gs * RN(vmax * RN(1/6)))). rcp = 0.25 gives
// the "/4" byte of scale_method "4over6" (docs/spec.md sec. 2).
NVFP4_HD uint32_t nvfp4_scale_byte(float vmax, float gs, float rcp = kRcp6) {
  return e4m3_encode(rn_mul(gs, rn_mul(vmax, rcp)));
}

// Scale byte of a block from the bits of its |x| max: 0x7F when the block holds NaN/inf.
NVFP4_HD uint32_t nvfp4_block_scale(uint32_t amax_bits, float gs, float rcp = kRcp6) {
  return amax_bits >= kInfBits ? kNanScale
                               : nvfp4_scale_byte(f32_from_bits(amax_bits), gs, rcp);
}

// Element multiplier of a block with scale byte sf: osc = RN(1 / RN(fp32(sf) * RN(1/gs))),
// and 0 where fp32(sf) == 0 or where that product is 0 (gs = +inf, or an underflow), as the
// reference computes it. NaN iff fp32(sf) is NaN (or gs is NaN, which makes sf NaN too):
// exactly the blocks whose codes are 0. Never negative: fp32(sf) and 1/gs have the sign of
// gs, so the code's sign bit is always the sign bit of x.
NVFP4_HD float nvfp4_osc(uint32_t sf, float inv_gs) {
  const float s = e4m3_decode(sf);
  const float d = rn_mul(s, inv_gs);
  return (s == 0.0f || d == 0.0f) ? 0.0f : rn_rcp(d);
}

// Decode multiplier RN(fp32(sf) / gs) (a true division, as docs/spec.md says).
NVFP4_HD float nvfp4_dq(uint32_t sf, float gs) { return rn_div(e4m3_decode(sf), gs); }

// The encode global scale from the bits of amax |x| (docs/spec.md sec. 2): RN(2688 / amax); 1 when
// amax == 0; the largest finite fp32 when amax is finite but so small that the division
// overflows (amax < 2688 / FLT_MAX, about 7.9e-36), so that finite input never becomes NaN;
// an infinite amax gives 0 and a NaN amax NaN, as the division does.
NVFP4_HD float nvfp4_global_scale_from_amax(uint32_t bits) {
  if (bits == 0) return 1.0f;
  const float gs = rn_div(2688.0f, f32_from_bits(bits));
  return (bits < kInfBits && f32_bits(gs) == kInfBits) ? kFltMax : gs;
}

}  // namespace nvfp4
