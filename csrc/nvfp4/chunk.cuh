// The per-chunk device math of the NVFP4 quantize kernels (a chunk: the 16 bytes of x one
// lane loads, 8 fp16 / bf16 or 4 fp32 elements, kG = 2 or 4 lanes per block of 16): the
// block amax from the lanes' chunks, the codes of a chunk. Used by nvfp4/quantize.cuh's codec
// kernels and train/grouped.cuh's grouped NVFP4 kernel. Torch-free device code.
#pragma once

#include <cstdint>
#include <type_traits>

#include "core/bits.h"
#include "core/e2m1.h"
#include "core/vec.cuh"

namespace nvfp4 {
namespace quant {

constexpr unsigned kFullMask = 0xFFFFFFFFu;

// Max over the kG lanes of a group for each of the kG values am[u], scattered: lane q of
// the group returns the group max of am[q]. kG - 1 shuffles for kG values (a butterfly
// reduce-scatter) instead of kG * log2(kG).
template <int kG>
__device__ __forceinline__ uint32_t group_max_scatter(const uint32_t (&am)[kG], int q) {
  if constexpr (kG == 1) {
    return am[0];
  } else if constexpr (kG == 2) {
    const uint32_t keep = q ? am[1] : am[0];
    const uint32_t send = q ? am[0] : am[1];
    return max(keep, __shfl_xor_sync(kFullMask, send, 1));
  } else {
    static_assert(kG == 4, "groups of 1, 2 or 4 lanes");
    const bool hi = (q & 2) != 0;
    uint32_t w[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const uint32_t keep = hi ? am[2 + i] : am[i];
      const uint32_t send = hi ? am[i] : am[2 + i];
      w[i] = max(keep, __shfl_xor_sync(kFullMask, send, 2));
    }
    const bool odd = (q & 1) != 0;
    const uint32_t keep = odd ? w[1] : w[0];
    const uint32_t send = odd ? w[0] : w[1];
    return max(keep, __shfl_xor_sync(kFullMask, send, 1));
  }
}

// prmt.b32 (default mode): result byte n = byte (sel nibble n & 7) of {b:a}, or that byte's
// sign replicated when the nibble's bit 3 is set.
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
  return r;
}

// The sign bits of the elements of a 16-byte chunk, each at the sign bit (bit 3) of its
// code nibble: element i -> bit 4i + 3. 16-bit types: gather the high byte of each element
// (prmt), then replicate each byte's sign (prmt sign mode, selector nibbles 8..F) for
// the even and the odd elements; byte j then holds the signs of elements 2j and 2j+1.
template <typename T>
__device__ __forceinline__ uint32_t nibble_signs(const uint4& v) {
  if constexpr (Elem<T>::kPerVec == 4) {
    return ((v.x >> 28) & 0x8u) | ((v.y >> 24) & 0x80u) | ((v.z >> 20) & 0x800u) |
           ((v.w >> 16) & 0x8000u);
  } else {
    const uint32_t lo = prmt(v.x, v.y, 0x7531u);  // high bytes of elements 0..3
    const uint32_t hi = prmt(v.z, v.w, 0x7531u);  // elements 4..7
    const uint32_t even = prmt(lo, hi, 0xECA8u);  // 0xFF / 0x00: elements 0, 2, 4, 6
    const uint32_t odd = prmt(lo, hi, 0xFDB9u);   // elements 1, 3, 5, 7
    return (even & 0x08080808u) | (odd & 0x80808080u);
  }
}

// abs_bits of the largest |x| of a chunk: >= kInfBits iff the chunk holds NaN or inf, so
// one max gives both the block amax and the non-finite flag. fp32: the integer max of
// abs_bits. fp16 / bf16: the same max taken on the 16-bit values with the NaN-propagating
// packed max (max.NaN.{bf16x2,f16x2}: 2 elements per instruction, inf above every finite
// value, any NaN -> NaN) on |x| (sign bits cleared), then widened: the same value.
template <typename T>
__device__ __forceinline__ uint32_t chunk_amax_bits(const uint4& v) {
  const uint32_t w[4] = {v.x & 0x7FFF7FFFu, v.y & 0x7FFF7FFFu, v.z & 0x7FFF7FFFu,
                         v.w & 0x7FFF7FFFu};
  if constexpr (std::is_same_v<T, float>) {
    return max(max(abs_bits(__uint_as_float(v.x)), abs_bits(__uint_as_float(v.y))),
               max(abs_bits(__uint_as_float(v.z)), abs_bits(__uint_as_float(v.w))));
  } else {
    using T2 = std::conditional_t<std::is_same_v<T, __nv_bfloat16>, __nv_bfloat162, __half2>;
    const T2* h = reinterpret_cast<const T2*>(w);
    const T2 m2 = __hmax2_nan(__hmax2_nan(h[0], h[1]), __hmax2_nan(h[2], h[3]));
    const uint32_t m = *reinterpret_cast<const uint32_t*>(&m2);
    const uint32_t key = max(m & 0xFFFFu, m >> 16);  // both halves are >= 0: integer order
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      return key << 16;
    } else {
      return __float_as_uint(__half2float(__ushort_as_half(static_cast<unsigned short>(key))));
    }
  }
}

// Codes of one chunk (kPerVec nibbles, element 0 lowest): magnitudes of x * osc, signs of
// x (see nvfp4_osc). a holds x as fp32.
template <typename T, bool kNanSafe>
__device__ __forceinline__ uint32_t encode_chunk(const uint4& v, const float* a, float osc) {
  uint32_t word = nibble_signs<T>(v);
#pragma unroll
  for (int i = 0; i < Elem<T>::kPerVec; ++i) {
    word += e2m1_shl22_at_nibble(e2m1_mag_code_shl22<kNanSafe>(__fmul_rn(a[i], osc)), i);
  }
  return word;
}

}  // namespace quant
}  // namespace nvfp4
