// Fused weight-only GEMM for sm_80+: y[M, N] = x[M, K] @ W^T (+ bias), x fp16 / bf16, W [N, K]
// in one of three formats (template argument FMT): NVFP4 (E2M1 codes two per byte, one E4M3
// scale per 16 along K, fp32 encode global scale gs), MXFP4 (E2M1, one E8M0 per 32), MXFP8
// (E4M3, one E8M0 per 32). Measurements and what limits it: NOTES.md.
//
// Why it is built this way (decode first: small M is bound by the weight bytes):
// * Roles swapped: the WEIGHT is the mma A operand (16 rows of N per m16 tile) and the
//   activation the B operand (8 tokens per n8 tile), so M = 1 wastes 7/8 of an n8 tile
//   instead of 15/16 of an m16 tile.
// * Weights go global -> registers, one phase (a 512-wide step; MXFP8: half a step) ahead of
//   their use: each weight byte is used by exactly one thread. NVFP4 reads whole 32-byte
//   sectors (the 4 threads of a row read 64 contiguous bytes, four times per step); the
//   nibble order inside a code word is absorbed once per activation element (`permute_for`),
//   not per use.
// * Activations: few tokens (kXPre, M <= 16 per tile) are loaded and permuted once per CTA
//   for its whole K range (`preload_x`), so the main loop has no barrier; more tokens are
//   permuted once per call (`permute_x_kernel`) and go through a cp.async ring of stages
//   shared by the 8 warps, one barrier per 512-wide step. Both are padded so that the
//   16-byte fragment reads are free of bank conflicts.
// * E2M1 / E4M3 -> fp16/bf16 by placing the code bits into the exponent/mantissa fields
//   (exact). NVFP4: one packed multiply by the block scale times a power of two; the product
//   e2m1 * sf * 2^-7 is EXACT in both fp16 and bf16 (at most 6 significant bits, magnitude in
//   [2^-17, 21]), so nothing is rounded and nothing overflows in fp16; 2^7 / gs is applied
//   once to the fp32 sums. MXFP4: the same, each block's 2^e taken relative to a running
//   per-row base (`MxBase`), so that no operand overflows. MXFP8: the operands are the exact
//   code values and each 32-block's 2^(e - 127) multiplies the fp32 result of its mma pair
//   (`mma_phase_mxfp8`), so no scale can overflow or underflow an operand. NaN scale bytes
//   give NaN outputs, as the reference.
// * Split-K for small M: each split writes fp32 partials; the last CTA of a tile to arrive
//   (atomic ticket from the zeroed ring of torch_utils.h, reset by that CTA) sums the
//   partials in split order 0..S-1, so the result does not depend on the arrival order: the
//   same bits on every run for one shape on one device.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "core/e8m0.h"
#include "core/vec.cuh"

