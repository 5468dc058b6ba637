// Fused NVFP4-weight GEMM for sm_80+: y[M, N] = x[M, K] @ W^T, W [N, K] NVFP4 (E2M1 codes
// packed two per byte, one E4M3 scale per 16 along K, fp32 encode global scale gs).
//
// Why it is built this way (decode first: M <= 64 is bound by the weight bytes):
// * Roles swapped: the WEIGHT is the mma A operand (16 rows of N per m16 tile) and the
//   activation the B operand (8 tokens per n8 tile), so M = 1 wastes 7/8 of an n8 tile
//   instead of 15/16 of an m16 tile.
// * Weights go global -> registers with 16-byte loads, one register-double-buffered
//   super-step (K = 512) ahead: each weight byte is used by exactly one thread, so staging it
//   through shared memory would only add traffic. Each load instruction reads whole 32-byte
//   sectors: the 4 threads of a row read 64 contiguous bytes (16 each), four times per
//   super-step; the scales of a row (32 bytes a super-step) are read through L1. This is why
//   the plain layout needs no prepack: the only mismatch, the nibble order inside a 32-bit
//   code word, is absorbed once per activation element when a shared-memory stage lands
//   (`permute_stage`), not per use.
// * Activations go through a cp.async ring of shared-memory stages (shared by the 8 warps of a
//   CTA, which own different rows of N over the same K range), padded so that the 16-byte
//   fragment reads are free of bank conflicts.
// * E2M1 -> fp16/bf16 by placing the code bits into the exponent/mantissa fields (exact),
//   then one packed multiply by the block scale pre-multiplied by a power of two. The product
//   e2m1 * sf * 2^-7 is EXACT in both fp16 and bf16 (at most 6 significant bits, magnitude in
//   [2^-17, 21]), so no weight rounding happens at all, and nothing overflows in fp16; the
//   factor 2^7 / gs is applied once to the fp32 sums. A NaN scale byte (0x7F) gives NaN
//   operands, hence NaN outputs, as the reference.
// * Split-K for small M: each split writes fp32 partials; the last CTA of a tile to arrive
//   (atomic ticket) sums the partials in split order 0..S-1, so the result does not depend on
//   the arrival order: the same bits on every run for one shape on one device.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "core/vec.cuh"

