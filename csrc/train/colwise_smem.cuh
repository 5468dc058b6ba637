// The shared-memory staged columnwise NVFP4 training quantize kernel (docs/spec.md sec. 8.1,
// 8.2, 8.4; issue 14): train_quantize with axis=-2 (blocks of 16 along M, the operand x^T)
// for the columnwise operand alone, round to nearest, any x dtype with 16-byte loads
// (p.vec), 1-D or 16x16 2-D scales, the Hadamard transform, linear or swizzled scales,
// global scale given (per batch or not) or computed by the op before this pass.
// NVFP4_OPS_TRAIN_KERNEL=smem selects it (train/quantize.cuh lists the variants).
//
// Why: train_colwise_kernel (train/colwise.cuh) keeps 16 rows x 8 columns of x per lane in
// registers (128 registers, 25 % occupancy, its warps mostly waiting on their loads: 29 % of
// a device copy on an H200 at 8192 x 8192 bf16). This kernel takes the tiles of the MXFP8
// columnwise kernel (mx/quantize.cuh, mx::ColTile<T>: 128 rows x 128 bytes, 64 columns of
// 16-bit x, 32 of fp32), staged through shared memory, the CTA's next tile copied with
// cp.async while the current one is encoded (no registers hold it in flight). Each block
// of x^T (16 rows of one tile column, elements m0 + 16 h .. + 15 of row k0 + kk of x^T) is
// one thread's: the Hadamard transform is local to it, and the amax, scale byte,
// multiplier and codes are the functions of every training kernel (transformed_amax,
// nvfp4_block_scale, nvfp4_osc, e2m1_mag_code / e2m1_encode_nearest: encode_block's
// operations), so the bits are those of the other kernels by construction.
//
// 16-bit x (the hot case): the raw tile is read in place (colwise_smem_16 below; one
// thread, two adjacent columns = two blocks, read as 16 words). Before, it was widened into
// an fp32 copy (the fp32 path below) and the kernel executed about 29 instructions per
// element (ncu: 61.8 M warp instructions at 8192 x 8192, issue-bound at 40 % of a copy):
// per tile and thread ~260 for the staging (the 64-bit address math of the copies, two
// divisions per tile coordinate, the widening and the chunk-order selects of the fp32 tile
// stores) and ~320 per block (16 of them address and 1 / gs work). The sm_90a SASS of the
// bf16 round-to-nearest 1-D path now counts 639 instructions per tile and thread (20 per
// element, of which ~9 are the E2M1 encode).
//
// fp32 x keeps the fp32 tile (mx::tile_word's XOR-permuted chunks; a thread encodes one
// 16-row segment of one tile column); its 2-D scales go through a small shared table of
// block amaxes (one more barrier per tile), each block read and transformed again after it.
#pragma once

#include <cstdint>

#include "mx/quantize.cuh"
#include "train/quantize.cuh"