namespace nvfp4 {
namespace gemm {

// Weight formats of the fused kernel (template argument FMT).
enum : int {
  kNvfp4 = 0,  // E2M1 + E4M3 per 16 + fp32 global scale (nvfp4.gemm_nvfp4_w4a16)
  kMxfp4 = 1,  // E2M1 + E8M0 per 32 (nvfp4.gemm_mx_w16, elem "e2m1")
  kMxfp8 = 2,  // E4M3 + E8M0 per 32 (nvfp4.gemm_mx_w16, elem "e4m3")
};
// Weight phases per 512-wide step: MXFP8 loads its 512 bytes per row in two halves, so that a
// thread's weight registers stay 2 rows x 16 words in every format.
// E2M1 formats: two 256-wide phases per step as well (half the weight registers, so that
// three CTAs fit per SM at one token tile).
template <int FMT>
constexpr int kPhases = 2;
// E2M1 formats (NVFP4, MXFP4) share the thread layout of the codes (thread t of a row holds
// k = 128 i + 32 t + [0, 32) of chunk i), the activation layout and the operand-scaled mma
// step; MXFP8 has its own (each 32-block spread over the 4 threads of a row, post-scaled).
template <int FMT>
constexpr bool kE2m1 = FMT != kMxfp8;
// 8-code units (one 16-byte activation chunk each) per phase of a thread-row.
template <int FMT>
constexpr int kUnits = 16 / kPhases<FMT>;

constexpr int kThreads = 256;        // 8 warps, each owns 16 rows of N
constexpr int kRowsPerCta = 128;
constexpr int kSuperK = 512;         // K per pipeline step
constexpr int kPieceK = 128;         // K per thread per step (4 threads per row)
constexpr int kSegBytes = kPieceK * 2 + 16;   // one thread-column of activations, padded
constexpr int kTokenBytes = 4 * kSegBytes;    // 1088: 1088 % 128 == 64 -> no bank conflicts

template <int NT>
struct Config {
  static constexpr int kMinBlocks = NT <= 4 ? 2 : 1;  // 2 CTAs/SM: at most 128 registers
  static constexpr int kTokens = 8 * NT;
  // ring stages (NT >= 4): 3 x 35 KB (NT = 4, 2 CTAs per SM) or 3 x 70 KB (NT = 8, 1 CTA)
  static constexpr int kStages = 3;
  static constexpr int kStageBytes = kTokens * kTokenBytes;
  static constexpr int kSmemBytes = kStages * kStageBytes;
  // Few tokens: the split's activations preloaded once (preload_x), no ring.
  static constexpr bool kXPre = NT <= 2;
};

// XPRE: shared memory of one CTA at most (2 CTAs per SM); the split-K rule keeps
// tokens * x_stride within it.
constexpr int kXPreMaxSmem = 100 * 1024;
// ... and 72 KB with three CTAs per SM.
// E2M1 at one token tile: 3 CTAs/SM (at most 80 registers).
template <int FMT, int NT>
constexpr int kMinBlocksOf = FMT != kMxfp8 && NT == 1 ? 3 : Config<NT>::kMinBlocks;
template <int FMT, int NT>
constexpr int kXPreSmem = kMinBlocksOf<FMT, NT> == 3 ? 72 * 1024 : kXPreMaxSmem;

struct Params {
  const void* x;          // [M, K] fp16/bf16, contiguous, 16-byte aligned
  const uint8_t* w;       // [N, K/2] (E2M1) or [N, K] (E4M3)
  const uint8_t* sf;      // [N, K/16] E4M3 bytes (NVFP4) or [N, K/32] E8M0 bytes (MX)
  const float* gs;        // [1] encode global scale (NVFP4 only)
  const void* bias;       // [N] of x's dtype, or null
  void* y;                // [M, N]
  float* partials;        // [splits, M, N] when splits > 1
  int* tickets;           // [m_tiles * n_tiles] zero at the launch when splits > 1
  int M, N, K;
  int steps;              // ceil(K / kSuperK)
  int steps_per_split;
  int splits;
  int row_groups;         // PREPACKED: ceil(N / 16)
  int x_stride;           // XPRE: bytes per token of the preloaded activations; wgmma
                          // kernel: the tokens of a chunk row of the rearranged x (M
                          // rounded up to the tile)
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

// One thread's weights for one phase: rows g and g+8 of its warp, 16 words each.
// E2M1 (NVFP4, MXFP4): code word u = 4i + w (chunk i = 0..3, w = 0..3) holds k = step*512 +
// 128i + 32t + 8w + [0, 8). NVFP4: byte hh of s[h][i] is the scale of the block of k =
// step*512 + 128i + 32t + 16hh; the scale halfwords stay as loaded until they are used
// (nvfp4_scale_word): combining them at load time would make the thread wait for the load
// there, undoing the prefetch. MXFP4: chunk i is one 32-block, its E8M0 byte is byte t of
// s[h][i]. MXFP8: the 8 codes of unit u are k = step*512 + 256*phase + 32u + 8t + [0, 8)
// (words 2u, 2u+1), so that the 4 threads of a row hold one 32-block together and each mma
// pair covers exactly one block; s[h] holds the unit scale bytes.
struct WRegs {
  uint32_t w[2][16];
  uint32_t s[2][4];
};

// The 32 E2M1 codes (16 bytes) of chunk i of row h of a thread, zeros when !ok.
__device__ __forceinline__ void load_codes16(WRegs& r, int h, int i, const uint8_t* codes,
                                             bool ok) {
  const uint4 v = ok ? ld_stream16(codes) : make_uint4(0, 0, 0, 0);
  r.w[h][4 * i + 0] = v.x;
  r.w[h][4 * i + 1] = v.y;
  r.w[h][4 * i + 2] = v.z;
  r.w[h][4 * i + 3] = v.w;
}

// NVFP4 chunk i of row h: its codes and their 2 scale bytes.
__device__ __forceinline__ void load_chunk16(WRegs& r, int h, int i, const uint8_t* codes,
                                             const uint8_t* sc, bool ok) {
  load_codes16(r, h, i, codes, ok);
  r.s[h][i] = ok ? __ldg(reinterpret_cast<const unsigned short*>(sc)) : 0u;
}

// The 4 NVFP4 scale bytes of chunks 2sw, 2sw + 1 of row h (bytes 2(i%2) + hh).
__device__ __forceinline__ uint32_t nvfp4_scale_word(const WRegs& r, int h, int sw) {
  return r.s[h][2 * sw] | (r.s[h][2 * sw + 1] << 16);
}

// First k of chunk i (of the 4 / P chunks of a phase) of thread t in the E2M1 layout of
// WRegs: step phase / P, chunk (phase % P) * C + i of the step.
template <int FMT>
__device__ __forceinline__ int e2m1_chunk_k(int phase, int i, int t) {
  constexpr int P = kPhases<FMT>, C = 4 / P;
  return (phase / P) * kSuperK + 128 * ((phase % P) * C + i) + 32 * t;
}

// ALIGNED: K % 128 == 0 (16-byte code loads; each chunk wholly in or out of range).
// Otherwise 8-byte code loads and byte scale loads per 16-element block (K % 16 == 0 keeps
// every block wholly in or out).
template <bool ALIGNED>
__device__ __forceinline__ void load_w_plain(WRegs& r, const Params& p, int row0, int t,
                                             int phase) {
  constexpr int C = 4 / kPhases<kNvfp4>;  // chunks per phase
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int n = row0 + h * 8;
    const bool row_ok = n < p.N;
    const uint8_t* wrow = p.w + int64_t(n) * (p.K / 2);
    const uint8_t* srow = p.sf + int64_t(n) * (p.K / 16);
#pragma unroll
    for (int i = 0; i < C; ++i) {
      const int k = e2m1_chunk_k<kNvfp4>(phase, i, t);
      if constexpr (ALIGNED) {
        load_chunk16(r, h, i, wrow + k / 2, srow + k / 16, row_ok && k < p.K);
      } else {
        r.s[h][i] = 0;
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int kb = k + 16 * hh;
          const bool ok = row_ok && kb < p.K;
          uint2 v = ok ? *reinterpret_cast<const uint2*>(wrow + kb / 2) : make_uint2(0, 0);
          r.w[h][4 * i + 2 * hh] = v.x;
          r.w[h][4 * i + 2 * hh + 1] = v.y;
          const uint32_t sb = ok ? srow[kb / 16] : 0u;
          r.s[h][i] |= sb << (8 * hh);
        }
      }
    }
  }
}

// MXFP8 weights of one phase (see WRegs). ALIGNED: K % 512 == 0 (whole-phase scale loads);
// otherwise every unit and scale byte is guarded (K % 32 == 0: a block is in or out).
template <bool ALIGNED>
__device__ __forceinline__ void load_w_mxfp8(WRegs& r, const Params& p, int row0, int t,
                                             int phase) {
  constexpr int P = kPhases<kMxfp8>, U = kUnits<kMxfp8>;
  const int step = phase / P, half = phase % P;
  const int k0 = step * kSuperK + half * (kSuperK / P);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int n = row0 + h * 8;
    const bool row_ok = n < p.N;
    const uint8_t* wrow = p.w + int64_t(n) * p.K;
    const uint8_t* srow = p.sf + int64_t(n) * (p.K / 32) + k0 / 32;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = k0 + 32 * u + 8 * t;
      const bool ok = row_ok && k < p.K;
      const uint2 v = ok ? __ldg(reinterpret_cast<const uint2*>(wrow + k)) : make_uint2(0, 0);
      r.w[h][2 * u] = v.x;
      r.w[h][2 * u + 1] = v.y;
    }
    if constexpr (ALIGNED) {
      const uint2 v = row_ok ? __ldg(reinterpret_cast<const uint2*>(srow)) : make_uint2(0, 0);
      r.s[h][0] = v.x, r.s[h][1] = v.y;
    } else {
#pragma unroll
      for (int w = 0; w < U / 4; ++w) {
        uint32_t word = 0;
#pragma unroll
        for (int b = 0; b < 4; ++b) {
          const bool ok = row_ok && k0 + 32 * (4 * w + b) < p.K;
          word |= (ok ? uint32_t(srow[4 * w + b]) : 0u) << (8 * b);
        }
        r.s[h][w] = word;
      }
    }
  }
}

