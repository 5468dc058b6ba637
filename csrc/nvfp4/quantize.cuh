// NVFP4 quantize / fake-quant / dequantize / global-amax kernels (docs/spec.md sec. 2, 4).
// Torch-free device code; the launchers are in nvfp4/ops.cu, the block math in nvfp4/block.h.
//
// Work layout (quantize, quant_dequant, dequantize): the data tensor is walked in 16-byte
// chunks of the wide side (x for quantize, the output for dequantize): 8 elements for
// fp16/bf16, 4 for fp32, so kG = 2 or 4 consecutive lanes share one 16-element block.
// A CTA tile is blockDim * 4 chunks; the thread's chunk u (0 <= u < 4) is
// tile + u * blockDim + tid, so every warp-wide load and store is contiguous, and each
// thread has 4 independent 16-byte loads in flight (dequantize: 4 loads of 4 or 2 packed
// bytes, 4 16-byte stores). The chunks are handled in 4 / kG rounds of kG: in a round, the
// kG lanes of a group hold kG blocks (one per chunk); lane q does the per-block work (max,
// scale byte, the reciprocal / division, the scale's address and store) for the block of
// its chunk q only and hands the multipliers to the others with one shuffle each, so no
// per-block operation is repeated across lanes. CTAs loop over tiles (grid-stride).
#pragma once

#include <cstdint>
#include <type_traits>

#include "core/e2m1.h"
#include "core/swizzle.h"
#include "core/vec.cuh"
#include "nvfp4/block.h"
#include "nvfp4/chunk.cuh"

