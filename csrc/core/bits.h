// fp32 bit access, IEEE round-to-nearest-even operations and integer division helpers,
// each written once for device code (nvcc) and host code (g++: tests/cpp builds these
// headers without CUDA). Torch-free.
//
// Every scalar primitive of csrc/core, csrc/nvfp4/block.h and csrc/search is NVFP4_HD:
// `__host__ __device__` under nvcc, plain `inline` under a host compiler. On the device
// each fp32 operation is an explicit _rn intrinsic, so no FMA contraction changes a bit;
// a host build must use -ffp-contract=off for the same reason.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define NVFP4_HD __host__ __device__ __forceinline__
#else
#define NVFP4_HD inline
#endif

namespace nvfp4 {

constexpr uint32_t kInfBits = 0x7F800000u;  // abs bits >= this: NaN or inf

NVFP4_HD uint32_t f32_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

NVFP4_HD float f32_from_bits(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// |x| as bits with the sign cleared: integer max of these is the float max of |x|,
// and NaN/inf compare above every finite value (>= kInfBits), so one max finds both
// the block amax and whether the block is finite.
NVFP4_HD uint32_t abs_bits(float x) { return f32_bits(x) & 0x7FFFFFFFu; }

// ---- one IEEE fp32 operation each, round to nearest even --------------------------------
NVFP4_HD float rn_mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
NVFP4_HD float rn_add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
NVFP4_HD float rn_sub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
NVFP4_HD float rn_div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
// RN(1 / a): the same value as rn_div(1, a), one instruction shorter on the device.
NVFP4_HD float rn_rcp(float a) {
#ifdef __CUDA_ARCH__
  return __frcp_rn(a);
#else
  return 1.0f / a;
#endif
}
// Fused multiply-add, one rounding: only in approximate passes whose error is bounded, or
// where the fused result is the exact one by construction (the E2M1 code, core/e2m1.h).
NVFP4_HD float rn_fma(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// n / d for 0 <= n < 2^31 and 1 <= d < 2^31 with one multiply-high (Granlund-Montgomery,
// round-up variant, as CUTLASS's FastDivmod): shift = ceil(log2 d),
// mul = floor(2^32 (2^shift - d) / d) + 1, n / d = (umulhi(n, mul) + n) >> shift (the sum
// fits 32 bits because n < 2^31). The swizzled scale index needs two divisions per block;
// a 64-bit '/' would cost more than the block's codec.
struct FastDiv {
  uint32_t mul = 1, shift = 0;

  static FastDiv make(uint32_t d) {
    FastDiv f;
    if (d == 0) d = 1;  // unused (no work); keeps the math defined
    while ((uint64_t(1) << f.shift) < d) ++f.shift;
    f.mul = static_cast<uint32_t>(((((uint64_t(1) << f.shift) - d) << 32) / d) + 1);
    return f;
  }
  NVFP4_HD uint32_t div(uint32_t n) const {
#ifdef __CUDA_ARCH__
    const uint32_t hi = __umulhi(n, mul);
#else
    const uint32_t hi = static_cast<uint32_t>((uint64_t(n) * mul) >> 32);
#endif
    return (hi + n) >> shift;
  }
};

}  // namespace nvfp4