// MXFP4 weights of one step in the E2M1 thread layout (see WRegs): chunk i of a thread-row is
// one 32-block (16 bytes; K % 32 == 0, so it is wholly in or out) and its E8M0 byte is byte t
// of s[h][i] (the step's 16 scale bytes of the row, whole-word loads when ALIGNED, K % 512
// == 0; guarded bytes otherwise).
template <bool ALIGNED>
__device__ __forceinline__ void load_w_mxfp4(WRegs& r, const Params& p, int row0, int t,
                                             int phase) {
  constexpr int P = kPhases<kMxfp4>, C = 4 / P;  // chunks per phase
  const int step = phase / P, half = phase % P;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int n = row0 + h * 8;
    const bool row_ok = n < p.N;
    const uint8_t* wrow = p.w + int64_t(n) * (p.K / 2);
    const uint8_t* srow =
        p.sf + int64_t(n) * (p.K / 32) + step * (kSuperK / 32) + half * (kSuperK / 32 / P);
#pragma unroll
    for (int i = 0; i < C; ++i) {
      const int k = e2m1_chunk_k<kMxfp4>(phase, i, t);
      load_codes16(r, h, i, wrow + k / 2, row_ok && k < p.K);
    }
    if constexpr (ALIGNED && C == 2) {
      const uint2 v = row_ok ? __ldg(reinterpret_cast<const uint2*>(srow)) : make_uint2(0, 0);
      r.s[h][0] = v.x, r.s[h][1] = v.y;
    } else if constexpr (ALIGNED) {
      const uint4 v = row_ok ? __ldg(reinterpret_cast<const uint4*>(srow)) : make_uint4(0, 0, 0, 0);
      r.s[h][0] = v.x, r.s[h][1] = v.y, r.s[h][2] = v.z, r.s[h][3] = v.w;
    } else {
#pragma unroll
      for (int i = 0; i < C; ++i) {
        const bool ok = row_ok && e2m1_chunk_k<kMxfp4>(phase, i, t) < p.K;
        r.s[h][i] = (ok ? uint32_t(srow[4 * i + t]) : 0u) << (8 * t);
      }
    }
  }
}

// PREPACKED (nvfp4.prepack_nvfp4_w4a16): the 16 rows x 512 k of one warp-step are one
// contiguous 4 KB tile of codes (row r at 256 r) and one 512-byte tile of scales (row r at
// 32 r), and the steps of a row group follow each other: each warp streams its weight in
// address order. The offsets inside a row's 256 bytes are those of the plain layout; the
// zero padding makes every chunk of a present row group valid.
template <int FMT, bool ALIGNED, bool PREPACKED>
__device__ __forceinline__ void load_w(WRegs& r, const Params& p, int row0, int t, int step) {
  if constexpr (FMT == kMxfp4) {
    load_w_mxfp4<ALIGNED>(r, p, row0, t, step);
  } else if constexpr (FMT == kMxfp8) {
    load_w_mxfp8<ALIGNED>(r, p, row0, t, step);  // `step` counts phases here
  } else if constexpr (PREPACKED) {
    constexpr int P = kPhases<kNvfp4>, C = 4 / P;  // `step` counts phases here
    const int half = step % P;
    const int group = row0 / 16;  // the warp's 16 rows; row0 % 16 == g
    const bool ok = group < p.row_groups;
    const int64_t tile = int64_t(group) * p.steps + step / P;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r16 = row0 % 16 + 8 * h;
#pragma unroll
      for (int i = 0; i < C; ++i) {
        const int ci = half * C + i;
        load_chunk16(r, h, i, p.w + tile * 4096 + r16 * 256 + 64 * ci + 16 * t,
                     p.sf + tile * 512 + r16 * 32 + 8 * ci + 2 * t, ok);
      }
    }
  } else {
    load_w_plain<ALIGNED>(r, p, row0, t, step);
  }
}