namespace nvfp4 {
namespace quant {

// 16-byte chunks each thread loads per tile (quantize: of x, dequantize: of the output).
constexpr int kChunksPerThread = 4;

// How a kernel over blocks of 16 elements of type T walks them: kV elements per 16-byte
// chunk, kG chunks (lanes) per block, kR rounds of kG chunks per thread and tile; and this
// thread's place in the grid-stride loop over the chunks: its lane q in its block, the
// number of chunks and the tile (chunks per CTA and round).
template <typename T>
struct ChunkLoop {
  static constexpr int kV = Elem<T>::kPerVec;
  static constexpr int kG = 16 / kV;
  static constexpr int kR = kChunksPerThread / kG;
  int tid, q, bdim;
  int64_t n_chunks, tile;
};

template <typename T>
__device__ __forceinline__ ChunkLoop<T> chunk_loop(int64_t n_blocks) {
  constexpr int kG = ChunkLoop<T>::kG;
  const int tid = threadIdx.x;
  const int bdim = blockDim.x;
  return {tid, tid & (kG - 1), bdim, n_blocks * kG, int64_t(bdim) * kChunksPerThread};
}

// Geometry of contiguous [batches, rows, k] data with blocks of 16 along k, and where the
// scale of each block lives (linear [batches, rows, kb], or swizzled per batch).
struct Nvfp4Geometry {
  int64_t n_blocks;  // batches * rows * kb
  int64_t batches, rows, kb, mp, kp;
  FastDiv div_kb, div_rows;
  bool idx32;  // n_blocks and batches * mp * kp are < 2^31: 32-bit index math
};

// Batch index and scale-byte offset of flat block index blk (< n_blocks). last_col: the
// block is the last one of its row (its lane also zeroes the swizzled column padding).
template <bool kSwizzle>
__host__ __device__ __forceinline__ void block_position(const Nvfp4Geometry& g, int64_t blk,
                                                        bool need_batch, int64_t& batch,
                                                        int64_t& off, bool& last_col) {
  last_col = false;
  batch = 0;
  off = blk;
  if (!kSwizzle && !need_batch) return;
  if (g.idx32) {
    const uint32_t b32 = static_cast<uint32_t>(blk);
    const uint32_t kb = static_cast<uint32_t>(g.kb);
    const uint32_t row = g.div_kb.div(b32);
    const uint32_t c = b32 - row * kb;
    const uint32_t bt = g.div_rows.div(row);
    batch = bt;
    if (kSwizzle) {
      const uint32_t r = row - bt * static_cast<uint32_t>(g.rows);
      const uint32_t kp = static_cast<uint32_t>(g.kp);
      off = bt * (static_cast<uint32_t>(g.mp) * kp) + swizzle_offset32(r, c, kp);
      last_col = c + 1 == kb;
    }
  } else {
    const int64_t row = blk / g.kb;
    const int64_t c = blk - row * g.kb;
    const int64_t bt = row / g.rows;
    batch = bt;
    if (kSwizzle) {
      const int64_t r = row - bt * g.rows;
      off = bt * g.mp * g.kp + swizzle_offset(r, c, g.kp);
      last_col = c + 1 == g.kb;
    }
  }
}

// Sum over the kG lanes of a group of each of the kG partial sums p[u], scattered: lane q
// of the group returns the group sum of p[q], added in the fixed tree of "4over6"
// (docs/spec.md sec. 2): lanes {0, 1} and {2, 3} first (xor 1), then the two pairs (xor 2).
// RN(a + b) is commutative, so both lanes of a pair compute the same bits.
template <int kG>
__device__ __forceinline__ float group_sum_scatter(const float (&p)[kG], int q) {
  static_assert(kG == 2 || kG == 4, "groups of 2 or 4 lanes");
  const bool odd = (q & 1) != 0;
  if constexpr (kG == 2) {
    return rn_add(odd ? p[1] : p[0], __shfl_xor_sync(kFullMask, odd ? p[0] : p[1], 1));
  } else {
    float w[2];  // w[i]: the pair's sum of p[2i + odd]
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float keep = odd ? p[2 * i + 1] : p[2 * i];
      const float send = odd ? p[2 * i] : p[2 * i + 1];
      w[i] = rn_add(keep, __shfl_xor_sync(kFullMask, send, 1));
    }
    const bool hi = (q & 2) != 0;
    return rn_add(hi ? w[1] : w[0], __shfl_xor_sync(kFullMask, hi ? w[0] : w[1], 2));
  }
}

// "4over6" (docs/spec.md sec. 2) for the kV elements a[] (x as fp32) of one chunk, which
// are the elements kV * q .. kV * q + kV - 1 of their block, and one candidate scale with
// multipliers osc, s: m[i] = E2M1 magnitude of RN(|a_i| * |osc|) (NaN-safe: 0 * inf gives
// 0), t_i = RN(e_i^2) with e_i = RN(|a_i| - RN(m_i * |s|)). Returns this lane's part of the
// block's sum: Q (terms 4k..4k+3 left to right) for kV = 4, RN(Q_2q + Q_2q+1) for kV = 8.
template <int kV>
__device__ __forceinline__ float chunk_sse_4over6(const float* a, float osc, float s,
                                                  float* m) {
  static_assert(kV == 4 || kV == 8, "4 or 8 elements per chunk");
  const float oa = fabsf(osc), sa = fabsf(s);
  float quad[kV / 4];
#pragma unroll
  for (int k = 0; k < kV / 4; ++k) {
    float acc = 0.0f;
#pragma unroll
    for (int i = 4 * k; i < 4 * k + 4; ++i) {
      const float ax = fabsf(a[i]);
      m[i] = e2m1_mag_value<true>(rn_mul(ax, oa));
      const float e = rn_sub(ax, rn_mul(m[i], sa));
      const float t = rn_mul(e, e);
      acc = i == 4 * k ? t : rn_add(acc, t);
    }
    quad[k] = acc;
  }
  if constexpr (kV == 8) {
    return rn_add(quad[0], quad[1]);
  } else {
    return quad[0];
  }
}

// Fake-quant values of one chunk: RN(e2m1(code) * dq) with the code's value built directly
// (the magnitude, then the sign of x), as nvfp4_decode(code, dq) computes it.
template <typename T, bool kNanSafe>
__device__ __forceinline__ void qdq_chunk(const float* a, float osc, float dq, float* r) {
#pragma unroll
  for (int i = 0; i < Elem<T>::kPerVec; ++i) {
    const float m = e2m1_mag_value<kNanSafe>(__fmul_rn(a[i], osc));
    const uint32_t sign = __float_as_uint(a[i]) & 0x80000000u;
    const float val = __uint_as_float(__float_as_uint(m) | sign);
    r[i] = __fmul_rn(val, dq);
  }
}

struct QuantParams {
  const void* x;     // contiguous [batches, rows, k]
  uint8_t* packed;   // quantize: [batches, rows, k / 2]
  void* out;         // quant_dequant: [batches, rows, k], the dtype of x
  uint8_t* scales;   // quantize: linear or swizzled (see Nvfp4Geometry)
  const float* gs;   // [1] or [batches] (gs_per_batch), the encode scale
  bool gs_per_batch;
  Nvfp4Geometry g;
};

// quantize (kQdq = false): packed codes and scale bytes; kSwizzle writes the scales in the
// 128x4 layout, padding included (no separate pass). quant_dequant (kQdq = true): writes
// RN(e2m1(code) * RN(fp32(sf) / gs)) cast to T, the same bytes as dequantize(quantize(x)).
// kFourSix: scale_method "4over6": both candidate bytes per block (/6 and /4), each lane
// rounds its chunk of the block with both and sums its squared errors (chunk_sse_4over6),
// the owner lane of the block adds the lanes' parts (group_sum_scatter) and picks, and the
// magnitudes of the chosen candidate, kept in registers, give the codes (no third rounding).
template <typename T, bool kSwizzle, bool kQdq, bool kFourSix>
__global__ void __launch_bounds__(256) nvfp4_quantize_kernel(const QuantParams p) {
  using Loop = ChunkLoop<T>;
  constexpr int kV = Loop::kV, kG = Loop::kG, kR = Loop::kR;
  const auto [tid, q, bdim, n_chunks, tile] = chunk_loop<T>(p.g.n_blocks);
  const float gs_one = __ldg(p.gs);
  const float inv_one = __frcp_rn(gs_one);

  for (int64_t base = blockIdx.x * tile; base < n_chunks; base += gridDim.x * tile) {
    // chunk u of this thread: base + ci(u), ci(u) = tid + u * bdim, valid if < rem
    const int rem = static_cast<int>(n_chunks - base < tile ? n_chunks - base : tile);
    // This thread's chunk pointers: xp[u * bdim] is chunk u (one 64-bit add per tile).
    const uint4* __restrict__ xp = static_cast<const uint4*>(p.x) + (base + tid);
    const int64_t base_blk = base / kG;
    uint4 v[kChunksPerThread];
    if (rem == tile) {  // full tile (all but the last): no per-chunk bounds
#pragma unroll
      for (int u = 0; u < kChunksPerThread; ++u) v[u] = load_stream(xp + u * bdim);
    } else {
#pragma unroll
      for (int u = 0; u < kChunksPerThread; ++u) {
        v[u] = tid + u * bdim < rem ? load_stream(xp + u * bdim) : make_uint4(0u, 0u, 0u, 0u);
      }
    }
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      float f[kG][kV];  // x of chunks r * kG + j, as fp32
      uint32_t am[kG];
#pragma unroll
      for (int j = 0; j < kG; ++j) {
        am[j] = chunk_amax_bits<T>(v[r * kG + j]);
        unpack_vec<T>(v[r * kG + j], f[j]);
      }
      // Per-block work for the block of chunk u = r * kG + q.
      const uint32_t amax = group_max_scatter<kG>(am, q);
      const int my_ci = tid + (r * kG + q) * bdim;
      const bool my_ok = my_ci < rem;
      int64_t batch, off;
      bool last_col;
      block_position<kSwizzle && !kQdq>(p.g, base_blk + my_ci / kG, p.gs_per_batch, batch,
                                        off, last_col);
      float gs = gs_one, inv_gs = inv_one;
      if (p.gs_per_batch) {
        gs = __ldg(p.gs + (my_ok ? batch : 0));
        inv_gs = __frcp_rn(gs);
      }
      uint32_t sf = nvfp4_block_scale(amax, gs);
      float osc = nvfp4_osc(sf, inv_gs);
      float dq = 0.0f;
      if constexpr (kQdq || kFourSix) dq = nvfp4_dq(sf, gs);
      // kFourSix: the E2M1 magnitudes of chunk j of this round under the chosen scale.
      float mv[kFourSix ? kG : 1][kV];
      if constexpr (kFourSix) {
        const uint32_t sf4 = nvfp4_block_scale(amax, gs, 0.25f);
        const float osc4 = nvfp4_osc(sf4, inv_gs);
        const float dq4 = nvfp4_dq(sf4, gs);
        float m4[kG][kV], part6[kG], part4[kG];
#pragma unroll
        for (int j = 0; j < kG; ++j) {
          part6[j] = chunk_sse_4over6<kV>(f[j], __shfl_sync(kFullMask, osc, j, kG),
                                          __shfl_sync(kFullMask, dq, j, kG), mv[j]);
          part4[j] = chunk_sse_4over6<kV>(f[j], __shfl_sync(kFullMask, osc4, j, kG),
                                          __shfl_sync(kFullMask, dq4, j, kG), m4[j]);
        }
        // The "/4" byte only on a strictly smaller error (ties and NaN sums: "/6").
        const bool use4 = group_sum_scatter<kG>(part4, q) < group_sum_scatter<kG>(part6, q);
        if (use4) {
          sf = sf4;
          osc = osc4;
          dq = dq4;
        }
        const unsigned choice = __ballot_sync(kFullMask, use4) >> ((tid & 31) & ~(kG - 1));
#pragma unroll
        for (int j = 0; j < kG; ++j) {
          const bool u4 = (choice >> j) & 1u;
#pragma unroll
          for (int i = 0; i < kV; ++i) mv[j][i] = u4 ? m4[j][i] : mv[j][i];
        }
      }
      if constexpr (!kQdq) {
        if (my_ok) {
          p.scales[off] = static_cast<uint8_t>(sf);
          if (kSwizzle && last_col) {
            for (int64_t j = p.g.kb; j < p.g.kp; ++j) p.scales[off + (j - p.g.kb) + 1] = 0;
          }
        }
      }
      float osc_j[kG], dq_j[kG];
#pragma unroll
      for (int j = 0; j < kG; ++j) {
        osc_j[j] = __shfl_sync(kFullMask, osc, j, kG);
        if constexpr (kQdq) dq_j[j] = __shfl_sync(kFullMask, dq, j, kG);
      }
#pragma unroll
      for (int j = 0; j < kG; ++j) {
        const int u = r * kG + j;
        const int ci = tid + u * bdim;
        if (ci >= rem) continue;
        // x * osc is NaN only for 0 * inf: blocks with osc = +inf take the NaN-safe rounding.
        const bool osc_inf = __float_as_uint(osc_j[j]) == kInfBits;
        if constexpr (kQdq && kFourSix) {
          float out[kV];
#pragma unroll
          for (int i = 0; i < kV; ++i) {  // as qdq_chunk, from the kept magnitudes
            const uint32_t sign = __float_as_uint(f[j][i]) & 0x80000000u;
            out[i] = __fmul_rn(__uint_as_float(__float_as_uint(mv[j][i]) | sign), dq_j[j]);
          }
          store_stream(static_cast<uint4*>(p.out) + (base + tid) + u * bdim, pack_vec<T>(out));
        } else if constexpr (kQdq) {
          float out[kV];
          if (osc_inf) {
            qdq_chunk<T, true>(f[j], osc_j[j], dq_j[j], out);
          } else {
            qdq_chunk<T, false>(f[j], osc_j[j], dq_j[j], out);
          }
          store_stream(static_cast<uint4*>(p.out) + (base + tid) + u * bdim, pack_vec<T>(out));
        } else {
          uint32_t word;
          if constexpr (kFourSix) {  // as encode_chunk, from the kept magnitudes
            word = nibble_signs<T>(v[u]);
#pragma unroll
            for (int i = 0; i < kV; ++i) word += e2m1_code_of(mv[j][i]) << (4 * i);
          } else {
            word = osc_inf ? encode_chunk<T, true>(v[u], f[j], osc_j[j])
                           : encode_chunk<T, false>(v[u], f[j], osc_j[j]);
          }
          if (isnan(osc_j[j])) word = 0;  // scale 0x7F: codes 0
          if constexpr (kV == 8) {
            __stcs(reinterpret_cast<unsigned int*>(p.packed) + (base + tid) + u * bdim, word);
          } else {
            __stcs(reinterpret_cast<unsigned short*>(p.packed) + (base + tid) + u * bdim,
                   static_cast<unsigned short>(word));
          }
        }
      }
    }
  }