namespace nvfp4 {
namespace train {

// The tiles of train_colwise_smem_kernel (mx::ColTile<T>: kThreads = mx::kThreads = 256).
template <typename T>
using SmemTile = mx::ColTile<T>;

// ---------------------------------------------------------------------------------------
// fp32 x: the fp32 tile of mx/quantize.cuh (staging buffer of raw vectors, widened copy).
// ---------------------------------------------------------------------------------------

// Block pi of a tile: the 16-row segment h = pi % 8 of tile column kk = pi / 8, transformed
// when signs are given, into v; returns the bits of its amax.
template <int TK>
__device__ __forceinline__ uint32_t smem_tile_block(const float* tile, int h, int kk,
                                                    bool hadamard, const float* signs,
                                                    float (&v)[16]) {
  mx::read_tile_column<TK>(tile, h, kk, v);
  return transformed_amax(v, hadamard, signs);
}

// 16-bit x: two raw tiles (a double buffer), no fp32 copy (raw16_* below).
constexpr int kRawTileBytes = mx::kColTileRows * mx::kColTileBytes;  // 16 KB

// The dynamic shared memory of train_colwise_smem_kernel<T>.
// fp32 x: the fp32 tile, the staging buffer of the next tile's raw vectors (cp.async) and
// the 2-D scales' block amaxes (s_amax[h * kAmaxPitch + kk], the pitch putting the 8
// groups' rows in distinct banks): 16 + 16 + 1.1 KB.
// 16-bit x: two raw tiles of 16 KB, the one being encoded and the one being copied (32 KB;
// the fp32 tile, staging buffer and amax table were 32 + 16 + 2.1 KB). CTAs per SM: 4 on
// sm_80 / sm_90 / sm_100 (at 64 registers; the shared memory, with 1 KB reserved per CTA,
// would hold 4 on sm_80, 6 on sm_90), 3 where an SM has 100 KB (sm_86, sm_89), 1 on sm_120
// (its 134 registers).
template <typename T>
struct SmemLayout {
  using G = SmemTile<T>;
  static constexpr int kGroups = G::TM / 16;  // 16-row segments per tile column
  static constexpr int kAmaxPitch = G::TK + 4;
  static constexpr int kTileBytes = G::TM * G::TK * 4;
  static constexpr int kRawBytes = G::kLoads * kThreads * 16;
  static constexpr int kBytes = sizeof(T) == 4 ? kTileBytes + kRawBytes + kGroups * kAmaxPitch * 4
                                               : 2 * kRawTileBytes;
};

// Minimum CTAs per SM: 4 (at most 64 registers), what the shared memory of sm_90 / sm_100
// holds. sm_120 (100 KB per SM: 1 CTA of 16-bit x, 2 of fp32) leaves the registers to the
// compiler (16-bit x spilled at 64 there). (sm_86 / sm_89 run the sm_80 code: 64 registers.)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 1200
constexpr int kSmemMinBlocks = 1;
#else
constexpr int kSmemMinBlocks = 4;
#endif

// fp32 x (the kernel's body before the 16-bit path below): per tile, each thread widens its
// own staged vectors into the fp32 tile, then encodes kBlocks = 1 block of it.
template <typename T>
__device__ __forceinline__ void colwise_smem_fp32(const TileParams& p, unsigned char* smem,
                                                  const float* s_signs) {
  using G = SmemTile<T>;
  using L = SmemLayout<T>;
  constexpr int TK = G::TK;
  constexpr int kBlocks = TK * L::kGroups / kThreads;  // blocks per thread and tile
  static_assert(kBlocks * kThreads == TK * L::kGroups && kThreads == mx::kThreads, "tile shape");
  float* tile = reinterpret_cast<float*>(smem);
  const uint4* s_raw = reinterpret_cast<const uint4*>(smem + L::kTileBytes);
  uint32_t* s_amax = reinterpret_cast<uint32_t*>(smem + L::kTileBytes + L::kRawBytes);
  const uint32_t s_raw_addr = static_cast<uint32_t>(__cvta_generic_to_shared(s_raw));
  const Operand& o = p.op[1];
  const bool hadamard = o.signs != nullptr;
  const T* x = static_cast<const T*>(p.x);
  const int tid = threadIdx.x;
  // (tile indices fit 32 bits: a tile holds 4096 elements of x or more)
  const uint32_t n_tiles = static_cast<uint32_t>(p.batches * p.tiles_m * p.tiles_k);
  const int64_t cols = 16 * o.kb;  // elements per row of x^T (= M)

  // (the grid has at most n_tiles CTAs)
  mx::load_col_tile_async<T>(x, p, mx::col_tile_coord<T>(p, uint32_t(blockIdx.x)), s_raw_addr);
  for (uint32_t t = blockIdx.x; t < n_tiles; t += gridDim.x) {
    cp_async_wait<0>();
    asm volatile("" ::: "memory");  // (the reads below stay after the wait)
    {  // this thread's own staged vectors (no barrier needed) into the fp32 tile
      uint4 raw[G::kLoads];
#pragma unroll
      for (int i = 0; i < G::kLoads; ++i) raw[i] = s_raw[i * kThreads + tid];
      mx::store_col_tile<T>(tile, raw);
    }
    __syncthreads();
    if (t + gridDim.x < n_tiles) {  // the next tile's copies, in flight during the encode
      mx::load_col_tile_async<T>(x, p, mx::col_tile_coord<T>(p, t + gridDim.x), s_raw_addr);
    }
    const mx::ColTileCoord c = mx::col_tile_coord<T>(p, t);
    if (p.block_2d) {  // every block's amax into s_amax
#pragma unroll
      for (int it = 0; it < kBlocks; ++it) {
        const int pi = it * kThreads + tid, h = pi & 7, kk = pi >> 3;
        float v[16];
        s_amax[h * L::kAmaxPitch + kk] = smem_tile_block<TK>(tile, h, kk, hadamard, s_signs, v);
      }
      __syncthreads();
    }
    const float gs = __ldg(o.gs + (o.gs_per_batch ? c.batch : 0));
#pragma unroll 1
    for (int it = 0; it < kBlocks; ++it) {
      const int pi = it * kThreads + tid, h = pi & 7, kk = pi >> 3;
      float v[16];
      uint32_t amax = smem_tile_block<TK>(tile, h, kk, hadamard, s_signs, v);
      if (p.block_2d) {  // the max over the tile's 16 columns 16 (kk / 16) .. + 15
        const uint4* a = reinterpret_cast<const uint4*>(s_amax + h * L::kAmaxPitch + (kk & ~15));
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const uint4 w = a[q];
          amax = max(amax, max(max(w.x, w.y), max(w.z, w.w)));
        }
      }
      uint32_t sf;
      const uint2 codes = encode_block(v, amax, gs, false, [](int) { return 0u; }, sf);
      if (kk < c.cols_valid && 16 * h < c.rows_valid) {
        const int64_t row = c.batch * o.rows + c.k0 + kk;  // row of x^T, batch included
        const int64_t col = c.m0 + 16 * h;                 // its first element
        __stcs(reinterpret_cast<uint2*>(o.packed + (row * cols + col) / 2), codes);
        const int64_t cb = col / 16;
        o.scales[p.swizzle ? c.batch * o.mp * o.kp + swizzle_offset(c.k0 + kk, cb, o.kp)
                           : row * o.kb + cb] = static_cast<uint8_t>(sf);
      }
    }
    __syncthreads();  // the next tile (and its s_amax) overwrites the shared tile
  }
}

// ---------------------------------------------------------------------------------------
// 16-bit x: the raw tile, read in place.
//
// A tile (128 rows x 64 columns, 128 bytes a row) is copied with cp.async straight into one
// of two 16 KB buffers, its 16-byte chunks XOR-permuted (raw16_key); the CTA encodes the
// tile in one buffer while the next one is copied into the other (one barrier per tile).
// Thread tid owns one 32-bit word column of the tile: word w (tile columns 2w, 2w + 1) of
// rows 16 h .. 16 h + 15, i.e. two whole blocks of x^T (rows k0 + 2w, k0 + 2w + 1, elements
// m0 + 16 h .. + 15): lane = 8 hl + wl of warp wp takes h = 4 (wp % 2) + hl and
// w = 8 (wp / 2) + wl. Its 16 words are 16 LDS.32 at one base address plus immediate
// offsets (no fp32 copy of the tile, no per-element address arithmetic), each widened to
// fp32 once per use (bf16: a shift or mask, fp16: one convert). The 8 lanes of equal hl
// hold the 16 columns 16 (wp / 2) .. + 15 of rows 16 h ..: one 16x16 tile of x, so a 2-D
// scale is 3 shuffles away.
// ---------------------------------------------------------------------------------------

// The XOR key of the 16-byte chunks (0..7) of tile rows 16 h .. 16 h + 15: chunk j of such
// a row is stored at chunk j ^ raw16_key(h).
// Bank conflicts: a warp's LDS.32 of row offset s reads, in lane 8 hl + wl, word w & 3 of
// chunk j = 2 (wp / 2) + (wl >> 2) of row 16 h + s, h = 4 (wp % 2) + hl. The stored chunk
// j ^ key(h) has bit 0 = (wl >> 2) ^ (wp % 2) and bits 1-2 = (wp / 2) ^ hl: 8 distinct
// chunks over the lane's (hl, wl >> 2), times 4 words (wl & 3): 32 distinct banks, one
// wavefront. (key(h) = h would collide: hl = 1 and wl >> 2 = 1 flip the same bit 0.) The
// cp.async writes of one tile row (8 lanes, chunks 0..7 of it) go to 8 distinct chunks.
__device__ __forceinline__ int raw16_key(int h) { return ((h & 3) << 1) | (h >> 2); }

// Fp32 value of the 16-bit element in the low (hi = false) or high half of word u.
template <typename T>
__device__ __forceinline__ float raw16_widen(uint32_t u, bool hi) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __uint_as_float(hi ? u & 0xFFFF0000u : u << 16);
  } else {
    const __half2 hh = *reinterpret_cast<const __half2*>(&u);
    return hi ? __high2float(hh) : __low2float(hh);
  }
}