// The activation chunk x[k .. k+8) as the kernel stores it (see permute_for).
__device__ __forceinline__ uint4 permute_chunk(uint4 v) {
  return make_uint4(__byte_perm(v.y, v.w, 0x7632), __byte_perm(v.y, v.w, 0x5410),
                    __byte_perm(v.x, v.z, 0x7632), __byte_perm(v.x, v.z, 0x5410));
}

// Where chunk j (x[k .. k+8), k = step*512 + 8j) of a token's step lands: the segment of the
// thread that holds those k, at the 16 bytes of its unit.
template <int FMT>
__device__ __forceinline__ int chunk_slot(int j) {
  if constexpr (kE2m1<FMT>) return ((j % 16) / 4) * kSegBytes + (4 * (j / 16) + j % 4) * 16;
  else return (j % 4) * kSegBytes + (j / 4) * 16;
}

// The B fragments of a chunk: x0..x7 reordered as the unit's pairs of codes. E2M1 words (see
// a_pairs): (x3 x7) (x2 x6) (x1 x5) (x0 x4); E4M3 word pairs (see e4m3_pairs): (x0 x2)
// (x1 x3) (x4 x6) (x5 x7).
template <int FMT>
__device__ __forceinline__ uint4 permute_for(uint4 v) {
  if constexpr (FMT == kMxfp8)
    return make_uint4(__byte_perm(v.x, v.y, 0x5410), __byte_perm(v.x, v.y, 0x7632),
                      __byte_perm(v.z, v.w, 0x5410), __byte_perm(v.z, v.w, 0x7632));
  else
    return permute_chunk(v);
}

// Activation stage: tokens [m0, m0 + 8*NT) x k [step*512, +512) of the permuted x
// (permute_x_kernel), zero-filled out of range.
template <int FMT, int NT>
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
    const uint32_t dst = smem_stage + tok * kTokenBytes + chunk_slot<FMT>(j);
    cp_async16(dst, src, ok);
  }
}


// Ring path (NT >= 4): x permuted once per call, before the GEMM (each 16-byte chunk x0..x7
// of xp = permute_for<FMT> of x's), so that a ring stage lands in the order the mma steps
// read and needs no pass of its own (nor the two barriers around one). n16: x.numel() / 8.
template <int FMT>
__global__ void permute_x_kernel(const uint4* __restrict__ x, uint4* __restrict__ xp,
                                 int64_t n16) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n16;
       i += int64_t(gridDim.x) * blockDim.x)
    xp[i] = permute_for<FMT>(__ldg(x + i));
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

// PREPACKED code words: prepack_nvfp4_w4a16 permutes the 32 bits of each word (the table in
// nvfp4_ops/reference/gemm.py, PREPACK_BITS) so that the pairs (n3 n7), (n2 n6), (n1 n5),
// (n0 n4) come out of the word with funnel rotations and masks only: bf16 9 instructions per
// word (the plain layout: 15), fp16 17, then the same packed multiply by the scale.
template <typename T>
__device__ __forceinline__ void a_pairs_pp(uint32_t q, uint32_t scale, uint32_t (&out)[4]) {
  const auto rot = [q](int n) { return __funnelshift_l(q, q, n); };
  uint32_t v[4];
  if constexpr (std::is_same_v<T, __half>) {  // s -> 15, em -> 11..9 of each half
    constexpr uint32_t S = 0x80008000u, E = 0x0E000E00u;
    v[0] = (q & S) | (rot(3) & E);
    v[1] = (rot(4) & S) | (rot(7) & E);
    v[2] = (rot(10) & S) | (rot(13) & E);
    v[3] = (rot(6) & S) | (rot(9) & 0x06000600u) | (rot(17) & 0x08000800u);
  } else {  // s -> 15, em -> 8..6 of each half
    constexpr uint32_t M = 0x81C081C0u;
    v[0] = q & M;
    v[1] = rot(4) & M;
    v[2] = rot(10) & M;
    v[3] = (rot(6) & 0x80C080C0u) | (rot(14) & 0x01000100u);
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) out[j] = Ops<T>::mul2(v[j], scale);
}

// The 4 operand pairs of one E2M1 code word in the plain or the prepacked bit layout.
template <typename T, bool PREPACKED>
__device__ __forceinline__ void word_pairs(uint32_t q, uint32_t scale, uint32_t (&out)[4]) {
  if constexpr (PREPACKED)
    a_pairs_pp<T>(q, scale, out);
  else
    a_pairs<T>(q, scale, out);
}

