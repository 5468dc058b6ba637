// The fused NVFP4 / MXFP4 W4A16 and MXFP8 W8A16 GEMM with Hopper's warpgroup MMA (sm_90a) for
// M > 32 (MXFP8: M > 16): 64 tokens per CTA up to M = 64, 128 above (where the mma.sync kernel
// of w16_gemm.cuh, at 64 tokens per CTA, needs ~178 registers and runs 2 warps per scheduler
// with the tensor pipe 27 % busy; NOTES.md).
//
// Same weight tile, thread layout and numerics as w16_gemm_kernel: 128 weight rows per CTA (8
// warps, 16 rows each), the codes loaded global -> registers ahead of their use and converted
// in registers (a_pairs: NVFP4 e2m1 * sf * 2^-7, MXFP4 e2m1 * 2^(e - base), exact; MXFP8:
// e4m3_pairs, operand-scaled e4m3 * 2^(e - base) instead of the mma.sync kernel's post-scaled
// blocks), fp32 sums, the same split-K and epilogue (store_tile). What changes is the multiply
// (and the MX base: fixed per split, mx_split_base):
// * Each warpgroup (4 warps, 64 rows) issues wgmma.mma_async m64nNk16 (N = 64 or 128 tokens)
//   with the converted weights as the REGISTER A operand (its per-warp fragment is the
//   mma.sync m16n8k16 A fragment: the registers a_pairs already produces) and the tokens'
//   activations as the shared-memory B operand, asynchronously.
// * The activations are rearranged once per call (wgmma_x_kernel) into the canonical K-major
//   layout without swizzle, in the k order of the A fragments: for mma k-step j and token n,
//   the 16 bytes of B values of core matrix kk are the pairs of the 4 threads t of a row
//   (t's code word pair 2h + kk, see a_pairs and permute_chunk). A ring stage (64 KB: one
//   512-wide step of 64 tokens or one 256-wide phase of 128) holds, per phase, chunk
//   ch = 2 j + kk of token n at ch * 16 N + (n / 8) * 128 + (n % 8) * 16: core matrices of 8
//   tokens x 16 bytes, 128 B apart along N (the descriptor's stride offset) and 16 N bytes
//   apart along K (its leading offset).
// * Three stages; at the first phase of a stage (one barrier) every warp has waited for its
//   wgmma groups but the last, of the stage before, so the stage before that is free and is
//   refilled: 128-token tiles by the bulk-copy engine (warp 0, one 2 KB copy per chunk, a
//   per-stage mbarrier that the MMAs wait on), 64-token tiles by per-thread cp.async (a proxy
//   fence before the barrier makes their writes visible to wgmma). The activation ring is
//   what limits the kernel from M = 64 on (wg_exp.sh: 28-34 % faster without its refills).
// * One wgmma group per code word (2 MMAs), two sets of A registers: the conversion of word
//   u overlaps the MMAs of word u - 1. The weights are loaded 3 (64 tokens) or 2 (128)
//   phases ahead in register buffers: the MMAs being asynchronous, a phase is short, and the
//   one-phase lookahead of the mma.sync kernel left the warps waiting on DRAM (ncu: 24 % of
//   the stall samples on the first use of the weight loads).
// Built only for sm_90a (wgmma needs the arch-specific target); the launcher takes it where
// the device is sm_90 and the build holds sm_90a code (ops.cu, wgmma_serves).
#pragma once

#include "gemm/w16_gemm.cuh"