// The tile walk of a CTA (tiles t = blockIdx.x, + gridDim.x, ..., numbered along k fastest,
// then m, then the batch, as mx::col_tile_coord), kept as the indices (tk, tm, batch) and
// advanced by additions: two divisions per CTA instead of two per tile.
struct TileWalk {
  uint32_t tk, tm, batch;  // batch < p.batches: a tile to do
  uint32_t dk, dm, db;     // the step: gridDim.x = (db * tiles_m + dm) * tiles_k + dk

  __device__ __forceinline__ void init(uint32_t t, uint32_t tiles_k, uint32_t tiles_m,
                                       uint32_t step) {
    const uint32_t t2 = t / tiles_k, s2 = step / tiles_k;
    tk = t - t2 * tiles_k;
    batch = t2 / tiles_m;
    tm = t2 - batch * tiles_m;
    dk = step - s2 * tiles_k;
    db = s2 / tiles_m;
    dm = s2 - db * tiles_m;
  }
  __device__ __forceinline__ void next(uint32_t tiles_k, uint32_t tiles_m) {
    tk += dk;
    const uint32_t carry = tk >= tiles_k ? 1u : 0u;  // (tk, dk < tiles_k: one carry at most)
    tk -= carry * tiles_k;
    tm += dm + carry;
    batch += db;
    if (tm >= tiles_m) {  // (tm + dm + 1 <= 2 tiles_m - 1)
      tm -= tiles_m;
      ++batch;
    }
  }
};