  if constexpr (kSwizzle && !kQdq) {
    // Rows rows..mp-1 of every batch are all padding (pad_words words of them). The column
    // padding of the real rows was written above by the lane of each row's last block.
    zero_swizzled_row_padding(p.scales, p.g.batches, p.g.rows, p.g.mp, p.g.kp,
                              int64_t(blockIdx.x) * bdim + tid, int64_t(gridDim.x) * bdim);
  }
}

struct DequantParams {
  const uint8_t* packed;  // [batches, rows, k / 2]
  const uint8_t* scales;  // linear or swizzled E4M3 bytes
  const float* gs;        // [1] or [batches]
  bool gs_per_batch;
  void* out;              // [batches, rows, k] of OutT
  Nvfp4Geometry g;
};

// out = RN(e2m1(code) * RN(fp32(sf) / gs)), one RNE cast to OutT. A chunk is 16 bytes of
// output (8 or 4 elements) and reads 4 or 2 packed bytes.
template <typename OutT, bool kSwizzle>
__global__ void __launch_bounds__(256) nvfp4_dequantize_kernel(const DequantParams p) {
  using Loop = ChunkLoop<OutT>;
  constexpr int kV = Loop::kV, kG = Loop::kG, kR = Loop::kR;
  const auto [tid, q, bdim, n_chunks, tile] = chunk_loop<OutT>(p.g.n_blocks);
  const float gs_one = __ldg(p.gs);

  for (int64_t base = blockIdx.x * tile; base < n_chunks; base += gridDim.x * tile) {
    const int rem = static_cast<int>(n_chunks - base < tile ? n_chunks - base : tile);
    const int64_t base_blk = base / kG;
    uint32_t w[kChunksPerThread];
#pragma unroll
    for (int u = 0; u < kChunksPerThread; ++u) {
      const int ci = tid + u * bdim;
      if (ci < rem) {
        const int64_t c = base + tid + u * bdim;
        if constexpr (kV == 8) {
          w[u] = __ldcs(reinterpret_cast<const unsigned int*>(p.packed) + c);
        } else {
          w[u] = __ldcs(reinterpret_cast<const unsigned short*>(p.packed) + c);
        }
      } else {
        w[u] = 0;
      }
    }
    // The scale bytes and decode multipliers of the kR blocks this lane looks after.
    float dq[kR];
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      const int my_ci = tid + (r * kG + q) * bdim;
      int64_t batch, off;
      bool last_col;
      block_position<kSwizzle>(p.g, base_blk + my_ci / kG, p.gs_per_batch, batch, off, last_col);
      uint32_t sf = 0;
      float gs = gs_one;
      if (my_ci < rem) {
        sf = __ldg(p.scales + off);
        if (p.gs_per_batch) gs = __ldg(p.gs + batch);
      }
      dq[r] = nvfp4_dq(sf, gs);
    }
    uint4* const out_t = static_cast<uint4*>(p.out) + (base + tid);
#pragma unroll
    for (int u = 0; u < kChunksPerThread; ++u) {
      const float dq_u = __shfl_sync(kFullMask, dq[u / kG], u % kG, kG);
      const int ci = tid + u * bdim;
      if (ci >= rem) continue;
      float r[kV];
#pragma unroll
      for (int i = 0; i < kV; ++i) {
        r[i] = __fmul_rn(e2m1_decode_top(w[u] << (28 - 4 * i)), dq_u);  // RN(e2m1(code) * dq)
      }
      store_stream(out_t + u * bdim, pack_vec<OutT>(r));
    }
  }
}