namespace nvfp4 {
namespace gemm {

constexpr int kWgChunks = 2 * kSuperK / 16;  // 16-byte B chunks per token and 512-wide step
constexpr int kWgPhaseChunks = kWgChunks / 2;  // ... per 256-wide phase
constexpr int kWgSmem = 192 * 1024;            // the activation ring: 1 CTA per SM

// The tile of NTOK tokens (the wgmma's N: 64 or 128): a ring stage holds kSP phases of
// activations (64 KB: a 512-wide step of 64 tokens or a phase of 128; a stage per phase at 64
// tokens, six of them, measured 5-9 % slower: twice the barriers), 3 stages; kNB weight
// register buffers (the loads run kNB - 1 phases ahead; 5 and 3 measured slower than 4 at
// 64 tokens, 128 tokens hold 32 more accumulators).
template <int NTOK>
struct WgTile {
  static_assert(NTOK == 64 || NTOK == 128, "64 or 128 tokens");
  static constexpr int kKStride = NTOK * 16;  // bytes between K-adjacent core matrices
  static constexpr int kPhaseBytes = NTOK * kWgPhaseChunks * 16;
  static constexpr int kSP = NTOK == 64 ? 2 : 1;  // phases per stage
  static constexpr int kStageBytes = kSP * kPhaseBytes;
  static constexpr int kStages = kWgSmem / kStageBytes;
  static constexpr int kAcc = NTOK / 2;       // fp32 accumulators per thread
  static constexpr int kNB = NTOK == 64 ? 4 : 3;
};

// x [M, K] (K % 8 == 0) -> xw, 16-byte chunks: chunk ch (= 2 j + kk, j = 16 ph + 2 u + h) of
// step s of token n at xw[(s * kWgChunks + ch) * Mp + n], Mp = M rounded up to the token tile
// (tokens innermost, so that a ring stage's chunk of NTOK tokens is one contiguous copy;
// tokens M .. Mp - 1 are zeros). One unit per thread: token n, step s, phase ph, code word /
// unit u: the 4 input chunks of threads t = 0..3 (E2M1: k = s 512 + 128 (2 ph + u / 4) + 32 t
// + 8 (u % 4); E4M3: k = s 512 + 256 ph + 32 u + 8 t), the 4 output chunks
// ch = 32 ph + 4 u + 2 h + kk (word t = permute_for<FMT>(chunk t)[2 h + kk]).
template <int FMT>
__global__ void wgmma_x_kernel(const uint4* __restrict__ x, uint4* __restrict__ xw, int M, int Mp,
                               int K, int steps) {
  const int64_t units = int64_t(Mp) * steps * 16;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < units;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int n = int(i % Mp);
    const int64_t rest = i / Mp;
    const int pu = int(rest % 16), s = int(rest / 16);
    const int ph = pu / 8, u = pu % 8;
    uint4 q[4];
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const int k = kE2m1<FMT> ? s * kSuperK + 128 * (2 * ph + u / 4) + 32 * t + 8 * (u % 4)
                               : s * kSuperK + 256 * ph + 32 * u + 8 * t;
      q[t] = permute_for<FMT>(k < K && n < M ? __ldg(x + (int64_t(n) * K + k) / 8)
                                             : make_uint4(0, 0, 0, 0));
    }
    uint4* out = xw + (int64_t(s) * kWgChunks + 32 * ph + 4 * u) * Mp + n;
    out[0] = make_uint4(q[0].x, q[1].x, q[2].x, q[3].x);
    out[int64_t(Mp)] = make_uint4(q[0].y, q[1].y, q[2].y, q[3].y);
    out[2 * int64_t(Mp)] = make_uint4(q[0].z, q[1].z, q[2].z, q[3].z);
    out[3 * int64_t(Mp)] = make_uint4(q[0].w, q[1].w, q[2].w, q[3].w);
  }
}

// 64-token tiles: the copies of a ring stage (the kSP = 2 (global) phases from `phase`, even)
// for tokens m0 .. m0 + NTOK - 1 by per-thread cp.async, zero-filled past M: chunk 32 phase +
// c of token tok (the chunks of a stage are consecutive in xw: 64 per step, Mp tokens apart)
// lands at c * kKStride + (tok / 8) * 128 + (tok % 8) * 16. Copy i of thread tid is stage
// chunk c = tid / NTOK + i * (kThreads / NTOK) of token tid % NTOK, so a thread's source and
// destination move by fixed strides: both are set up once per CTA and a stage costs one
// 64-bit add per copy (the address arithmetic of a copy, rebuilt from its index, was 40 % of
// the kernel's instructions at M = 128). (The bulk copies of the 128-token tile below
// measured 8-37 % slower here, at 1 KB per copy: wg_bulk.sh.)
template <int NTOK>
struct WgStageCopy {
  static constexpr int kPerThread = NTOK * kWgPhaseChunks * WgTile<NTOK>::kSP / kThreads;
  static constexpr int kChunkStep = kThreads / NTOK;  // stage chunks between two copies
  static_assert(kThreads % NTOK == 0 && kPerThread * kThreads ==
                                           NTOK * kWgPhaseChunks * WgTile<NTOK>::kSP, "copies");
  const uint4* src;  // chunk tid / NTOK of phase 0 (xw itself where the token is past M)
  int64_t step;      // source elements between two copies of a thread (0 past M)
  int64_t per_phase; // ... between two phases (0 past M)
  uint32_t dst;      // offset in the stage
  bool ok;
  __device__ __forceinline__ WgStageCopy(const uint4* xw, int M, int Mp, int m0, int tid) {
    const int tok = tid % NTOK, c = tid / NTOK;
    ok = m0 + tok < M;
    src = ok ? xw + int64_t(c) * Mp + m0 + tok : xw;
    step = ok ? int64_t(kChunkStep) * Mp : 0;
    per_phase = ok ? int64_t(kWgPhaseChunks) * Mp : 0;
    dst = c * WgTile<NTOK>::kKStride + (tok / 8) * 128 + (tok % 8) * 16;
  }
  __device__ __forceinline__ void load(uint32_t stage, int phase) const {
    const uint4* s = src + phase * per_phase;
#pragma unroll
    for (int i = 0; i < kPerThread; ++i)
      cp_async16(stage + dst + i * kChunkStep * WgTile<NTOK>::kKStride, s + i * step, ok);
  }
};

