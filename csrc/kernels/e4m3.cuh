// E4M3 (float8_e4m3fn) bytes: NVFP4 block scales and MXFP8 elements.
#pragma once

#include <cuda_fp8.h>

#include <cstdint>

namespace nvfp4 {

// fp32 -> E4M3 byte, round to nearest even, saturating to +-448 (satfinite); NaN -> 0x7F.
// On sm_89+ this is the hardware cvt.rn.satfinite.e4m3x2; older archs get CUDA's exact
// software conversion. Subnormals (down to 2^-9) round correctly in both.
__device__ __forceinline__ uint32_t e4m3_encode(float v) {
  return static_cast<uint32_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

// Two values in one instruction (low byte = a): for the MXFP8 element path.
__device__ __forceinline__ uint32_t e4m3x2_encode(float a, float b) {
  return static_cast<uint32_t>(
      __nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3));
}

// E4M3 byte -> fp32, exactly. 0x7F / 0xFF are NaN.
__device__ __forceinline__ float e4m3_decode(uint32_t b) {
  const uint32_t sign = (b & 0x80u) << 24, e = (b >> 3) & 0xFu, m = b & 7u;
  if ((b & 0x7Fu) == 0x7Fu) return __uint_as_float(0x7FC00000u);
  if (e == 0) {  // subnormal: m * 2^-9, exact
    return __uint_as_float(__float_as_uint(__uint2float_rn(m) * 0.001953125f) | sign);
  }
  return __uint_as_float(sign | ((e + 120u) << 23) | (m << 20));
}

}  // namespace nvfp4