// E4M3 word (bytes c0..c3) -> the pairs (c0, c2), (c1, c3) as exact fp16/bf16 values: the
// code bits placed into the exponent/mantissa fields read as e4m3 * 2^-8 (fp16) or
// e4m3 * 2^-120 (bf16), subnormals included; one packed multiply makes them exact codes.
// NaN bytes (0x7F, 0xFF) become NaN halves.
// `mult`: the packed multiplier (default: the exact codes; the wgmma kernel passes the codes
// times its block factor 2^(e - base), e4m3_block_mult).
template <typename T>
__device__ __forceinline__ void e4m3_pairs(uint32_t w, uint32_t (&out)[2],
                                           uint32_t mult = std::is_same_v<T, __half>
                                                               ? 0x5C005C00u    // 2^8
                                                               : 0x7B807B80u) {  // 2^120
  constexpr bool kHalf = std::is_same_v<T, __half>;
  const uint32_t even = kHalf ? ((w & 0x007F007Fu) << 7) | ((w & 0x00800080u) << 8)
                              : ((w & 0x007F007Fu) << 4) | ((w & 0x00800080u) << 8);
  const uint32_t odd = kHalf ? ((w & 0x7F007F00u) >> 1) | (w & 0x80008000u)
                             : ((w & 0x7F007F00u) >> 4) | (w & 0x80008000u);
  out[0] = Ops<T>::mul2(even, mult);
  out[1] = Ops<T>::mul2(odd, mult);
  const uint32_t v = ~w & 0x7F7F7F7Fu;  // a zero byte <=> a NaN code byte
  if ((v - 0x01010101u) & ~v & 0x80808080u) {
#pragma unroll
    for (int b = 0; b < 4; ++b)
      if (((w >> (8 * b)) & 0x7Fu) == 0x7Fu)  // byte b: pair b % 2, half b / 2
        out[b % 2] |= 0x7FFFu << (16 * (b / 2));
  }
}

// The mma work of one MXFP8 phase: per unit, the two mmas of its block into a zeroed
// fragment, then acc += fragment * 2^(e - 127) per row in fp32 (exact operands, any E8M0 byte;
// 0xFF gives NaN).
template <typename T, int NT>
__device__ __forceinline__ void mma_phase_mxfp8(float (&acc)[NT][4], const WRegs& r,
                                                const unsigned char* xs,
                                                const int (&tok_off)[NT]) {
#pragma unroll
  for (int u = 0; u < kUnits<kMxfp8>; ++u) {
    uint32_t pg[4], ph[4], lo[2], hi[2];
    e4m3_pairs<T>(r.w[0][2 * u], lo);
    e4m3_pairs<T>(r.w[0][2 * u + 1], hi);
    pg[0] = lo[0], pg[1] = lo[1], pg[2] = hi[0], pg[3] = hi[1];
    e4m3_pairs<T>(r.w[1][2 * u], lo);
    e4m3_pairs<T>(r.w[1][2 * u + 1], hi);
    ph[0] = lo[0], ph[1] = lo[1], ph[2] = hi[0], ph[3] = hi[1];
    const float sg = e8m0_decode((r.s[0][u / 4] >> (8 * (u % 4))) & 0xFFu);
    const float sh = e8m0_decode((r.s[1][u / 4] >> (8 * (u % 4))) & 0xFFu);
    const uint32_t a0[4] = {pg[0], ph[0], pg[1], ph[1]};
    const uint32_t a1[4] = {pg[2], ph[2], pg[3], ph[3]};
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const uint4 xv = *reinterpret_cast<const uint4*>(xs + tok_off[nt] + 16 * u);
      float d[4] = {0.f, 0.f, 0.f, 0.f};
      mma16816<T>(d, a0, xv.x, xv.y);
      mma16816<T>(d, a1, xv.z, xv.w);
      acc[nt][0] = fmaf(d[0], sg, acc[nt][0]);
      acc[nt][1] = fmaf(d[1], sg, acc[nt][1]);
      acc[nt][2] = fmaf(d[2], sh, acc[nt][2]);
      acc[nt][3] = fmaf(d[3], sh, acc[nt][3]);
    }
  }
}

// The output element from its fp32 sum: * 2^7 / gs, + bias in fp32, one rounding.
template <typename T>
__device__ __forceinline__ T finish(float sum, float inv, const T* bias, int n) {
  float v = sum * inv;
  if (bias) v += Elem<T>::to_float(bias[n]);
  return Ops<T>::from_float(v);
}

// MXFP4 in the E2M1 layout: the operands are scaled per block like NVFP4's, relative to a
// running exponent base per row (`MxBase`: the largest E8M0 byte of the row seen so far), so
// that no operand overflows: operand = e2m1 * 2^(e - base) (bf16; fp16: * 2^(e - base + 1),
// which keeps 6 * 2 below the fp16 maximum), exact down to blocks 2^-132 (bf16) / 2^-24 (fp16)
// below the row's largest, whose contribution is below the fp32 rounding of the sums anyway;
// blocks further down read as 0. When the base of a row grows, its sums are rescaled by the
// (exact) power of two; the epilogue multiplies them by 2^(base - 127) (fp16: 2^(base - 128)).
// An E8M0 byte 255 (NaN) gives a NaN operand pair, as the reference's NaN block.
struct MxBase {
  int e[2] = {0, 0};  // rows g and g + 8 of the thread
};