// Max of abs_bits over this thread's share of the n elements of x (chunk_amax_bits per 16
// bytes, 4 loads in flight), then over the CTA. The n % kPerVec tail: CTA 0.
template <typename T>
__device__ __forceinline__ uint32_t cta_amax_bits(const T* __restrict__ x, int64_t n) {
  constexpr int kV = Elem<T>::kPerVec;
  const int64_t n_vec = n / kV;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const uint4* __restrict__ xv = reinterpret_cast<const uint4*>(x);
  uint32_t m = 0;
  for (; i + 3 * stride < n_vec; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = load_stream(xv + i + u * stride);
#pragma unroll
    for (int u = 0; u < 4; ++u) m = max(m, chunk_amax_bits<T>(v[u]));
  }
  for (; i < n_vec; i += stride) m = max(m, chunk_amax_bits<T>(load_stream(xv + i)));
  if (blockIdx.x == 0 && threadIdx.x < n - n_vec * kV) {
    m = max(m, abs_bits(Elem<T>::to_float(x[n_vec * kV + threadIdx.x])));
  }
  m = __reduce_max_sync(kFullMask, m);
  __shared__ uint32_t warp_max[32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) warp_max[warp] = m;
  __syncthreads();
  m = lane < static_cast<int>(blockDim.x >> 5) ? warp_max[lane] : 0u;
  return __reduce_max_sync(kFullMask, m);  // every warp holds the CTA max
}

