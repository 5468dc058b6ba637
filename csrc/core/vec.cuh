// 16-byte vector loads and stores, and element conversions for fp32 / fp16 / bf16
// (device code only).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace nvfp4 {

// Streaming 16-byte load of data read exactly once (evict-first in L1/L2).
__device__ __forceinline__ uint4 load_stream(const void* p) {
  return __ldcs(reinterpret_cast<const uint4*>(p));
}
__device__ __forceinline__ void store_stream(void* p, uint4 v) {
  __stcs(reinterpret_cast<uint4*>(p), v);
}

// Asynchronous 16-byte copies global -> shared (sm_80+, no registers hold the data in
// flight): cp_async16 (valid false: the 16 bytes are zero-filled, nothing is read), a commit
// closing the group of those issued so far, and a wait until at most N groups are pending
// (their bytes are then visible to the issuing thread; to others after a barrier).
__device__ __forceinline__ void cp_async16(uint32_t smem, const void* gmem, bool valid) {
  const int n = valid ? 16 : 0;  // 0: zero-fill, nothing read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem),
               "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

template <typename T>
struct Elem;

template <>
struct Elem<float> {
  static constexpr int kPerVec = 4;  // elements in 16 bytes
  __device__ static __forceinline__ float to_float(float v) { return v; }
};
template <>
struct Elem<__half> {
  static constexpr int kPerVec = 8;
  __device__ static __forceinline__ float to_float(__half v) { return __half2float(v); }
};
template <>
struct Elem<__nv_bfloat16> {
  static constexpr int kPerVec = 8;
  __device__ static __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
};

// The kPerVec elements of a 16-byte vector as fp32 (exact widening; bf16 is a shift, fp16
// two at a time).
template <typename T>
__device__ __forceinline__ void unpack_vec(const uint4& v, float* f) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if constexpr (std::is_same_v<T, float>) {
      f[j] = __uint_as_float(w[j]);
    } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      f[2 * j] = __uint_as_float(w[j] << 16);
      f[2 * j + 1] = __uint_as_float(w[j] & 0xFFFF0000u);
    } else {
      const float2 h = __half22float2(*reinterpret_cast<const __half2*>(&w[j]));
      f[2 * j] = h.x;
      f[2 * j + 1] = h.y;
    }
  }
}

// The N elements of block blk of contiguous data of T (N a multiple of the 16-byte vector)
// as fp32, with N * sizeof(T) / 16 streaming loads: the search kernels' one block per thread.
// The values are pinned in registers: each passes through an empty asm (no instruction),
// which the optimizer cannot look through. Without it NVVM rematerializes the bf16 widening
// (a shift or mask of the loaded word) at every use inside the candidate loops instead of
// keeping the fp32 value: one extra integer instruction per element per candidate
// (MXFP8 "mse" search +12 % on H200).
template <typename T, int N>
__device__ __forceinline__ void load_block(const void* x, int64_t blk, float (&v)[N]) {
  constexpr int kV = Elem<T>::kPerVec;
  const char* p = static_cast<const char*>(x) + blk * N * static_cast<int64_t>(sizeof(T));
#pragma unroll
  for (int u = 0; u < N / kV; ++u) unpack_vec<T>(load_stream(p + 16 * u), v + kV * u);
#pragma unroll
  for (int i = 0; i < N; ++i) asm("" : "+f"(v[i]));
}

// Packs two fp32 values into the low (a) and high (b) halves of a 32-bit word of T, each
// rounded once to nearest even (one paired convert instruction).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float a, float b);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float a, float b) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float a, float b) {
  const __half2 v = __floats2half2_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Packs kPerVec fp32 values (each rounded once, RNE) into one 16-byte vector of T
// (fp32: the bits as they are).
template <typename T>
__device__ __forceinline__ uint4 pack_vec(const float* v) {
  if constexpr (Elem<T>::kPerVec == 4) {
    return make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]),
                      __float_as_uint(v[3]));
  } else {
    return make_uint4(pack2<T>(v[0], v[1]), pack2<T>(v[2], v[3]), pack2<T>(v[4], v[5]),
                      pack2<T>(v[6], v[7]));
  }
}

}  // namespace nvfp4