// The packed fp16 / bf16 pair 2^(e - base + off) for an E8M0 byte e: 0 where its exponent
// field falls below 1 (blocks far below the row's base), NaN for the byte 255.
template <typename T>
__device__ __forceinline__ uint32_t mx_pow2_pair(uint32_t e, int base, int off) {
  constexpr bool kHalf = std::is_same_v<T, __half>;
  const int field = int(e) - base + off + (kHalf ? 15 : 127);
  const uint32_t bits = field > 0 ? uint32_t(field) << (kHalf ? 10 : 7) : 0u;
  return e == 255u ? 0x7FFF7FFFu : bits | (bits << 16);
}

// MXFP4: the operand multiplier of a block, bf16 2^(e - base + 126), fp16 2^(e - base + 15)
// (the E2M1 bits read as e2m1 * 2^-126 / 2^-14: see Ops<T>::kShift).
template <typename T>
__device__ __forceinline__ uint32_t mx_scale_pair(uint32_t e, int base) {
  return mx_pow2_pair<T>(e, base, std::is_same_v<T, __half> ? 15 : 126);
}

// MXFP4, at the start of each step: raises each row's base to the step's largest finite
// E8M0 byte (over the 4 threads of the row) and rescales that row's sums to the new base.
template <int NT>
__device__ __forceinline__ void mxfp4_step_base(float (&acc)[NT][4], const WRegs& r, int t,
                                                MxBase& base) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    uint32_t m = 0;  // the row's largest finite E8M0 byte of the step (255 = NaN: left out)
#pragma unroll
    for (int i = 0; i < 4 / kPhases<kMxfp4>; ++i) {
      const uint32_t e = (r.s[h][i] >> (8 * t)) & 0xFFu;
      m = max(m, e == 255u ? 0u : e);
    }
    m = max(m, __shfl_xor_sync(0xFFFFFFFFu, m, 1));
    m = max(m, __shfl_xor_sync(0xFFFFFFFFu, m, 2));  // the 4 threads of the row
    const int nb = max(base.e[h], int(m));
    // 2^(old - new) >= 2^-254: 0 below the fp32 range, where the old sums no longer matter
    const int f = base.e[h] - nb + 127;
    const float factor = __uint_as_float(f > 0 ? uint32_t(f) << 23 : 0u);
    base.e[h] = nb;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      acc[nt][2 * h] *= factor;
      acc[nt][2 * h + 1] *= factor;
    }
  }
}

// The operand multipliers of chunks 2 sw, 2 sw + 1 of row h in the slots the mma step reads
// (out[uu / 2] for code word 8 sw + uu): NVFP4 one per 16-block, MXFP4 one per chunk.
template <typename T, int FMT>
__device__ __forceinline__ void step_scale_pairs(const WRegs& r, int h, int sw, int t,
                                                 const MxBase& base, uint32_t (&out)[4]) {
  if constexpr (FMT == kNvfp4) {
    scale_pairs<T>(nvfp4_scale_word(r, h, sw), out);
  } else {
    const uint32_t lo = mx_scale_pair<T>((r.s[h][2 * sw] >> (8 * t)) & 0xFFu, base.e[h]);
    const uint32_t hi = mx_scale_pair<T>((r.s[h][2 * sw + 1] >> (8 * t)) & 0xFFu, base.e[h]);
    out[0] = out[1] = lo;
    out[2] = out[3] = hi;
  }
}

// The mma work of one super-step (E2M1 formats): the weights of `r` against the activation
// stage at `xs` (thread t's segment; token g of tile nt at xs + tok(nt) * tstride).
template <typename T, int FMT, int NT, bool PREPACKED = false>
__device__ __forceinline__ void mma_step(float (&acc)[NT][4], const WRegs& r,
                                         const unsigned char* xs, const int (&tok_off)[NT],
                                         int t, MxBase& base) {
  if constexpr (FMT == kMxfp4) mxfp4_step_base<NT>(acc, r, t, base);
#pragma unroll
  for (int sw = 0; sw < 2 / kPhases<FMT>; ++sw) {  // chunks 2sw, 2sw + 1 of the phase
    uint32_t sg[4], sh[4];
    step_scale_pairs<T, FMT>(r, 0, sw, t, base, sg);
    step_scale_pairs<T, FMT>(r, 1, sw, t, base, sh);
#pragma unroll
    for (int uu = 0; uu < 8; ++uu) {
      const int u = 8 * sw + uu;  // code word: chunk u / 4, NVFP4 block byte (u % 8) / 2
      uint32_t pg[4], ph[4];
      word_pairs<T, PREPACKED>(r.w[0][u], sg[uu / 2], pg);
      word_pairs<T, PREPACKED>(r.w[1][u], sh[uu / 2], ph);
      // step 2u: A = {(g, n3 n7), (g+8, n3 n7), (g, n2 n6), (g+8, n2 n6)}; step 2u+1 likewise
      const uint32_t a0[4] = {pg[0], ph[0], pg[1], ph[1]};
      const uint32_t a1[4] = {pg[2], ph[2], pg[3], ph[3]};
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const uint4 xv = *reinterpret_cast<const uint4*>(xs + tok_off[nt] + 16 * u);
        mma16816<T>(acc[nt], a0, xv.x, xv.y);
        mma16816<T>(acc[nt], a1, xv.z, xv.w);
      }
    }
  }
}

