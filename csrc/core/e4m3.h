// E4M3 (float8_e4m3fn) bytes: NVFP4 block scales and MXFP8 elements.
#pragma once

#ifdef __CUDACC__
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#endif

#include "core/bits.h"

namespace nvfp4 {

// Nearest E4M3 magnitude of y >= 0 as fp32 (RNE, saturating to 448): the construction of
// e2m1.h with 3 mantissa bits, C = 2^(max(e, -6) + 20) (spacing 2^(e-3); 2^-9 for the
// subnormals). kNanSafe: a NaN gives 0. The reference's _e4m3_round (clamp to 448, cast,
// back); tests/cpp checks it against an integer-rounding formula.
template <bool kNanSafe>
NVFP4_HD float e4m3_mag(float y) {
  const float a = fminf(kNanSafe ? fmaxf(y, 0.0f) : y, 448.0f);
  uint32_t m = f32_bits(a) & 0x7F800000u;
  m = m > 0x3C800000u ? m : 0x3C800000u;
  const float c = f32_from_bits(m + (20u << 23));
  return rn_sub(rn_add(a, c), c);
}

// fp32 -> E4M3 byte, round to nearest even, saturating to +-448 (satfinite); NaN -> 0x7F.
// On the device: on sm_89+ the hardware cvt.rn.satfinite.e4m3x2, on older archs CUDA's
// exact software conversion (subnormals down to 2^-9 round correctly in both). On the host
// (tests/cpp): e4m3_mag and the byte of that value.
NVFP4_HD uint32_t e4m3_encode(float v) {
#ifdef __CUDA_ARCH__
  return static_cast<uint32_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
#else
  if (v != v) return 0x7Fu;
  const uint32_t sign = (f32_bits(v) >> 24) & 0x80u;
  const uint32_t q = f32_bits(e4m3_mag<false>(fabsf(v)));
  const uint32_t e = q >> 23;
  // normal (e >= 121, 2^-6 and up): exponent and 3 mantissa bits; subnormal: q / 2^-9.
  const uint32_t mag = e >= 121u ? ((e - 120u) << 3) | ((q >> 20) & 7u)
                                 : static_cast<uint32_t>(f32_from_bits(q) * 512.0f);
  return sign | mag;
#endif
}

#ifdef __CUDACC__
// Two values in one instruction (low byte = a): the MXFP8 element path.
__device__ __forceinline__ uint32_t e4m3x2_encode(float a, float b) {
  return static_cast<uint32_t>(
      __nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3));
}
#endif

// E4M3 byte -> fp32, exactly; 0x7F / 0xFF are NaN. On sm_89+ the hardware widening convert
// E4M3 -> fp16 (exact: every E4M3 value, subnormals and NaN included, is an fp16 value) then
// fp16 -> fp32 (exact): 2 instructions instead of a branchy bit assembly (host, sm_80).
NVFP4_HD float e4m3_decode(uint32_t b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  return __half2float(
      __half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(b), __NV_E4M3)));
#else
  const uint32_t sign = (b & 0x80u) << 24, e = (b >> 3) & 0xFu, m = b & 7u;
  if ((b & 0x7Fu) == 0x7Fu) return f32_from_bits(0x7FC00000u);
  if (e == 0) {  // subnormal: m * 2^-9, exact
    return f32_from_bits(f32_bits(static_cast<float>(m) * 0.001953125f) | sign);
  }
  return f32_from_bits(sign | ((e + 120u) << 23) | (m << 20));
#endif
}

#ifdef __CUDACC__
// Two E4M3 bytes (low byte first) -> fp32, as e4m3_decode; on sm_89+ one cvt.f16x2.e4m3x2
// (e4m3_decode's bit assembly is about 17 instructions per element: the MXFP8 dequantize
// would otherwise be instruction-bound on H200).
__device__ __forceinline__ float2 e4m3x2_decode(uint32_t two_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  const __half2_raw h =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two_bytes), __NV_E4M3);
  return __half22float2(__half2(h));
#else
  return make_float2(e4m3_decode(two_bytes & 0xFFu), e4m3_decode((two_bytes >> 8) & 0xFFu));
#endif
}
#endif

}  // namespace nvfp4