namespace nvfp4 {
namespace gemm {

constexpr int kThreads = 256;        // 8 warps, each owns 16 rows of N
constexpr int kRowsPerCta = 128;
constexpr int kSuperK = 512;         // K per pipeline step
constexpr int kPieceK = 128;         // K per thread per step (4 threads per row)
constexpr int kSegBytes = kPieceK * 2 + 16;   // one thread-column of activations, padded
constexpr int kTokenBytes = 4 * kSegBytes;    // 1088: 1088 % 128 == 64 -> no bank conflicts

template <int NT>
struct Config {
  static constexpr int kMinBlocks = NT <= 2 ? 2 : 1;  // 2 CTAs/SM: at most 128 registers
  static constexpr int kTokens = 8 * NT;
  static constexpr int kStages = NT <= 2 ? 4 : (NT == 4 ? 3 : 2);
  static constexpr int kStageBytes = kTokens * kTokenBytes;
  static constexpr int kSmemBytes = kStages * kStageBytes;
};

struct Params {
  const void* x;          // [M, K] fp16/bf16, contiguous, 16-byte aligned
  const uint8_t* w;       // [N, K/2]
  const uint8_t* sf;      // [N, K/16] E4M3 bytes
  const float* gs;        // [1] encode global scale
  const void* bias;       // [N] of x's dtype, or null
  void* y;                // [M, N]
  float* partials;        // [splits, M, N] when splits > 1
  int* tickets;           // [m_tiles * n_tiles] zeroed before the launch when splits > 1
  int M, N, K;
  int steps;              // ceil(K / kSuperK)
  int steps_per_split;
  int splits;
  int row_groups;         // PREPACKED: ceil(N / 16)
};

template <typename T> struct Ops;
template <> struct Ops<__half> {
  // code bits s|E|m at the top of each 16-bit half -> fp16 s|000EE|m... = e2m1 * 2^-14
  static constexpr int kShift = 3;
  // Two E4M3 bytes (one in the low byte of each half) -> the fp16 pair sf * 2^7 (<= 57344,
  // exact): the E4M3 bits shifted into place read as fp16 sf * 2^-8 (subnormals included).
  __device__ static uint32_t scales2(uint32_t b) {
    const uint32_t bits = ((b & 0x007F007Fu) << 7) | ((b & 0x00800080u) << 8);
    return mul2(bits, 0x78007800u);  // * 2^15
  }
  __device__ static uint32_t mul2(uint32_t a, uint32_t b) {
    __half2 r = __hmul2(*reinterpret_cast<__half2*>(&a), *reinterpret_cast<__half2*>(&b));
    return *reinterpret_cast<uint32_t*>(&r);
  }
  __device__ static __half from_float(float v) { return __float2half_rn(v); }
};
template <> struct Ops<__nv_bfloat16> {
  // -> bf16 e2m1 * 2^-126 (subnormal for code 0.5, still exact)
  static constexpr int kShift = 6;
  // -> the bf16 pair sf * 2^119 (<= 1.75 * 2^127, exact): operand = e2m1 * sf * 2^-7. The
  // E4M3 bits shifted into place read as bf16 sf * 2^-120 (subnormals included).
  __device__ static uint32_t scales2(uint32_t b) {
    const uint32_t bits = ((b & 0x007F007Fu) << 4) | ((b & 0x00800080u) << 8);
    return mul2(mul2(bits, 0x7B807B80u), 0x7B007B00u);  // * 2^120 * 2^119
  }
  __device__ static uint32_t mul2(uint32_t a, uint32_t b) {
    __nv_bfloat162 r = __hmul2(*reinterpret_cast<__nv_bfloat162*>(&a),
                               *reinterpret_cast<__nv_bfloat162*>(&b));
    return *reinterpret_cast<uint32_t*>(&r);
  }
  __device__ static __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
};

// Four E4M3 scale bytes -> four (S, S) operand multipliers, S = Ops<T>::scales2 of the
// byte; NaN bytes (0x7F, 0xFF) give NaN pairs.
template <typename T>
__device__ __forceinline__ void scale_pairs(uint32_t sw, uint32_t (&out)[4]) {
  const uint32_t lo = Ops<T>::scales2(__byte_perm(sw, 0, 0x4140));  // bytes 0, 1
  const uint32_t hi = Ops<T>::scales2(__byte_perm(sw, 0, 0x4342));  // bytes 2, 3
  out[0] = __byte_perm(lo, 0, 0x1010);
  out[1] = __byte_perm(lo, 0, 0x3232);
  out[2] = __byte_perm(hi, 0, 0x1010);
  out[3] = __byte_perm(hi, 0, 0x3232);
  const uint32_t v = ~sw & 0x7F7F7F7Fu;  // a zero byte <=> a NaN scale byte
  if ((v - 0x01010101u) & ~v & 0x80808080u) {
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (((sw >> (8 * j)) & 0x7Fu) == 0x7Fu) out[j] = 0x7FFF7FFFu;  // NaN in fp16 and bf16
  }
}

template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ uint4 ld_stream16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

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

// One thread's weights for one super-step: rows g and g+8 of its warp, 128 codes each. Code
// word u = 4i + w (chunk i = 0..3, w = 0..3) holds k = step*512 + 128i + 32t + 8w + [0, 8);
// scale byte 2(i%2) + hh of s[h][i/2] is the block of k = step*512 + 128i + 32t + 16hh.
struct WRegs {
  uint32_t w[2][16];
  uint32_t s[2][2];
};

// Chunk i of row h of a thread: 32 codes (16 bytes) and their 2 scale bytes.
__device__ __forceinline__ void load_chunk16(WRegs& r, int h, int i, const uint8_t* codes,
                                             const uint8_t* sc, bool ok) {
  uint4 v = ok ? ld_stream16(codes) : make_uint4(0, 0, 0, 0);
  r.w[h][4 * i + 0] = v.x;
  r.w[h][4 * i + 1] = v.y;
  r.w[h][4 * i + 2] = v.z;
  r.w[h][4 * i + 3] = v.w;
  const uint32_t sb = ok ? __ldg(reinterpret_cast<const unsigned short*>(sc)) : 0u;
  r.s[h][i / 2] |= sb << (16 * (i % 2));
}

// ALIGNED: K % 128 == 0 (16-byte code loads; each chunk wholly in or out of range).
// Otherwise 8-byte code loads and byte scale loads per 16-element block (K % 16 == 0 keeps
// every block wholly in or out).
template <bool ALIGNED>
__device__ __forceinline__ void load_w_plain(WRegs& r, const Params& p, int row0, int t,
                                             int step) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int n = row0 + h * 8;
    const bool row_ok = n < p.N;
    const uint8_t* wrow = p.w + int64_t(n) * (p.K / 2);
    const uint8_t* srow = p.sf + int64_t(n) * (p.K / 16);
    r.s[h][0] = r.s[h][1] = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int k = step * kSuperK + 128 * i + 32 * t;
      if constexpr (ALIGNED) {
        load_chunk16(r, h, i, wrow + k / 2, srow + k / 16, row_ok && k < p.K);
      } else {
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int kb = k + 16 * hh;
          const bool ok = row_ok && kb < p.K;
          uint2 v = ok ? *reinterpret_cast<const uint2*>(wrow + kb / 2) : make_uint2(0, 0);
          r.w[h][4 * i + 2 * hh] = v.x;
          r.w[h][4 * i + 2 * hh + 1] = v.y;
          const uint32_t sb = ok ? srow[kb / 16] : 0u;
          r.s[h][i / 2] |= sb << (8 * (2 * (i % 2) + hh));
        }
      }
    }
  }
}