// XPRE (few tokens): the whole K range of a split, for the CTA's mt real tokens, loaded once
// into shared memory (token tok, local step ls at tok * x_stride + ls * kTokenBytes, laid out
// and permuted as a ring stage), so that the main loop has no barrier and no activation
// traffic: every warp streams its weights on its own. Tokens past M are never loaded; their
// B columns read token mt - 1 and their outputs are not stored.
template <int FMT>
__device__ __forceinline__ void preload_x(unsigned char* smem, const Params& p, int m0, int mt,
                                          int s_begin, int n_steps, int tid) {
  const char* x = static_cast<const char*>(p.x);
  const int chunks = mt * n_steps * (kSuperK / 8);
  for (int c = tid; c < chunks; c += kThreads) {
    const int j = c % (kSuperK / 8), rest = c / (kSuperK / 8);
    const int ls = rest % n_steps, tok = rest / n_steps;
    const int k = (s_begin + ls) * kSuperK + 8 * j;
    const uint4 v = k < p.K ? __ldg(reinterpret_cast<const uint4*>(
                                  x + (int64_t(m0 + tok) * p.K + k) * 2))
                            : make_uint4(0, 0, 0, 0);
    *reinterpret_cast<uint4*>(smem + tok * p.x_stride + ls * kTokenBytes + chunk_slot<FMT>(j)) =
        permute_for<FMT>(v);
  }
  __syncthreads();
}

// The mma work of phase `phase` (of one super-step) against the stage at xs.
template <typename T, int FMT, int NT, bool PREPACKED>
__device__ __forceinline__ void mma_phase(float (&acc)[NT][4], const WRegs& r,
                                          const unsigned char* xs, const int (&tok_off)[NT],
                                          int phase, int t, MxBase& base) {
  const unsigned char* xp = xs + (phase % kPhases<FMT>) * kUnits<FMT> * 16;  // its units
  if constexpr (kE2m1<FMT>)
    mma_step<T, FMT, NT, PREPACKED>(acc, r, xp, tok_off, t, base);
  else
    mma_phase_mxfp8<T, NT>(acc, r, xp, tok_off);
}

// The epilogue of a CTA's tile. acc[nt]: (row g, tokens 2t, 2t+1), (row g+8, tokens 2t, 2t+1)
// of token tile nt (the mma.sync C fragment; wgmma's D fragment has the same layout). One
// split: the outputs; several: fp32 partials, summed by the last CTA of the tile to arrive
// (ticket `tile`, the CTA's blockIdx.x) in split order. MX_BASE: the sums are in units of the
// rows' operand base, 2^(base - 127) (fp16: MXFP4 2^(base - 128), MXFP8 2^(base - 134)):
// MXFP4 always, MXFP8 in the wgmma kernel (the mma.sync kernel post-scales its blocks).
template <typename T, int FMT, int NT, bool MX_BASE = FMT == kMxfp4>
__device__ __forceinline__ void store_tile(float (&acc)[NT][4], const MxBase& base,
                                           const Params& p, int m0, int row0, int n_tile,
                                           int split, int tile) {
  constexpr int kTokens = 8 * NT;
  const int tid = threadIdx.x, t = tid % 4;
  if constexpr (MX_BASE) {
    constexpr float kHalfUnit = FMT == kMxfp8 ? 0.0078125f : 0.5f;  // fp16: 2^-7 / 2^-1
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float f = std::is_same_v<T, __half> ? kHalfUnit * e8m0_decode(base.e[h])
                                                : e8m0_decode(base.e[h]);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) acc[nt][2 * h] *= f, acc[nt][2 * h + 1] *= f;
    }
  }
  const float inv = FMT == kNvfp4 ? 128.0f / __ldg(p.gs) : 1.0f;
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
    int* ticket = p.tickets + tile;
    const int prev = atomicAdd(ticket, 1);
    last = prev == p.splits - 1;
    if (last) *ticket = 0;  // ready for the next launch (and for CUDA-graph replays)
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  // The sums in split order 0..S-1 (the same bits as any arrival order). N % 4 == 0: four
  // outputs per 16-byte load and every load of a thread issued before the first add, so that
  // the last CTA waits for the L2 about once per split, not once per output.
  const int64_t mn = int64_t(p.M) * p.N;
  if (p.N % 4 == 0) {
    constexpr int kQuads = kTokens * kRowsPerCta / 4;
    constexpr int kBatch = kQuads / kThreads;  // 1, 2, 4, 8
    static_assert(kBatch * kThreads == kQuads, "whole batches of quads");
    int64_t off[kBatch];
    float4 sum[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int q = tid + b * kThreads;
      const int m = m0 + q / (kRowsPerCta / 4);
      const int n = n_tile * kRowsPerCta + 4 * (q % (kRowsPerCta / 4));
      off[b] = m < p.M && n < p.N ? int64_t(m) * p.N + n : -1;
      sum[b] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
    for (int s = 0; s < p.splits; ++s) {
      float4 v[kBatch];
#pragma unroll
      for (int b = 0; b < kBatch; ++b)
        v[b] = off[b] >= 0 ? __ldcg(reinterpret_cast<const float4*>(p.partials + s * mn + off[b]))
                           : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int b = 0; b < kBatch; ++b)
        sum[b].x += v[b].x, sum[b].y += v[b].y, sum[b].z += v[b].z, sum[b].w += v[b].w;
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      if (off[b] < 0) continue;
      const int n = int(off[b] % p.N);
      y[off[b]] = finish<T>(sum[b].x, inv, bias, n);
      y[off[b] + 1] = finish<T>(sum[b].y, inv, bias, n + 1);
      y[off[b] + 2] = finish<T>(sum[b].z, inv, bias, n + 2);
      y[off[b] + 3] = finish<T>(sum[b].w, inv, bias, n + 3);
    }
    return;
  }
  for (int i = tid; i < kTokens * kRowsPerCta; i += kThreads) {
    const int m = m0 + i / kRowsPerCta;
    const int n = n_tile * kRowsPerCta + i % kRowsPerCta;
    if (m >= p.M || n >= p.N) continue;
    const int64_t off = int64_t(m) * p.N + n;
    float sum = 0.f;
    for (int s = 0; s < p.splits; ++s) sum += __ldcg(p.partials + s * mn + off);
    y[off] = finish<T>(sum, inv, bias, n);
  }
}

