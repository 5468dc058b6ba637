// The NVFP4 block math of SPEC.md sec. 2, one function per step, every fp32 operation
// written with an explicit _rn intrinsic so that no FMA contraction changes a bit.
// Shared by the quantize, fake-quant, dequantize and scale-search kernels.
#pragma once

#include "kernels/e2m1.cuh"
#include "kernels/e4m3.cuh"

namespace nvfp4 {

constexpr float kRcp6 = 1.0f / 6.0f;  // RN(1/6), evaluated in fp32
constexpr uint32_t kNanScale = 0x7Fu;  // E4M3 NaN: the scale of a block holding NaN/inf
constexpr uint32_t kInfBits = 0x7F800000u;

// Naive (amax) scale byte: E4M3_satfinite(RN(gs * RN(vmax * RN(1/6)))).
__device__ __forceinline__ uint32_t nvfp4_scale_byte(float vmax, float gs) {
  return e4m3_encode(__fmul_rn(gs, __fmul_rn(vmax, kRcp6)));
}

// Element multiplier RN(1 / RN(fp32(sf) * RN(1/gs))); 0 when fp32(sf) == 0, or when the
// denominator underflows to 0 (an extreme global scale), as the reference does.
__device__ __forceinline__ float nvfp4_encode_multiplier(uint32_t sf, float inv_gs) {
  const float s = e4m3_decode(sf);
  const float d = __fmul_rn(s, inv_gs);
  return (s == 0.0f || d == 0.0f) ? 0.0f : __frcp_rn(d);
}

// Decode multiplier RN(fp32(sf) / gs) (a true division, as the SPEC says).
__device__ __forceinline__ float nvfp4_decode_multiplier(uint32_t sf, float gs) {
  return __fdiv_rn(e4m3_decode(sf), gs);
}

// Code of one element: E2M1(RN(x * osc)). The product is NaN only for +-0 * inf (osc
// overflows for a denominator below 2^-128); that element then encodes as a zero with
// the sign of x, since the sign of a NaN differs between devices.
__device__ __forceinline__ uint32_t nvfp4_encode(float x, float osc) {
  const float y = __fmul_rn(x, osc);
  return e2m1_encode(y != y ? copysignf(0.0f, x) : y);
}

// A block whose scale byte is 0x7F (non-finite input, or a NaN the scale formula made
// from a NaN/inf global scale) stores codes 0.
__device__ __forceinline__ bool nvfp4_scale_is_nan(uint32_t sf) { return (sf & 0x7Fu) == 0x7Fu; }

// Value of one code under decode multiplier dq: RN(e2m1(code) * dq), in fp32.
__device__ __forceinline__ float nvfp4_decode(uint32_t code, float dq) {
  return __fmul_rn(e2m1_decode(code), dq);
}

// |x| as bits with the sign cleared: integer max of these is the float max of |x|,
// and NaN/inf compare above every finite value (>= kInfBits), so one max finds both
// the block amax and whether the block is finite.
__device__ __forceinline__ uint32_t abs_bits(float x) { return __float_as_uint(x) & 0x7FFFFFFFu; }

}  // namespace nvfp4