// PREPACKED (nvfp4.prepack_nvfp4_w4a16): the 16 rows x 512 k of one warp-step are one
// contiguous 4 KB tile of codes (row r at 256 r) and one 512-byte tile of scales (row r at
// 32 r), and the steps of a row group follow each other: each warp streams its weight in
// address order. The offsets inside a row's 256 bytes are those of the plain layout; the
// zero padding makes every chunk of a present row group valid.
template <bool ALIGNED, bool PREPACKED>
__device__ __forceinline__ void load_w(WRegs& r, const Params& p, int row0, int t, int step) {
  if constexpr (PREPACKED) {
    const int group = row0 / 16;  // the warp's 16 rows; row0 % 16 == g
    const bool ok = group < p.row_groups;
    const int64_t tile = int64_t(group) * p.steps + step;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r16 = row0 % 16 + 8 * h;
      r.s[h][0] = r.s[h][1] = 0;
#pragma unroll
      for (int i = 0; i < 4; ++i)
        load_chunk16(r, h, i, p.w + tile * 4096 + r16 * 256 + 64 * i + 16 * t,
                     p.sf + tile * 512 + r16 * 32 + 8 * i + 2 * t, ok);
    }
  } else {
    load_w_plain<ALIGNED>(r, p, row0, t, step);
  }
}