// The cp.async copies of a tile (mx::load_col_tile_async with permuted destinations): this
// thread's vector i is tile row 32 i + r0 (r0 = tid / 8), columns 8 c .. 8 c + 7 (c = tid % 8,
// 16 bytes), stored at chunk c ^ raw16_key(row / 16) of that row; zeros outside x. The
// per-thread parts of the addresses are set up once per CTA: src_off, the element offset of
// vector 0 from the tile's first element (vector i is 32 i rows on), and dst_off, the byte
// offset of vector 0 in a buffer. Rows 32 i + r0 have XOR key raw16_key(2 i + r0 / 16) =
// raw16_key(2 i) ^ raw16_key(r0 / 16) (disjoint bits), so vector i's offset is
// (dst_off ^ 16 raw16_key(2 i)) + 4096 i: no per-copy index arithmetic beyond that.
struct Raw16Copy {
  int64_t src_off;
  uint32_t dst_off;
  int r0, c8;  // tid / 8, 8 (tid % 8)

  __device__ __forceinline__ void init(const TileParams& p) {
    const int tid = threadIdx.x;
    r0 = tid >> 3;
    c8 = (tid & 7) * 8;
    src_off = int64_t(r0) * p.k + c8;
    dst_off = 128u * r0 + 16u * ((tid & 7) ^ raw16_key(r0 >> 4));
  }