// 128-token tiles: the copies of a ring stage (the phase `phase`) for tokens m0 .. m0 + 127
// with the bulk-copy engine: chunk 32 phase + c of the 128 tokens (2 KB contiguous in xw,
// whose tokens are padded to whole tiles with zeros) lands at c * kKStride, one cp.async.bulk
// per chunk issued by warp 0, completing on the stage's mbarrier (which its first lane arms
// with the stage's byte count first). Without the refills the kernel ran 28-34 % faster at
// M = 128..256 (wg_exp.sh); the bulk copies took 8-13 % off at M = 128..512 against
// per-thread cp.async (wg_bulk.sh).
template <int NTOK>
__device__ __forceinline__ void wg_stage_bulk(uint32_t stage, uint32_t bar, const uint4* xw,
                                              int Mp, int m0, int phase, int lane) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using W = WgTile<NTOK>;
  constexpr int kChunks = kWgPhaseChunks * W::kSP;
  constexpr uint32_t kBytes = NTOK * 16;
  if (lane == 0)
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar),
                 "r"(uint32_t(W::kStageBytes))
                 : "memory");
  __syncwarp();
  const uint4* src = xw + int64_t(kWgPhaseChunks) * phase * Mp + m0;
#pragma unroll
  for (int c = lane; c < kChunks; c += 32)
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
        ::"r"(stage + c * W::kKStride), "l"(src + int64_t(c) * Mp), "r"(kBytes), "r"(bar)
        : "memory");
#endif
}

// Waits until the mbarrier at `bar` has completed the phase of parity `parity`.
__device__ __forceinline__ void wg_bar_wait(uint32_t bar, uint32_t parity) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nWAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra WAIT_%=;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
#endif
}

// Shared-memory matrix descriptor of the B tile at smem address `addr` (no swizzle; leading
// byte offset = K-adjacent core matrices, stride byte offset = N-adjacent ones), as its low
// and high words. Shared addresses are below 2^18, so the start address field (addr >> 4, 14
// bits) of a tile 16 n bytes further is the low word plus n, with no carry: a phase builds
// one descriptor and adds its MMAs' offsets to the low word.
template <int NTOK>
__device__ __forceinline__ uint32_t wg_desc_lo(uint32_t addr) {
  return (addr >> 4) | ((WgTile<NTOK>::kKStride >> 4) << 16);
}
__device__ __forceinline__ uint64_t wg_desc(uint32_t lo) {
  return uint64_t(lo) | (uint64_t(128 >> 4) << 32);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void wg_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wg_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wg_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Shared-memory writes of this thread (cp.async, generic proxy) made visible to wgmma's reads.
__device__ __forceinline__ void wg_fence_proxy() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Keeps the compiler from moving accesses of v across the asynchronous MMAs.
__device__ __forceinline__ void wg_fence_operand(float& v) { asm volatile("" : "+f"(v)::"memory"); }

#define NVFP4_WG_D8(i)                                                        \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), \
      "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define NVFP4_WG_MMA64(TY)                                                                \
  asm volatile(                                                                           \
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"                                          \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " {"                        \
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "            \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, " \
      "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"                                       \
      : NVFP4_WG_D8(0), NVFP4_WG_D8(8), NVFP4_WG_D8(16), NVFP4_WG_D8(24)                  \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc))