// Activation stage: tokens [m0, m0 + 8*NT) x k [step*512, +512), zero-filled out of range.
template <int NT>
__device__ __forceinline__ void load_x_stage(uint32_t smem_stage, const Params& p, int m0,
                                             int step, int tid) {
  constexpr int kChunks = 8 * NT * (kSuperK / 8);  // 16-byte chunks of 8 elements
  const char* x = static_cast<const char*>(p.x);
#pragma unroll
  for (int c = tid; c < kChunks; c += kThreads) {
    const int tok = c / (kSuperK / 8);
    const int j = c % (kSuperK / 8);
    const int m = m0 + tok;
    const int k = step * kSuperK + 8 * j;
    const bool ok = m < p.M && k < p.K;
    const char* src = ok ? x + (int64_t(m) * p.K + k) * 2 : x;
    // k_local = 8j = 128i + 32t + 8w lands in thread t's segment at 16 * (4i + w)
    const uint32_t dst = smem_stage + tok * kTokenBytes + ((j % 16) / 4) * kSegBytes +
                         (j / 16) * 64 + (j % 4) * 16;
    cp_async16(dst, src, ok);
  }
}

// Once a stage has landed: each 16-byte chunk x0..x7 becomes (x3 x7) (x2 x6) (x1 x5) (x0 x4),
// the B fragments of the two mma steps of a code word (see a_pairs), in the code order.
template <int NT>
__device__ __forceinline__ void permute_stage(unsigned char* stage, int tid) {
  constexpr int kChunks = 8 * NT * (kSuperK / 8);
  for (int c = tid; c < kChunks; c += kThreads) {
    const int tok = c / (kSuperK / 8), j = c % (kSuperK / 8);
    uint4* q = reinterpret_cast<uint4*>(stage + tok * kTokenBytes + (j / 16) * kSegBytes +
                                        (j % 16) * 16);
    const uint4 v = *q;
    *q = make_uint4(__byte_perm(v.y, v.w, 0x7632), __byte_perm(v.y, v.w, 0x5410),
                    __byte_perm(v.x, v.z, 0x7632), __byte_perm(v.x, v.z, 0x5410));
  }
}

// Weight pairs of step 2u and 2u+1 from one code word: the exponent-field trick yields
// nibbles (3,7), (2,6), (1,5), (0,4) as (low, high) halves, in that order.
template <typename T>
__device__ __forceinline__ void a_pairs(uint32_t q, uint32_t scale, uint32_t (&out)[4]) {
  constexpr int sh = Ops<T>::kShift;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t v = (q & 0x80008000u) | ((q & 0x70007000u) >> sh);
    out[j] = Ops<T>::mul2(v, scale);
    q <<= 4;
  }
}

// The output element from its fp32 sum: * 2^7 / gs, + bias in fp32, one rounding.
template <typename T>
__device__ __forceinline__ T finish(float sum, float inv, const T* bias, int n) {
  float v = sum * inv;
  if (bias) v += Elem<T>::to_float(bias[n]);
  return Ops<T>::from_float(v);
}

template <typename T, int NT, bool ALIGNED, bool PREPACKED>
__global__ void __launch_bounds__(kThreads, Config<NT>::kMinBlocks)
    nvfp4_w4a16_kernel(const Params p) {
  extern __shared__ __align__(16) unsigned char smem[];
  using C = Config<NT>;
  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int n_tile = blockIdx.x, split = blockIdx.y, m_tile = blockIdx.z;
  const int row0 = n_tile * kRowsPerCta + warp * 16 + g;
  const int m0 = m_tile * C::kTokens;
  const int s_begin = split * p.steps_per_split;
  const int s_end = min(p.steps, s_begin + p.steps_per_split);
  const int n_steps = s_end - s_begin;
  const uint32_t smem_base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));

  float acc[NT][4];