  // This thread's copies of tile (tk, tm, batch) into the buffer at s_buf, one commit group.
  template <typename T>
  __device__ __forceinline__ void issue(const TileParams& p, const TileWalk& tw,
                                        uint32_t s_buf) const {
    constexpr int TM = SmemTile<T>::TM, TK = SmemTile<T>::TK;
    const int64_t m0 = int64_t(tw.tm) * TM, k0 = int64_t(tw.tk) * TK;
    const T* x = static_cast<const T*>(p.x);
    const T* src = x + ((int64_t(tw.batch) * p.m + m0) * p.k + k0) + src_off;
    const int64_t stride = 32 * p.k;
    if (p.m - m0 >= TM && p.k - k0 >= TK) {  // a whole tile inside x (all but the edges)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        cp_async16(s_buf + ((dst_off ^ (16u * raw16_key(2 * i))) + 4096u * i), src, true);
        src += stride;
      }
    } else {
      const bool col_ok = c8 < p.k - k0;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const bool ok = col_ok && 32 * i + r0 < p.m - m0;
        cp_async16(s_buf + ((dst_off ^ (16u * raw16_key(2 * i))) + 4096u * i), ok ? src : x,
                   ok);
        src += stride;
      }
    }
    cp_async_commit();
  }
};

// The codes of one block v with multiplier osc (not NaN): encode_block's codes (nearest,
// e2m1_encode_nearest per element) — the general case (transformed blocks, osc = +inf).
__device__ __forceinline__ uint2 raw16_codes(const float (&v)[16], float osc) {
  uint32_t lo = 0, hi = 0;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const uint32_t code = e2m1_encode_nearest_at_nibble(v[i], osc, i % 8);
    if (i < 8) {
      lo += code;
    } else {
      hi += code;
    }
  }
  return make_uint2(lo, hi);
}

// The magnitude codes of elements J0 .. J0 + 7 of block v (element J0 + i in bits 4 i ..
// 4 i + 2) for a finite multiplier osc: then no product v * osc is NaN (v is finite: a block
// holding NaN / inf has osc NaN), where e2m1_mag_code<false> is e2m1_mag_code<true> (the
// max with 0 that maps NaN to 0 is a no-op), one instruction less per element. Each code
// comes as code << 22 (e2m1_mag_code_shl22) and is shifted straight to its nibble by the
// add that accumulates it (disjoint bit fields: + is |; LEA.HI / LEA, one instruction each).
template <int J0>
__device__ __forceinline__ uint32_t raw16_mag_nibbles(const float (&v)[16], float osc) {
  uint32_t w = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    w += e2m1_shl22_at_nibble(e2m1_mag_code_shl22<false>(rn_mul(v[J0 + i], osc)), i);
  }
  return w;
}

// The sign bits of the codes of the untransformed blocks of this thread's 16 words u (low
// halves: block 0, high halves: block 1): sg[b][w] holds, at bit 4 i + 3, the sign of
// element 8 w + i of block b, i.e. bit 16 b + 15 of u[8 w + i] (the sign of the 16-bit
// element is that of its fp32 widening, the sign e2m1_encode_nearest gives the code). Byte
// k of a code word holds elements 2 k (sign at bit 3) and 2 k + 1 (bit 7): byte permutes
// gather the sign bytes (byte 2 b + 1 of each word) of the odd and of the even elements,
// and the even ones move 4 bits down: 16 PRMT and 12 logic ops for 32 elements instead of
// a shift and a masked or per element.
__device__ __forceinline__ void raw16_signs(const uint32_t (&u)[16], uint32_t (&sg)[2][2]) {
#pragma unroll
  for (int w = 0; w < 2; ++w) {
    const uint32_t* q = u + 8 * w;
    // [q[j].b1, q[j + 2].b1, q[j].b3, q[j + 2].b3] for j = 1, 5 (odd) and 0, 4 (even)
    const uint32_t a_odd = __byte_perm(q[1], q[3], 0x7351), b_odd = __byte_perm(q[5], q[7], 0x7351);
    const uint32_t a_even = __byte_perm(q[0], q[2], 0x7351), b_even = __byte_perm(q[4], q[6], 0x7351);
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      const uint32_t sel = b == 0 ? 0x5410 : 0x7632;  // the .b1 bytes, or the .b3 ones
      const uint32_t odd = __byte_perm(a_odd, b_odd, sel);
      const uint32_t even = __byte_perm(a_even, b_even, sel);
      sg[b][w] = (odd & 0x80808080u) | ((even >> 4) & 0x08080808u);
    }
  }
}