#define NVFP4_WG_MMA128(TY)                                                               \
  asm volatile(                                                                           \
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"                                          \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " {"                       \
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "            \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "  \
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "  \
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, " \
      "{%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"                                       \
      : NVFP4_WG_D8(0), NVFP4_WG_D8(8), NVFP4_WG_D8(16), NVFP4_WG_D8(24),                 \
        NVFP4_WG_D8(32), NVFP4_WG_D8(40), NVFP4_WG_D8(48), NVFP4_WG_D8(56)                \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc))

// d += A (registers, this warp's 16 rows of the warpgroup's 64) x B (descriptor: 16 k x NTOK
// tokens); d[4 nt + e] as acc[nt][e] of the mma.sync kernel.
template <typename T, int NTOK>
__device__ __forceinline__ void wg_mma(float (&d)[NTOK / 2], const uint32_t (&a)[4],
                                       uint64_t desc) {
  if constexpr (NTOK == 64) {
    if constexpr (std::is_same_v<T, __half>)
      NVFP4_WG_MMA64("f16");
    else
      NVFP4_WG_MMA64("bf16");
  } else {
    if constexpr (std::is_same_v<T, __half>)
      NVFP4_WG_MMA128("f16");
    else
      NVFP4_WG_MMA128("bf16");
  }
}
#undef NVFP4_WG_MMA64
#undef NVFP4_WG_MMA128
#undef NVFP4_WG_D8
#endif

// MX: the base of each of the thread's rows for the whole split (the largest finite E8M0
// byte of its steps; K % 512 == 0), fixed before the first MMA: the MMAs being asynchronous,
// the mma.sync kernel's running base (which rescales the sums when it grows) would drain
// them at every step. MXFP4 operands are e2m1 * 2^(e - base) as there, exact down to blocks
// 2^-132 (bf16) / 2^-24 (fp16) below the split's largest block of the row; MXFP8 operands
// e4m3 * 2^(e - base) (bf16; fp16: * 2^(e - base + 7), at most 57344), exact down to blocks
// 2^-124 (bf16) / 2^-22 (fp16) below it (e4m3_block_mult), where the mma.sync kernel
// post-scales each block's fp32 sums instead.
__device__ __forceinline__ void mx_split_base(MxBase& base, const Params& p, int row0,
                                              int s_begin, int n_steps) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int n = row0 + 8 * h;
    uint32_t m = 0;
    if (n < p.N) {
      const uint4* sc = reinterpret_cast<const uint4*>(p.sf + int64_t(n) * (p.K / 32)) +
                        s_begin;  // 16 bytes (one 512-wide step) per uint4
      for (int i = 0; i < n_steps; ++i) {
        const uint4 v = __ldg(sc + i);
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int b = 0; b < 4; ++b) {
            const uint32_t e = (w[j] >> (8 * b)) & 0xFFu;
            m = max(m, e == 255u ? 0u : e);
          }
      }
    }
    base.e[h] = int(m);
  }
}

// MXFP8: the packed multiplier of the E4M3 bits of a block with E8M0 byte e (see e4m3_pairs:
// they read as e4m3 * 2^-120 in bf16, e4m3 * 2^-8 in fp16): bf16 2^(120 + e - base), fp16
// 2^(15 + e - base), so that the operands are e4m3 * 2^(e - base) (fp16: * 2^7 more, at most
// 57344); 0 for blocks too far below the base (the factor itself would underflow), NaN for
// the byte 255.
template <typename T>
__device__ __forceinline__ uint32_t e4m3_block_mult(uint32_t e, int base) {
  return mx_pow2_pair<T>(e, base, std::is_same_v<T, __half> ? 15 : 120);
}