template <typename T, int FMT, int NT, bool ALIGNED, bool PREPACKED>
__global__ void __launch_bounds__(kThreads, kMinBlocksOf<FMT, NT>)
    w16_gemm_kernel(const Params p) {
  extern __shared__ __align__(16) unsigned char smem[];
  using C = Config<NT>;
  constexpr int P = kPhases<FMT>;
  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  // Tile blockIdx.x: the m tiles of a weight tile are neighbours, so that they run together
  // (one DRAM read of the weight tile, the other m tiles' reads hit the L2).
  const int m_tiles = (p.M + C::kTokens - 1) / C::kTokens;
  const int m_tile = blockIdx.x % m_tiles, n_tile = blockIdx.x / m_tiles, split = blockIdx.y;
  const int row0 = n_tile * kRowsPerCta + warp * 16 + g;
  const int m0 = m_tile * C::kTokens;
  const int s_begin = split * p.steps_per_split;
  const int s_end = min(p.steps, s_begin + p.steps_per_split);
  const int n_steps = s_end - s_begin;
  const int ph_begin = s_begin * P, n_phases = n_steps * P;  // weight phases
  const uint32_t smem_base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));

  float acc[NT][4];
#pragma unroll
  for (int i = 0; i < NT; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
  MxBase base;  // MXFP4 only

  if constexpr (C::kXPre) {
    const int mt = min(C::kTokens, p.M - m0);
    int tok_off[NT];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) tok_off[nt] = min(nt * 8 + g, mt - 1) * p.x_stride;
    WRegs r0, r1;  // ping-pong: the next phase's weights load while this one's are used
    if (n_phases > 0) load_w<FMT, ALIGNED, PREPACKED>(r0, p, row0, t, ph_begin);
    if (n_phases > 1) load_w<FMT, ALIGNED, PREPACKED>(r1, p, row0, t, ph_begin + 1);
    preload_x<FMT>(smem, p, m0, mt, s_begin, n_steps, tid);
    const unsigned char* xs = smem + t * kSegBytes;
    for (int i = 0; i < n_phases; i += 2) {
      mma_phase<T, FMT, NT, PREPACKED>(acc, r0, xs + (i / P) * kTokenBytes, tok_off, i, t, base);
      if (i + 1 >= n_phases) break;
      if (i + 2 < n_phases) load_w<FMT, ALIGNED, PREPACKED>(r0, p, row0, t, ph_begin + i + 2);
      mma_phase<T, FMT, NT, PREPACKED>(acc, r1, xs + ((i + 1) / P) * kTokenBytes, tok_off,
                                       i + 1, t, base);
      if (i + 3 < n_phases) load_w<FMT, ALIGNED, PREPACKED>(r1, p, row0, t, ph_begin + i + 3);
    }
  } else {
    // Ring of kStages activation stages (x permuted beforehand: permute_x_kernel). One
    // barrier per step: after it, stage st has landed for every thread and every warp is done
    // with step st - 1, whose stage is then refilled with step st + kStages - 1.
#pragma unroll
    for (int s = 0; s < C::kStages - 1; ++s) {
      if (s < n_steps)
        load_x_stage<FMT, NT>(smem_base + s * C::kStageBytes, p, m0, s_begin + s, tid);
      cp_async_commit();
    }
    int tok_off[NT];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) tok_off[nt] = (nt * 8 + g) * kTokenBytes;
    WRegs cur;
    if (n_phases > 0) load_w<FMT, ALIGNED, PREPACKED>(cur, p, row0, t, ph_begin);

    for (int i = 0; i < n_phases; ++i) {
      const int st = i / P;  // local step: its stage lands at the first phase of the step
      if (i % P == 0) {
        cp_async_wait<C::kStages - 2>();
        __syncthreads();
        const int s = st + C::kStages - 1;
        if (s < n_steps)
          load_x_stage<FMT, NT>(smem_base + (s % C::kStages) * C::kStageBytes, p, m0,
                                s_begin + s, tid);
        cp_async_commit();
      }
      WRegs nxt;
      if (i + 1 < n_phases) load_w<FMT, ALIGNED, PREPACKED>(nxt, p, row0, t, ph_begin + i + 1);
      mma_phase<T, FMT, NT, PREPACKED>(
          acc, cur, smem + (st % C::kStages) * C::kStageBytes + t * kSegBytes, tok_off, i, t,
          base);
      if (i + 1 < n_phases) cur = nxt;
    }
    cp_async_wait<0>();
  }

  store_tile<T, FMT, NT>(acc, base, p, m0, row0, n_tile, split, blockIdx.x);
}

}  // namespace gemm
}  // namespace nvfp4