template <typename T>
__device__ __forceinline__ void colwise_smem_16(const TileParams& p, unsigned char* smem,
                                                const float* s_signs) {
  using G = SmemTile<T>;
  static_assert(G::TM == 128 && G::TK == 64 && kThreads == 256, "tile shape");
  const Operand& o = p.op[1];
  const bool hadamard = o.signs != nullptr;
  const int tid = threadIdx.x, lane = tid & 31, wp = tid >> 5;
  const int h = 4 * (wp & 1) + (lane >> 3);  // rows 16 h .. 16 h + 15 of the tile
  const int w = 8 * (wp >> 1) + (lane & 7);  // word w: tile columns kk = 2 w, 2 w + 1
  const int kk = 2 * w;
  const uint32_t s0 = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  // the byte offset of the first of this thread's 16 words (row 16 h) in buffer 0; the word
  // of row 16 h + s is 128 s bytes on
  const uint32_t rd = 128u * 16u * h + 16u * ((w >> 2) ^ raw16_key(h)) + 4u * (w & 3);
  const uint32_t tiles_k = static_cast<uint32_t>(p.tiles_k);
  const uint32_t tiles_m = static_cast<uint32_t>(p.tiles_m);
  const uint32_t batches = static_cast<uint32_t>(p.batches);
  const int64_t cols = 16 * o.kb;  // elements per row of x^T (= M)
  // The thread's offsets from the tile's first code byte / scale byte (the block of tile
  // column kk; column kk + 1's is cols / 2 resp. scale_step on). Swizzled: for k0 % 64 == 0,
  // kk < 64, (m0 / 16) % 8 == 0, h < 8 no field of swizzle_offset carries, so
  // swizzle_offset(k0 + kk, m0 / 16 + h) = swizzle_offset(k0, m0 / 16) + swizzle_offset(kk, h)
  // (and kk + 1, kk even, is 16 bytes on).
  const int64_t code_off = int64_t(w) * cols + 8 * h;  // (kk * cols + 16 h) / 2
  const int64_t scale_off = p.swizzle ? swizzle_offset(kk, h, o.kp) : int64_t(kk) * o.kb + h;
  const int64_t scale_step = p.swizzle ? 16 : o.kb;

  TileWalk tw;
  tw.init(blockIdx.x, tiles_k, tiles_m, gridDim.x);
  Raw16Copy cp;
  cp.init(p);
  // (the grid has at most n_tiles CTAs)
  cp.issue<T>(p, tw, s0);
  float gs = 0.0f, inv_gs = 0.0f;
  uint32_t gs_batch = ~0u;
  for (uint32_t buf = 0; tw.batch < batches; buf ^= 1u) {
    const uint32_t batch = tw.batch;
    const int64_t m0 = int64_t(tw.tm) * G::TM, k0 = int64_t(tw.tk) * G::TK;
    cp_async_wait<0>();
    // every thread's copies of this tile have landed, and every thread is done with the
    // other buffer (the previous tile), which the next copies overwrite
    __syncthreads();
    tw.next(tiles_k, tiles_m);
    if (tw.batch < batches) cp.issue<T>(p, tw, s0 + (buf ^ 1u) * kRawTileBytes);

    uint32_t u[16];  // the thread's two blocks: column kk in the low halves, kk + 1 high
    {
      const uint32_t* col = reinterpret_cast<const uint32_t*>(smem + rd + buf * kRawTileBytes);
#pragma unroll
      for (int s = 0; s < 16; ++s) u[s] = col[32 * s];
    }
    const uint32_t gb = o.gs_per_batch ? batch : 0u;
    if (gb != gs_batch) {  // (once per CTA without per-batch global scales)
      gs = __ldg(o.gs + gb);
      inv_gs = rn_rcp(gs);
      gs_batch = gb;
    }
    uint32_t amax2d = 0;
    if (p.block_2d) {  // the max over the 16x16 tile: both columns, then the 8 lanes
#pragma unroll
      for (int b = 0; b < 2; ++b) {
        float v[16];
#pragma unroll
        for (int s = 0; s < 16; ++s) v[s] = raw16_widen<T>(u[s], b == 1);
        amax2d = max(amax2d, transformed_amax(v, hadamard, s_signs));
      }
#pragma unroll
      for (int d = 1; d < 8; d <<= 1) amax2d = max(amax2d, __shfl_xor_sync(kFull, amax2d, d));
    }
    const int rows_valid = static_cast<int>(p.m - m0 < G::TM ? p.m - m0 : G::TM);
    const int cols_valid = static_cast<int>(p.k - k0 < G::TK ? p.k - k0 : G::TK);
    const int64_t row0 = int64_t(batch) * o.rows + k0;  // x^T row of tile column 0
    uint8_t* packed = o.packed + (row0 * cols + m0) / 2 + code_off;
    uint8_t* scales = o.scales + scale_off +
                      (p.swizzle ? int64_t(batch) * o.mp * o.kp + swizzle_offset(k0, m0 / 16, o.kp)
                                 : row0 * o.kb + m0 / 16);
    uint32_t sg[2][2];
    raw16_signs(u, sg);
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      float v[16];
#pragma unroll
      for (int s = 0; s < 16; ++s) v[s] = raw16_widen<T>(u[s], b == 1);
      uint32_t amax = transformed_amax(v, hadamard, s_signs);
      if (p.block_2d) amax = amax2d;  // (its own amax is part of amax2d)
      // encode_block's scale and multiplier (block_multiplier with rn_rcp(gs) once per tile)
      const uint32_t sf = nvfp4_block_scale(amax, gs);
      const float osc = nvfp4_osc(sf, inv_gs);
      uint2 codes = make_uint2(0u, 0u);  // a NaN multiplier (scale 0x7F): codes 0
      if (!hadamard && osc <= kFltMax) {  // the hot case: encode_block's codes, fewer steps
        codes.x = raw16_mag_nibbles<0>(v, osc) | sg[b][0];
        codes.y = raw16_mag_nibbles<8>(v, osc) | sg[b][1];
      } else if (osc == osc) {
        codes = raw16_codes(v, osc);
      }
      if (kk + b < cols_valid && 16 * h < rows_valid) {
        __stcs(reinterpret_cast<uint2*>(packed + b * (cols / 2)), codes);
        scales[b * scale_step] = static_cast<uint8_t>(sf);
      }
    }
  }
}

// p.op[1] only; p.tiles_m, p.tiles_k count SmemTile<T> tiles (set by the launcher), p.vec
// true, round to nearest; SmemLayout<T>::kBytes of dynamic shared memory.
template <typename T>
__global__ void __launch_bounds__(kThreads, kSmemMinBlocks)
    train_colwise_smem_kernel(const TileParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float s_signs[16];
  load_signs(p.op[1], s_signs);
  if constexpr (sizeof(T) == 4) {
    colwise_smem_fp32<T>(p, smem, s_signs);
  } else {
    colwise_smem_16<T>(p, smem, s_signs);
  }
  write_operand_padding(p);
}

}  // namespace train
}  // namespace nvfp4