// Many CTAs: fold each CTA's max into *out with atomicMax (*out is zeroed before).
template <typename T>
__global__ void __launch_bounds__(256) nvfp4_amax_kernel(const T* __restrict__ x, int64_t n,
                                                          uint32_t* __restrict__ out) {
  const uint32_t m = cta_amax_bits<T>(x, n);
  if (threadIdx.x == 0 && m != 0) atomicMax(out, m);
}

// One launch for any size: each CTA folds its max into slot[0] (atomicMax), then takes a
// ticket from slot[1]; the last CTA turns the max into the global scale and zeroes both
// slots again (they come from the zeroed ring of csrc/torch_utils.h: no memset).
template <typename T>
__global__ void __launch_bounds__(256) nvfp4_global_scale_kernel(const T* __restrict__ x,
                                                                  int64_t n,
                                                                  float* __restrict__ out,
                                                                  uint32_t* __restrict__ slot) {
  const uint32_t m = cta_amax_bits<T>(x, n);
  if (threadIdx.x != 0) return;
  if (m != 0) atomicMax(slot, m);
  __threadfence();  // the max is visible before the ticket
  if (atomicAdd(slot + 1, 1u) != gridDim.x - 1) return;
  __threadfence();
  const uint32_t amax = atomicExch(slot, 0u);  // every CTA's max is in (they took tickets)
  slot[1] = 0;
  *out = nvfp4_global_scale_from_amax(amax);
}

// *out holds the bits of amax |x| (as written by nvfp4_amax_kernel); replace them by the
// global scale.
__global__ void nvfp4_global_scale_finalize_kernel(float* out) {
  *out = nvfp4_global_scale_from_amax(*reinterpret_cast<const uint32_t*>(out));
}

// Small tensors: one CTA reduces everything and writes the scale (one launch, no memset).
template <typename T>
__global__ void __launch_bounds__(1024) nvfp4_global_scale_small_kernel(const T* __restrict__ x,
                                                                         int64_t n,
                                                                         float* __restrict__ out) {
  const uint32_t m = cta_amax_bits<T>(x, n);
  if (threadIdx.x == 0) *out = nvfp4_global_scale_from_amax(m);
}

}  // namespace quant
}  // namespace nvfp4