// One phase of the thread's weights (`r`, 8 code words per row) against the stage at `stage`
// (shared address, one phase of NTOK tokens): the operand scale pairs of rows g / g + 8
// (NVFP4: per 16-block; MX: per 32-block, relative to the row's base), then per code word
// (MXFP8: per unit of 2 words) its A fragments into set u % 2 (once that set's previous group
// is done) and its 2 asynchronous MMAs (k-steps j = 2 u + h of the phase) as one wgmma group,
// so that the conversion of a word overlaps the MMAs of the one before.
template <typename T, int FMT, bool PREPACKED, int NTOK>
__device__ __forceinline__ void wg_phase(float (&d)[NTOK / 2], uint32_t (&a)[2][2][4],
                                         const WRegs& r, const MxBase& base, int t,
                                         uint32_t stage) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  const uint32_t desc_lo = wg_desc_lo<NTOK>(stage);
  uint32_t sg[4], sh[4];  // E2M1 word u's pair: [u / 2]
  if constexpr (kE2m1<FMT>) {
    step_scale_pairs<T, FMT>(r, 0, 0, t, base, sg);
    step_scale_pairs<T, FMT>(r, 1, 0, t, base, sh);
  }
#pragma unroll
  for (int u = 0; u < 8; ++u) {  // E2M1: code word u; E4M3: unit u (words 2u, 2u + 1)
    uint32_t pg[4], ph[4];
    if constexpr (FMT == kMxfp8) {
      const uint32_t mg = e4m3_block_mult<T>((r.s[0][u / 4] >> (8 * (u % 4))) & 0xFFu, base.e[0]);
      const uint32_t mh = e4m3_block_mult<T>((r.s[1][u / 4] >> (8 * (u % 4))) & 0xFFu, base.e[1]);
      uint32_t lo[2], hi[2];
      e4m3_pairs<T>(r.w[0][2 * u], lo, mg);
      e4m3_pairs<T>(r.w[0][2 * u + 1], hi, mg);
      pg[0] = lo[0], pg[1] = lo[1], pg[2] = hi[0], pg[3] = hi[1];
      e4m3_pairs<T>(r.w[1][2 * u], lo, mh);
      e4m3_pairs<T>(r.w[1][2 * u + 1], hi, mh);
      ph[0] = lo[0], ph[1] = lo[1], ph[2] = hi[0], ph[3] = hi[1];
    } else {
      word_pairs<T, PREPACKED>(r.w[0][u], sg[u / 2], pg);
      word_pairs<T, PREPACKED>(r.w[1][u], sh[u / 2], ph);
    }
    wg_wait<1>();  // the group of word u - 2 (set u % 2) is done
    uint32_t(&s)[2][4] = a[u % 2];
    s[0][0] = pg[0], s[0][1] = ph[0], s[0][2] = pg[1], s[0][3] = ph[1];
    s[1][0] = pg[2], s[1][1] = ph[2], s[1][2] = pg[3], s[1][3] = ph[3];
    wg_fence();
#pragma unroll
    for (int h = 0; h < 2; ++h)
      wg_mma<T, NTOK>(d, s[h],
                      wg_desc(desc_lo + (2 * u + h) * 2 * WgTile<NTOK>::kKStride / 16));
    wg_commit();
  }
#endif
}