#pragma unroll
  for (int i = 0; i < NT; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;

#pragma unroll
  for (int s = 0; s < C::kStages - 1; ++s) {
    if (s < n_steps) load_x_stage<NT>(smem_base + s * C::kStageBytes, p, m0, s_begin + s, tid);
    cp_async_commit();
  }
  WRegs cur;
  if (n_steps > 0) load_w<ALIGNED, PREPACKED>(cur, p, row0, t, s_begin);

  for (int i = 0; i < n_steps; ++i) {
    {
      const int s = i + C::kStages - 1;
      if (s < n_steps)
        load_x_stage<NT>(smem_base + (s % C::kStages) * C::kStageBytes, p, m0, s_begin + s, tid);
      cp_async_commit();
    }
    WRegs nxt;
    if (i + 1 < n_steps) load_w<ALIGNED, PREPACKED>(nxt, p, row0, t, s_begin + i + 1);
    cp_async_wait<C::kStages - 1>();
    __syncthreads();
    permute_stage<NT>(smem + (i % C::kStages) * C::kStageBytes, tid);
    __syncthreads();

    const unsigned char* xs = smem + (i % C::kStages) * C::kStageBytes + t * kSegBytes;
#pragma unroll
    for (int sw = 0; sw < 2; ++sw) {  // 2 scale words of 4 blocks: chunks 2sw, 2sw + 1
      uint32_t sg[4], sh[4];
      scale_pairs<T>(cur.s[0][sw], sg);
      scale_pairs<T>(cur.s[1][sw], sh);
#pragma unroll
      for (int uu = 0; uu < 8; ++uu) {
        const int u = 8 * sw + uu;  // code word: chunk u / 4, block byte (u % 8) / 2
        uint32_t pg[4], ph[4];
        a_pairs<T>(cur.w[0][u], sg[uu / 2], pg);
        a_pairs<T>(cur.w[1][u], sh[uu / 2], ph);
        // step 2u: A = {(g, n3 n7), (g+8, n3 n7), (g, n2 n6), (g+8, n2 n6)}; step 2u+1 likewise
        const uint32_t a0[4] = {pg[0], ph[0], pg[1], ph[1]};
        const uint32_t a1[4] = {pg[2], ph[2], pg[3], ph[3]};
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          const uint4 xv = *reinterpret_cast<const uint4*>(xs + (nt * 8 + g) * kTokenBytes + 16 * u);
          mma16816<T>(acc[nt], a0, xv.x, xv.y);
          mma16816<T>(acc[nt], a1, xv.z, xv.w);
        }
      }
    }
    __syncthreads();
    if (i + 1 < n_steps) cur = nxt;
  }
  cp_async_wait<0>();

  // Epilogue. acc[nt]: (row g, tokens 2t, 2t+1), (row g+8, tokens 2t, 2t+1) of tile nt.
  const float inv = 128.0f / __ldg(p.gs);
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);
  // One split: the output directly. Several: fp32 partials, summed below by the last CTA.
  const bool direct = p.splits == 1;
  float* part = direct ? nullptr : p.partials + int64_t(split) * p.M * p.N;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int n = row0 + (e / 2) * 8;
      const int m = m0 + nt * 8 + 2 * t + (e % 2);
      if (n < p.N && m < p.M) {
        if (direct)
          y[int64_t(m) * p.N + n] = finish<T>(acc[nt][e], inv, bias, n);
        else
          part[int64_t(m) * p.N + n] = acc[nt][e];
      }
    }
  if (direct) return;
  __threadfence();
  __syncthreads();
  __shared__ int last;
  if (tid == 0) {
    int* ticket = p.tickets + m_tile * gridDim.x + n_tile;
    const int prev = atomicAdd(ticket, 1);
    last = prev == p.splits - 1;
    if (last) *ticket = 0;  // ready for the next launch (and for CUDA-graph replays)
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int i = tid; i < C::kTokens * kRowsPerCta; i += kThreads) {
    const int m = m0 + i / kRowsPerCta;
    const int n = n_tile * kRowsPerCta + i % kRowsPerCta;
    if (m >= p.M || n >= p.N) continue;
    const int64_t off = int64_t(m) * p.N + n;
    float sum = 0.f;
    for (int s = 0; s < p.splits; ++s) sum += __ldcg(p.partials + int64_t(s) * p.M * p.N + off);
    y[off] = finish<T>(sum, inv, bias, n);
  }
}

}  // namespace gemm
}  // namespace nvfp4