// p.x: the rearranged activations (wgmma_x_kernel). Grid and split-K as w16_gemm_kernel with
// NTOK-token tiles. PREPACKED: nvfp4.prepack_nvfp4_w4a16's layout (the same bits as the plain
// one, as in w16_gemm_kernel).
template <typename T, int FMT, bool PREPACKED, int NTOK>
__global__ void __launch_bounds__(kThreads, 1) w16_wgmma_kernel(const Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(16) unsigned char smem[];
  using W = WgTile<NTOK>;
  // (MXFP8: two weight buffers, its E4M3 conversion holding more temporaries: at W::kNB it
  // spilled 400-800 bytes)
  constexpr int P = kPhases<FMT>, S = W::kStages, NB = FMT == kMxfp8 ? 2 : W::kNB;
  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int m_tiles = (p.M + NTOK - 1) / NTOK;
  const int m_tile = blockIdx.x % m_tiles, n_tile = blockIdx.x / m_tiles, split = blockIdx.y;
  const int row0 = n_tile * kRowsPerCta + warp * 16 + g;
  const int m0 = m_tile * NTOK;
  const int s_begin = split * p.steps_per_split;
  const int s_end = min(p.steps, s_begin + p.steps_per_split);
  const int n_steps = s_end - s_begin;
  const int ph_begin = s_begin * P, n_phases = n_steps * P;
  const uint32_t smem_base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const uint4* xw = static_cast<const uint4*>(p.x);
  constexpr bool kBulk = NTOK == 128;  // the stages by bulk copies, else per-thread cp.async
  const WgStageCopy<NTOK> copy(xw, p.M, p.x_stride, m0, tid);  // (unused when kBulk)
  // kBulk: the stages' mbarriers (one arrival, the first lane of warp 0, plus the bytes)
  __shared__ __align__(8) uint64_t s_bar[S];
  const uint32_t bar0 = static_cast<uint32_t>(__cvta_generic_to_shared(s_bar));
  if (kBulk && tid == 0) {
#pragma unroll
    for (int i = 0; i < S; ++i)
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(bar0 + 8 * i) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  float d[W::kAcc];
#pragma unroll
  for (int i = 0; i < W::kAcc; ++i) d[i] = 0.f;
  uint32_t a[2][2][4];  // A fragments of two code words (set u % 2): (k-step h, register)
  MxBase base;  // MX: each row's base, the largest finite E8M0 byte of the split
  if constexpr (FMT != kNvfp4) mx_split_base(base, p, row0, s_begin, n_steps);

  // Ring of S stages of SP phases; stages 0 .. S - 3 are loaded first. At the first phase of
  // stage q: a barrier (every warp has waited for its wgmma groups but the last one, of stage
  // q - 1, so stage q - 2 is free and is refilled with q + S - 2), after which stage q's
  // bytes are there: kBulk, on its mbarrier (use q / S of that slot: parity (q / S) % 2);
  // else this thread's cp.async groups were waited for before the barrier and made visible
  // to the MMAs (the async proxy).
  constexpr int SP = W::kSP;
  const int n_stages = n_phases / SP;  // (whole steps per split: n_phases is even)
  const auto stage_of = [&](int q) { return smem_base + (q % S) * W::kStageBytes; };
  const auto load_stage = [&](int q) {
    if constexpr (kBulk) {
      if (warp == 0)
        wg_stage_bulk<NTOK>(stage_of(q), bar0 + 8 * (q % S), xw, p.x_stride, m0,
                            ph_begin + q * SP, lane);
    } else {
      copy.load(stage_of(q), ph_begin + q * SP);
    }
  };
  const auto phase = [&](int i, const WRegs& r) {
    const int q = i / SP;
    if (i % SP == 0) {
      if constexpr (!kBulk) {
        cp_async_wait<S - 3>();
        wg_fence_proxy();
      }
      __syncthreads();
      if (q + S - 2 < n_stages) load_stage(q + S - 2);
      if constexpr (kBulk) {
        wg_bar_wait(bar0 + 8 * (q % S), (q / S) & 1);
      } else {
        cp_async_commit();
      }
    }
    wg_phase<T, FMT, PREPACKED, NTOK>(d, a, r, base, t,
                                      stage_of(q) + (i % SP) * W::kPhaseBytes);
  };
#pragma unroll
  for (int q = 0; q < S - 2; ++q) {
    if (q < n_stages) load_stage(q);
    if constexpr (!kBulk) cp_async_commit();
  }
  // Weights NB - 1 phases ahead: NB register buffers in turn.
  WRegs r[NB];
#pragma unroll
  for (int b = 0; b + 1 < NB; ++b)
    if (b < n_phases) load_w<FMT, true, PREPACKED>(r[b], p, row0, t, ph_begin + b);
  for (int i = 0; i < n_phases; i += NB) {
#pragma unroll
    for (int b = 0; b < NB; ++b) {
      if (i + b >= n_phases) break;
      if (i + b + NB - 1 < n_phases)
        load_w<FMT, true, PREPACKED>(r[(b + NB - 1) % NB], p, row0, t,
                                     ph_begin + i + b + NB - 1);
      phase(i + b, r[b]);
    }
  }
  wg_wait<0>();
  if constexpr (!kBulk) cp_async_wait<0>();
#pragma unroll
  for (int i = 0; i < W::kAcc; ++i) wg_fence_operand(d[i]);
  float acc[NTOK / 8][4];
#pragma unroll
  for (int nt = 0; nt < NTOK / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nt][e] = d[4 * nt + e];
  store_tile<T, FMT, NTOK / 8, FMT != kNvfp4>(acc, base, p, m0, row0, n_tile, split,
                                              blockIdx.x);
#endif
}

}  // namespace gemm
}  // namespace nvfp4
