// The bounded scale search of SPEC.md sec. 5 (scale_method "mse" / "hessian" for NVFP4,
// "mse" for MXFP8 / MXFP4), bit-exact with reference.py's exhaustive search.
//
// One thread owns one block (16 or 32 elements in registers) and searches its scale alone.
// The per-block search below is __host__ __device__ and torch-free, so the very code the
// kernels run is also compiled for the CPU and checked there against an exhaustive search.
// Every pruning step is a proven lower bound; the proofs, with their fp32 rounding margins,
// are in docs/search.md (referred to as [P1]..[P9] below). In short, NVFP4:
//  * the naive (amax) scale is evaluated exactly; it is the incumbent;
//  * downward from the naive byte: the max element's exact squared error is a lower bound
//    of the objective [P1]; once that element saturates to 6 with a non-negative error it
//    only grows as the byte falls [P2], so the scan stops at the first such byte above UB;
//  * upward: a byte c + 8 has exactly twice the decode step of c, and its grid is a subset
//    of c's below 7 * step, so no block error can shrink [P4]: a lower bound of c is one of
//    every c + 8k, and 8 pruned bytes in a row end the scan;
//  * every other byte gets an approximate pass (FMA arithmetic, 9 instructions per element
//    instead of 11) whose result V brackets the exact objective: |SSE - V| is tiny and
//    proven [P3], so the byte is dropped if its lower bound exceeds the least upper bound
//    seen so far (UB), and only the few bytes left at the end are evaluated exactly, with
//    the reference's tie rule (naive first, then the smallest byte).
// "hessian" adds a weighted version of the same bounds, e^T H e >= sum_i w_i e_i^2 with
// w_i = tau * H_ii - kappa [P6], and a bracket of e^T H e from the group's shifted Cholesky
// factor (or an approximate quadratic form) with a proven error [P7] before the exact one. MX scales are powers of two, so the dominance above is exact [P8]
// and the search is a handful of exact evaluations.
// Anything outside the proven ranges (a global scale below 2^-100 or above 2^100, negative
// or non-finite; a block max outside [2^-60, 2^60]; a non-finite Hessian) falls back to
// the exhaustive search with the reference's exact arithmetic, NaN semantics included.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/e2m1.cuh"
#include "kernels/e4m3.cuh"
#include "kernels/e8m0.cuh"
#include "kernels/nvfp4_block.cuh"
#include "kernels/swizzle.cuh"
#include "kernels/vec.cuh"

namespace nvfp4 {
namespace search {

#define NVS_HD __host__ __device__ __forceinline__

// ---- one IEEE fp32 operation each, round to nearest even, on the device and the host ----
// (the host build of this file, used by the CPU checks, needs -ffp-contract=off)
NVS_HD uint32_t fbits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
NVS_HD float ffrom(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
NVS_HD float rn_mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
NVS_HD float rn_add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
NVS_HD float rn_sub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
NVS_HD float rn_div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
// Fused multiply-add, one rounding: only in the approximate passes, whose error is bounded.
NVS_HD float rn_fma(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

constexpr float kInf = __builtin_huge_valf();
constexpr int kMaxByte = 0x7E;  // largest NVFP4 candidate (448)
constexpr int kRecords = 4;     // exact-phase slots; a byte finding them all live is
                                // evaluated exactly at once

// ---- element rounding ---------------------------------------------------------------------
// Nearest E2M1 magnitude of y >= 0 as fp32, ties to the even code, saturating at 6: the
// formulation of reference._e2m1_round_mag (one fp32 add of C = 2^(max(e, 0) + 22) rounds
// the binade [2^e, 2^(e+1)) to the E2M1 spacing 2^(max(e, 0) - 1) with IEEE ties-to-even;
// the subtract is exact). kNanSafe: a NaN gives 0, as nan_to_num does there; +inf gives 6.
// Checked against e2m1_encode / e2m1_decode for every fp32 input (docs/search.md).
template <bool kNanSafe>
NVS_HD float e2m1_mag(float y) {
  const float a = fminf(kNanSafe ? fmaxf(y, 0.0f) : y, 6.0f);
  uint32_t m = fbits(a) & 0x7F800000u;
  m = m > 0x3F800000u ? m : 0x3F800000u;
  const float c = ffrom(m + (22u << 23));
  return rn_sub(rn_add(a, c), c);
}

// Nearest E4M3 magnitude of y >= 0 (RNE, saturating to 448): the same construction with
// 3 mantissa bits, C = 2^(max(e, -6) + 20) (spacing 2^(e-3); 2^-9 for the subnormals).
// Equal to reference._e4m3_round (clamp to 448, cast, back) for every input; checked.
template <bool kNanSafe>
NVS_HD float e4m3_mag(float y) {
  const float a = fminf(kNanSafe ? fmaxf(y, 0.0f) : y, 448.0f);
  uint32_t m = fbits(a) & 0x7F800000u;
  m = m > 0x3C800000u ? m : 0x3C800000u;
  const float c = ffrom(m + (20u << 23));
  return rn_sub(rn_add(a, c), c);
}

// E2M1 code 0..7 of a magnitude on the E2M1 grid (+0, 0.5, 1, 1.5, 2, 3, 4, 6): from 1.0 up,
// (bits >> 22) - 0xFC counts the codes.
NVS_HD uint32_t e2m1_code_of(float q) {
  const uint32_t b = fbits(q);
  return b == 0u ? 0u : (b == 0x3F000000u ? 1u : (b >> 22) - 0xFCu);
}

// ---- E4M3 scale bytes ------------------------------------------------------------------------
// fp32 value of an E4M3 byte (the e4m3_decode primitive on the device; the same bits here).
NVS_HD float e4m3_value(uint32_t b) {
#ifdef __CUDA_ARCH__
  return e4m3_decode(b);
#else
  const uint32_t sign = (b & 0x80u) << 24, e = (b >> 3) & 0xFu, m = b & 7u;
  if ((b & 0x7Fu) == 0x7Fu) return ffrom(0x7FC00000u);
  if (e == 0) return ffrom(fbits(static_cast<float>(m) * 0.001953125f) | sign);
  return ffrom(sign | ((e + 120u) << 23) | (m << 20));
#endif
}

// osc = RN(1 / RN(fp32(sf) * RN(1/gs))) (0 where fp32(sf) == 0 or the product is 0) and
// s = RN(fp32(sf) / gs): reference._nvfp4_multipliers, signed. NaN iff sf (or gs) is NaN.
struct Mult {
  float osc, s;
};
NVS_HD Mult nvfp4_mult(uint32_t byte, float gs, float inv_gs) {
  const float sf = e4m3_value(byte);
  const float d = rn_mul(sf, inv_gs);
  Mult m;
  m.osc = (sf == 0.0f || d == 0.0f) ? 0.0f : rn_div(1.0f, d);
  m.s = rn_div(sf, gs);
  return m;
}

// The fast (bounded) path needs: 2^-100 <= gs <= 2^100, then every candidate's osc and s are
// finite, positive normal numbers and exactly double from byte c to c + 8 (c >= 8) [P4]; and
// 2^-60 <= vmax <= 2^60, so that no square overflows and the absolute rounding of tiny terms
// is covered by the margins [P3].
NVS_HD bool gs_fast(float gs) { return gs >= 0x1p-100f && gs <= 0x1p100f; }
NVS_HD bool vmax_fast(float vmax) { return vmax >= 0x1p-60f && vmax <= 0x1p60f; }

// A per-thread array indexed at run time, kept out of registers: on the device a column of a
// shared-memory array (element i of thread t at p[i * stride], bank-conflict free); used for
// the dominance ring (8 floats) and the error vector of the quadratic forms (16 floats).
struct Column {
  float* p;
  int stride;
  NVS_HD float& operator[](int i) const { return p[i * stride]; }
};
using Ring = Column;  // ring[c & 7]: a lower bound valid for every byte c + 8k [P4]

// ---- exact objectives (the reference's operation order) ------------------------------------
// NVFP4 "mse" (reference._nvfp4_objective_cols): y = RN(|x| * |osc|), q = E2M1(y),
// e = RN(|x| - RN(q * |s|)), s = RN(e_0^2), s = RN(s + RN(e_i^2)), i = 1..N-1.
template <int N>
NVS_HD float sse_exact(const float (&x)[N], float osc, float s) {
  const float oa = fabsf(osc), sa = fabsf(s);
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const float a = fabsf(x[i]);
    const float q = e2m1_mag<true>(rn_mul(a, oa));
    const float e = rn_sub(a, rn_mul(q, sa));
    const float sq = rn_mul(e, e);
    sum = i == 0 ? sq : rn_add(sum, sq);
  }
  return sum;
}

// Signed errors of the "hessian" objective: v = copysign(q, RN(x * osc)) (sign of x where
// that product is NaN), e = RN(x - RN(v * s)) (reference._nvfp4_round and its caller).
NVS_HD float err_signed_exact(float x, float osc, float s) {
  const float y = rn_mul(x, osc);
  const float q = e2m1_mag<true>(fabsf(y));
  const uint32_t sgn = fbits(y != y ? x : y) & 0x80000000u;
  return rn_sub(x, rn_mul(ffrom(fbits(q) | sgn), s));
}

// sum_i RN(e_i * t_i), t_i = sum_j RN(H[i][j] * e_j), both left to right
// (reference._quadratic_form). H: 16x16 row-major. The row loop stays rolled (code size);
// its e_i comes from the per-thread column ei (a copy of e).
NVS_HD float quad_exact(const float (&e)[16], const float* __restrict__ H, Column ei) {
#pragma unroll
  for (int i = 0; i < 16; ++i) ei[i] = e[i];
  float obj = 0.0f;
#pragma unroll 1
  for (int i = 0; i < 16; ++i) {
    const float* h = H + 16 * i;
    float t = rn_mul(h[0], e[0]);
#pragma unroll
    for (int j = 1; j < 16; ++j) t = rn_add(t, rn_mul(h[j], e[j]));
    const float p = rn_mul(ei[i], t);
    obj = i == 0 ? p : rn_add(obj, p);
  }
  return obj;
}

NVS_HD float hess_exact(const float (&x)[16], Mult m, const float* __restrict__ H, Column ei) {
  float e[16];
#pragma unroll
  for (int i = 0; i < 16; ++i) e[i] = err_signed_exact(x[i], m.osc, m.s);
  return quad_exact(e, H, ei);
}

// ---- approximate passes (fast path only: y never NaN, osc and s positive) ------------------
// V = sum_i e_i^2 with e_i = RN(|x_i| - q_i * s) fused: the reference's codes q_i, one rounding
// per error and per accumulation. |SSE_exact - V| <= 2^-12 V + 2^-20 A, A = sum x_i^2 [P3].
NVS_HD float sse_approx16(const float (&x)[16], float osc, float s) {
  float acc = 0.0f;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const float a = fabsf(x[i]);
    const float q = e2m1_mag<false>(rn_mul(a, osc));
    const float e = rn_fma(-q, s, a);
    acc = rn_fma(e, e, acc);
  }
  return acc;
}

// Signed errors of the approximate "hessian" passes: e_i = RN(x_i - sign(x_i) q_i s) (fused).
NVS_HD void errors_approx16(const float (&x)[16], float osc, float s, float (&e)[16]) {
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const float q = e2m1_mag<false>(rn_mul(fabsf(x[i]), osc));
    e[i] = rn_fma(-ffrom(fbits(q) | (fbits(x[i]) & 0x80000000u)), s, x[i]);
  }
}

// sum_i w_i e_i^2 [P6] and sum_i e_i^2, fused.
NVS_HD float wsum16(const float (&e)[16], const float* __restrict__ w) {
  float acc = 0.0f;
#pragma unroll
  for (int i = 0; i < 16; ++i) acc = rn_fma(rn_mul(w[i], e[i]), e[i], acc);
  return acc;
}
NVS_HD float sum_sq16(const float (&e)[16]) {
  float acc = 0.0f;
#pragma unroll
  for (int i = 0; i < 16; ++i) acc = rn_fma(e[i], e[i], acc);
  return acc;
}

// Approximate e^T H e, fused products [P7]. The row loop stays rolled; e_i from column ei.
NVS_HD float quad_approx16(const float (&e)[16], const float* __restrict__ H, Column ei) {
#pragma unroll
  for (int i = 0; i < 16; ++i) ei[i] = e[i];
  float obj = 0.0f;
#pragma unroll 1
  for (int i = 0; i < 16; ++i) {
    const float* h = H + 16 * i;
    float t = 0.0f;
#pragma unroll
    for (int j = 0; j < 16; ++j) t = rn_fma(h[j], e[j], t);
    obj = rn_fma(ei[i], t, obj);
  }
  return obj;
}

// ||U e||^2 for the upper-triangular U = L^T of the group's shifted Cholesky factor [P7]
// (row k of U at U + 16 k, zero below the diagonal). Rows in 4 bands of 4; band g uses
// columns 4g..15 only: 160 + 16 fused products, and the row loops stay rolled (a fully
// unrolled triangle keeps ~136 loaded coefficients live and costs the kernel 100+ registers).
NVS_HD float chol_form16(const float (&e)[16], const float* __restrict__ U) {
  float acc = 0.0f;
#pragma unroll
  for (int g = 0; g < 4; ++g) {
#pragma unroll 1
    for (int k = 4 * g; k < 4 * g + 4; ++k) {
      const float* u = U + 16 * k;
      float z = 0.0f;
#pragma unroll
      for (int j = 4 * g; j < 16; ++j) z = rn_fma(u[j], e[j], z);
      acc = rn_fma(z, z, acc);
    }
  }
  return acc;
}

// The max element's exact squared error (the reference's term for it) [P1]; mono: its code
// is 6 and its error >= 0, so smaller bytes only increase it [P2].
NVS_HD float max_term(float vmax, float osc, float s, bool& mono) {
  const float q = e2m1_mag<false>(rn_mul(vmax, osc));
  const float e = rn_sub(vmax, rn_mul(q, s));
  mono = q == 6.0f && e >= 0.0f;
  return rn_mul(e, e);
}

// Lower bound, valid for the candidate itself and (domination) for every c + 8k, from an
// approximate or exact sum Q of squared errors whose elements have squares summing to A [P3].
NVS_HD float lower_from(float q, float a) {
  return rn_sub(rn_mul(q, 1.0f - 0x1p-12f), rn_mul(a, 0x1p-20f));
}
NVS_HD float upper_from(float q, float a) {
  return rn_add(rn_mul(q, 1.0f + 0x1p-12f), rn_mul(a, 0x1p-20f));
}


// Counters for the CPU checks (the kernels pass a NoStats).
struct NoStats {
  NVS_HD void approx() {}
  NVS_HD void approx2() {}
  NVS_HD void exact() {}
  NVS_HD void fallback() {}
};

// ---- the NVFP4 search ---------------------------------------------------------------------------
// Obj provides, for candidate bytes 1..126 (fast path only):
//   float exact(int c)                       the reference's objective
//   float lb1(int c, bool& mono)             a lower bound from the max element [P1, P2]
//   float lb1_dom(float lb1)                 its form valid for c + 8k [P4]
//   bool  dom(int c)                          c dominates c + 8k [P4]
//   Bound bound(int c, float ub)             Ldom (valid for c + 8k), L, U of the objective
//   float sat_lb(int c)                      the saturated terms' sum, monotone downward [P2]
//   float naive_dom(float exact_naive)       the naive's exact objective as a bound for c0 + 8k
struct Bound {
  float ldom, lo, hi;
};

template <class Obj, class Stats>
NVS_HD int nvfp4_exhaustive(const Obj& o, int c0, float naive_obj, Stats& st) {
  // The reference's loop: best = naive; bytes 1..126 in order; replace on a smaller objective.
  st.fallback();
  float best = naive_obj;
  int best_c = c0;
  for (int c = 1; c <= kMaxByte; ++c) {
    const float v = o.exact(c);
    if (v < best) {
      best = v;
      best_c = c;
    }
  }
  return best_c;
}

// Exact phase: evaluate the kept bytes whose bound is still within ub (each exact value can
// lower ub and retire others). One evaluation per iteration, the first live slot of each
// thread, so a warp runs as many evaluations as its busiest thread needs.
template <class Obj, class Take, class Stats>
NVS_HD void exact_phase(const Obj& o, const int (&rec_c)[kRecords], float (&rec_l)[kRecords],
                        const float& ub, Take& take, Stats& st) {
  for (int it = 0; it < kRecords; ++it) {
    int c = -1;
#pragma unroll
    for (int k = 0; k < kRecords; ++k) {
      if (c < 0 && rec_l[k] <= ub) {
        c = rec_c[k];
        rec_l[k] = kInf;
      }
    }
    if (c < 0) break;
    st.exact();
    take(c, o.exact(c));
  }
}

template <class Obj, class Stats>
NVS_HD int nvfp4_pruned(const Obj& o, int c0, float naive_obj, Ring ring, Stats& st) {
  float ub = naive_obj;  // least proven upper bound of the minimum objective
  float best = naive_obj;
  int best_c = c0;
  bool best_naive = true;
  auto take = [&](int c, float v) {  // an exact objective, with the reference's tie rule
    if (v < best || (v == best && !best_naive && c < best_c)) {
      best = v;
      best_c = c;
      best_naive = false;
    }
    ub = fminf(ub, v);
  };
  int rec_c[kRecords];
  float rec_l[kRecords];
#pragma unroll
  for (int k = 0; k < kRecords; ++k) {
    rec_c[k] = 0;
    rec_l[k] = kInf;
  }
  // A byte not provably worse than ub: keep it for the exact phase (a slot whose bound has
  // since exceeded ub is free: that byte can no longer be the minimum); with every slot
  // live (near-ties), evaluate it exactly now.
  auto keep = [&](int c, const Bound& b) {
    bool done = false;
#pragma unroll
    for (int k = 0; k < kRecords; ++k) {
      if (!done && !(rec_l[k] <= ub)) {
        rec_c[k] = c;
        rec_l[k] = b.lo;
        done = true;
      }
    }
    ub = fminf(ub, b.hi);
    if (!done) {
      st.exact();
      take(c, o.exact(c));
    }
  };

  // The scan as one loop whose body is a single approximate pass: the inner loop walks past
  // the bytes that the cheap bounds prune, so a warp pays about the largest number of passes
  // any of its threads needs (not one pass per byte position that any thread examines).
  // Downward first, from the naive byte: the max element's term [P1] stops it once that
  // element is saturated (monotone, [P2]); after a rejected pass, so does the sum of all
  // saturated terms [P2]. Then upward with the octave dominance ring [P4].
#pragma unroll
  for (int k = 0; k < 8; ++k) ring[k] = -kInf;
  if (c0 >= 8 && o.dom(c0)) ring[c0 & 7] = o.naive_dom(naive_obj);
  int c = c0, run = 0;
  bool down = true;
  float lp = -kInf;  // upward: the ring's bound for c (from c - 8)
  bool dc = false;   // upward: c dominates c + 8k
  while (true) {
    bool found = false;
    while (true) {
      if (down) {
        if (--c < 1) {
          down = false;
          c = c0;
          continue;
        }
        bool mono;
        if (o.lb1(c, mono) > ub) {
          if (mono) {
            down = false;
            c = c0;
          }
          continue;
        }
        found = true;
        break;
      }
      if (++c > kMaxByte || run >= 8) break;  // run: every further byte is dominated
      lp = ring[c & 7];
      if (lp > ub) {  // dominated: the bound carries over to c + 8
        ++run;
        continue;
      }
      bool mono;
      const float l1 = o.lb1(c, mono);
      dc = o.dom(c);
      if (l1 > ub) {
        const float lnew = dc ? fmaxf(lp, o.lb1_dom(l1)) : lp;
        ring[c & 7] = lnew;
        run = lnew > ub ? run + 1 : 0;
        continue;
      }
      found = true;
      break;
    }
    if (!found) break;
    st.approx();
    const Bound b = o.bound(c, ub);
    if (b.hi < kInf) st.approx2();
    if (down) {
      if (!(b.lo > ub)) {
        keep(c, b);
      } else if (o.sat_lb(c) > ub) {
        down = false;
        c = c0;
      }
    } else {
      const float lnew = dc ? fmaxf(lp, b.ldom) : lp;
      if (!(b.lo > ub)) keep(c, b);
      ring[c & 7] = lnew;
      run = lnew > ub ? run + 1 : 0;
    }
  }

  exact_phase(o, rec_c, rec_l, ub, take, st);
  return best_c;
}

// Sum, left to right, of the exact terms RN(e_i^2) of the elements saturated at this byte
// with a non-negative error (code 6, |x_i| >= RN(6 s)): a lower bound of the objective
// (a sub-sum of non-negative terms in the same order), which can only grow as the byte
// falls [P2]. kWeighted: terms RN(w_i * RN(e_i^2)) for the "hessian" bound [P6].
template <bool kWeighted>
NVS_HD float saturated_sum(const float (&x)[16], float osc, float s, const float* w) {
  const float d6 = rn_mul(6.0f, s);
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const float a = fabsf(x[i]);
    const float e = rn_sub(a, d6);
    if (rn_mul(a, osc) > 5.0f && e >= 0.0f) {
      float t = rn_mul(e, e);
      if (kWeighted) t = rn_mul(w[i], t);
      sum = rn_add(sum, t);
    }
  }
  return kWeighted ? rn_mul(sum, 1.0f - 0x1p-20f) : sum;
}

// "mse" objective of one NVFP4 block. tab_osc / tab_s: the multipliers of bytes 0..126 for
// the block's global scale (shared memory on the device).
struct MseObj {
  const float (&x)[16];
  const float* tab_osc;
  const float* tab_s;
  float vmax, vmax2, a2;  // max |x|, its square, sum of squares (for the margins)

  NVS_HD float exact(int c) const { return sse_exact<16>(x, tab_osc[c], tab_s[c]); }
  NVS_HD float lb1(int c, bool& mono) const { return max_term(vmax, tab_osc[c], tab_s[c], mono); }
  NVS_HD float lb1_dom(float l1) const { return lower_from(l1, vmax2); }
  NVS_HD bool dom(int c) const { return c >= 8 && rn_mul(vmax, tab_osc[c]) <= 6.99f; }
  NVS_HD float naive_dom(float v) const { return lower_from(v, a2); }
  NVS_HD float sat_lb(int c) const {
    return saturated_sum<false>(x, tab_osc[c], tab_s[c], nullptr);
  }
  NVS_HD Bound bound(int c, float) const {
    const float v = sse_approx16(x, tab_osc[c], tab_s[c]);
    const float lo = lower_from(v, a2);
    return {lo, lo, upper_from(v, a2)};
  }
};

// Per column group of the Hessian (shared memory on the device), computed once per group by
// hessian_group_bounds: the matrix, the bound weights (w[0] == 0: no bounds), rho = ||H||_F
// rounded up, and where the shifted Cholesky factor exists (chol != 0) U = L^T with
// 0 <= S - L L^T <= dl I, and mu = rho + trace(S) rounded up [P7].
struct HessScalars {
  float rho, mu, dl;
  int chol;
};
struct HessGroup {
  const float* H;  // 16x16 row-major
  const float* w;  // 16 weights
  const float* U;  // 16x16 row-major, upper triangular (chol only)
  HessScalars k;
};

// "hessian" objective of one NVFP4 block.
struct HessObj {
  const float (&x)[16];
  const float* tab_osc;
  const float* tab_s;
  HessGroup g;
  Column ei;  // scratch for the quadratic forms
  float vmax, wmax, wmax_v2, a2, aw;  // vmax; weight of the max element; wmax * vmax^2;
                                      // sum x_i^2; sum w_i x_i^2

  NVS_HD float exact(int c) const {
    return hess_exact(x, Mult{tab_osc[c], tab_s[c]}, g.H, ei);
  }
  NVS_HD float lb1(int c, bool& mono) const {
    const float t = max_term(vmax, tab_osc[c], tab_s[c], mono);
    return rn_mul(rn_mul(wmax, t), 1.0f - 0x1p-20f);
  }
  NVS_HD float lb1_dom(float l1) const { return lower_from(l1, wmax_v2); }
  NVS_HD bool dom(int c) const { return c >= 8 && rn_mul(vmax, tab_osc[c]) <= 6.99f; }
  NVS_HD float naive_dom(float) const { return -kInf; }  // the exact objective is no sum of squares
  NVS_HD float sat_lb(int c) const { return saturated_sum<true>(x, tab_osc[c], tab_s[c], g.w); }
  // The weighted pass [P6]; if it does not drop the byte, a bracket of the objective from the
  // Cholesky form (or, without a factor, the approximate quadratic form) [P7].
  NVS_HD Bound bound(int c, float ub) const {
    float e[16];
    errors_approx16(x, tab_osc[c], tab_s[c], e);
    const float lw = lower_from(wsum16(e, g.w), aw);
    if (lw > ub) return {lw, lw, kInf};
    return bracket(e, lw);
  }
  NVS_HD Bound bracket(const float (&e)[16], float lw) const {
    const float e2 = sum_sq16(e);
    if (g.k.chol) {
      // S - dl I <= L L^T <= S: |obj - ||L^T e||^2 - [0, dl ||e||^2]| <= mu (2^-14 e2 + 2^-22 A)
      const float z = chol_form16(e, g.U);
      const float eta =
          rn_mul(rn_mul(g.k.mu, rn_add(rn_mul(e2, 0x1p-14f), rn_mul(a2, 0x1p-22f))), 1.0f + 0x1p-16f);
      const float lo = rn_sub(rn_mul(z, 1.0f - 0x1p-16f), eta);
      const float hi = rn_add(rn_add(rn_mul(z, 1.0f + 0x1p-16f), eta), rn_mul(g.k.dl, e2));
      return {lw, fmaxf(lw, lo), rn_mul(hi, 1.0f + 0x1p-20f)};
    }
    // |obj - v| <= rho (2^-13 e2 + 2^-22 A)
    const float v = quad_approx16(e, g.H, ei);
    const float eta =
        rn_mul(rn_mul(g.k.rho, rn_add(rn_mul(e2, 0x1p-13f), rn_mul(a2, 0x1p-22f))), 1.0f + 0x1p-16f);
    return {lw, fmaxf(lw, rn_sub(v, eta)), rn_add(v, eta)};
  }
};

// ---- Hessian group bounds [P6] ------------------------------------------------------------------
// tau: a lower bound of lambda_min of C = D^-1/2 S D^-1/2 (S the symmetric part of H,
// D = diag(H)), from ||C^-1|| <= min(||C^-1||_F, ||C^-1||_1) with C^-1 from a Cholesky
// factorisation in fp64; then H >= tau D, and with kappa covering the rounding of the
// reference's quadratic form, obj >= sum_i (tau H_ii - kappa) e_i^2. Writes w[16] (fp32,
// rounded down; all zero when any H_ii <= 0, H is not finite, C is not numerically positive
// definite (lambda_min < 1e-8) or a weight would not be positive) and returns rho = ||H||_F
// rounded up to fp32.
NVS_HD float f32_down(double v) {
#ifdef __CUDA_ARCH__
  return __double2float_rd(v);
#else
  float f = static_cast<float>(v);
  if (static_cast<double>(f) > v) f = std::nextafter(f, -kInf);
  return f;
#endif
}
NVS_HD float f32_up(double v) {
#ifdef __CUDA_ARCH__
  return __double2float_ru(v);
#else
  float f = static_cast<float>(v);
  if (static_cast<double>(f) < v) f = std::nextafter(f, kInf);
  return f;
#endif
}

// In-place Cholesky a = L L^T (lower triangle of a, fp64); false at a pivot <= floor.
NVS_HD bool cholesky16(double (&a)[16][16], double floor) {
  for (int j = 0; j < 16; ++j) {
    double p = a[j][j];
    for (int k = 0; k < j; ++k) p -= a[j][k] * a[j][k];
    if (!(p > floor)) return false;
    const double l = sqrt(p);
    a[j][j] = l;
    for (int i = j + 1; i < 16; ++i) {
      double v = a[i][j];
      for (int k = 0; k < j; ++k) v -= a[i][k] * a[j][k];
      a[i][j] = v / l;
    }
  }
  return true;
}

// work: 528 doubles of scratch (shared memory on the device: a local array would give every
// thread of the kernel a 4 KiB stack). Writes w[16] and U[256].
NVS_HD HessScalars hessian_group_bounds(const float* __restrict__ H, float* __restrict__ w,
                                        float* __restrict__ U, double* __restrict__ work) {
  double(&c)[16][16] = *reinterpret_cast<double(*)[16][16]>(work);
  double(&x)[16][16] = *reinterpret_cast<double(*)[16][16]>(work + 256);
  double* d = work + 512;
  double fro = 0.0, tr = 0.0;
  bool finite = true, ok = true;
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 16; ++j) {
      const double h = H[16 * i + j];
      finite = finite && std::isfinite(h);
      fro += h * h;
    }
    d[i] = H[17 * i];
    tr += d[i];
    ok = ok && d[i] > 0.0;
  }
  HessScalars k;
  // ||H||_F, rounded up with a relative slack over the fp64 sum of squares and sqrt
  // (+inf for a non-finite H: the search is then exhaustive).
  k.rho = finite ? f32_up(sqrt(fro) * (1.0 + 1e-12)) : kInf;
  k.mu = finite ? f32_up((static_cast<double>(k.rho) + fabs(tr)) * (1.0 + 1e-12)) : kInf;
  k.dl = 0.0f;
  k.chol = 0;
  ok = ok && std::isfinite(k.rho) && std::isfinite(k.mu);
  double tau = 0.0;
  if (ok) {
    for (int i = 0; i < 16; ++i) {
      for (int j = 0; j < 16; ++j) {
        const double sym = 0.5 * (static_cast<double>(H[16 * i + j]) + H[16 * j + i]);
        c[i][j] = sym / sqrt(d[i] * d[j]);
      }
    }
    if (cholesky16(c, 1e-12)) {
      // X = L^-1 (lower triangular).
      for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j) x[i][j] = 0.0;
      for (int j = 0; j < 16; ++j) {
        x[j][j] = 1.0 / c[j][j];
        for (int i = j + 1; i < 16; ++i) {
          double v = 0.0;
          for (int q = j; q < i; ++q) v -= c[i][q] * x[q][j];
          x[i][j] = v / c[i][i];
        }
      }
      // C^-1 = X^T X; its Frobenius norm and max column sum.
      double f2 = 0.0, n1 = 0.0;
      for (int j = 0; j < 16; ++j) {
        double col = 0.0;
        for (int i = 0; i < 16; ++i) {
          double v = 0.0;
          for (int q = i > j ? i : j; q < 16; ++q) v += x[q][i] * x[q][j];
          f2 += v * v;
          col += fabs(v);
        }
        n1 = col > n1 ? col : n1;
      }
      const double nrm = fmin(sqrt(f2), n1);
      if (nrm < 1e8) tau = (1.0 / nrm) * (1.0 - 1e-4);
    }
  }
  // kappa = 2^-15 rho covers the rounding of the reference's quadratic form [P6].
  const double kappa = static_cast<double>(k.rho) * 0x1p-15;
  bool pos = tau > 0.0;
  for (int i = 0; i < 16; ++i) pos = pos && tau * d[i] - kappa > 0.0;
  for (int i = 0; i < 16; ++i) w[i] = pos ? f32_down(tau * d[i] - kappa) : 0.0f;
  // The shifted factor [P7]: L = chol(S - sigma I) in fp64, sigma = 2^-22 trace(S), rounded
  // to fp32; then 0 <= S - L L^T <= 6.01 u trace(S) I <= dl I.
  if (ok) {
    const double sigma = 0x1p-22 * tr;
    for (int i = 0; i < 16; ++i) {
      for (int j = 0; j < 16; ++j) {
        c[i][j] = 0.5 * (static_cast<double>(H[16 * i + j]) + H[16 * j + i]) - (i == j ? sigma : 0.0);
      }
    }
    if (cholesky16(c, 0.0)) {
      for (int r = 0; r < 16; ++r)
        for (int j = 0; j < 16; ++j) U[16 * r + j] = j >= r ? static_cast<float>(c[j][r]) : 0.0f;
      k.dl = f32_up(0x1p-20 * tr * (1.0 + 1e-12));
      k.chol = 1;
    }
  }
  return k;
}

// The exact "hessian" search without bounds (a group with w == 0): every byte gets the
// approximate quadratic form, only near-minimal ones the exact one. Exact, just slower.
template <class Stats>
NVS_HD int hessian_unbounded(const HessObj& o, int c0, float naive_obj, Stats& st) {
  float ub = naive_obj, best = naive_obj;
  int best_c = c0;
  bool best_naive = true;
  auto take = [&](int c, float v) {
    if (v < best || (v == best && !best_naive && c < best_c)) {
      best = v;
      best_c = c;
      best_naive = false;
    }
    ub = fminf(ub, v);
  };
  int rec_c[kRecords];
  float rec_l[kRecords];
#pragma unroll
  for (int k = 0; k < kRecords; ++k) {
    rec_c[k] = 0;
    rec_l[k] = kInf;
  }
  for (int c = 1; c <= kMaxByte; ++c) {
    st.approx2();
    float e[16];
    errors_approx16(o.x, o.tab_osc[c], o.tab_s[c], e);
    const Bound b = o.bracket(e, -kInf);
    const float lo = b.lo, hi = b.hi;
    if (lo > ub) continue;
    bool done = false;
#pragma unroll
    for (int k = 0; k < kRecords; ++k) {
      if (!done && !(rec_l[k] <= ub)) {
        rec_c[k] = c;
        rec_l[k] = lo;
        done = true;
      }
    }
    ub = fminf(ub, hi);
    if (!done) {
      st.exact();
      take(c, o.exact(c));
    }
  }
  exact_phase(o, rec_c, rec_l, ub, take, st);
  return best_c;
}

// ---- whole-block drivers (shared by the kernels and the CPU checks) -----------------------------
// NVFP4 block: x (16 values, fp32), the global scale and its RN reciprocal, the candidates'
// multipliers tab_osc / tab_s (bytes 0..126). Returns the chosen scale byte (0x7F for a
// non-finite block). hess: nullptr for "mse".
// ring: 8 floats of per-thread scratch; ei: 16 more ("hessian" only).
template <class Stats>
NVS_HD uint32_t nvfp4_choose(const float (&x)[16], float gs, float inv_gs, const float* tab_osc,
                             const float* tab_s, const HessGroup* hess, Ring ring, Column ei,
                             Stats& st) {
  uint32_t amax_bits = 0;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const uint32_t b = fbits(x[i]) & 0x7FFFFFFFu;
    amax_bits = amax_bits > b ? amax_bits : b;
  }
  if (amax_bits >= 0x7F800000u) return kNanScale;  // NaN / inf in the block
  const float vmax = ffrom(amax_bits);
#ifdef __CUDA_ARCH__
  const uint32_t c0 = nvfp4_scale_byte(vmax, gs);
#else
  const uint32_t c0 = static_cast<uint32_t>(
      __nv_cvt_float_to_fp8(rn_mul(gs, rn_mul(vmax, 1.0f / 6.0f)), __NV_SATFINITE, __NV_E4M3));
#endif
  if ((c0 & 0x7Fu) == kNanScale) return kNanScale;  // the reference keeps a NaN naive byte
  // An all-zero block: every candidate's objective is the naive's (all errors +0).
  if (vmax == 0.0f && gs_fast(gs)) return c0;
  const bool fast = gs_fast(gs) && vmax_fast(vmax);
  const Mult m0 = c0 <= static_cast<uint32_t>(kMaxByte) ? Mult{tab_osc[c0], tab_s[c0]}
                                                        : nvfp4_mult(c0, gs, inv_gs);
  float a2 = 0.0f;
#pragma unroll
  for (int i = 0; i < 16; ++i) a2 = rn_fma(x[i], x[i], a2);
  a2 = rn_mul(a2, 1.0f + 0x1p-16f);  // an upper bound of the exact sum of squares
  if (hess == nullptr) {
    const MseObj o{x, tab_osc, tab_s, vmax, rn_mul(vmax, vmax), a2};
    float naive;
    {
      const float oa = fabsf(m0.osc), sa = fabsf(m0.s);
      naive = sse_exact<16>(x, oa, sa);
    }
    if (!fast) return static_cast<uint32_t>(nvfp4_exhaustive(o, static_cast<int>(c0), naive, st));
    return static_cast<uint32_t>(nvfp4_pruned(o, static_cast<int>(c0), naive, ring, st));
  }
  // "hessian": the weight of the max element (any index holding vmax: same error) and
  // sum w_i x_i^2.
  float wmax = 0.0f, aw = 0.0f;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const float wi = hess->w[i];
    if ((fbits(x[i]) & 0x7FFFFFFFu) == amax_bits) wmax = wi;
    aw = rn_fma(rn_mul(wi, x[i]), x[i], aw);
  }
  aw = rn_mul(aw, 1.0f + 0x1p-16f);
  const HessObj o{x,    tab_osc, tab_s, *hess, ei, vmax, wmax, rn_mul(wmax, rn_mul(vmax, vmax)),
                  a2,   aw};
  const float naive = hess_exact(x, m0, hess->H, ei);
  // Bounded only where no product of the quadratic forms can overflow: |H_ij e_j| and
  // e^T H e stay below 2^103 when mu * sum x^2 <= 2^100 (mu >= ||H||_F, |e_i| <= 2.01 |x_i|).
  if (!fast || !(rn_mul(hess->k.mu, a2) <= 0x1p100f) || !std::isfinite(naive)) {
    return static_cast<uint32_t>(nvfp4_exhaustive(o, static_cast<int>(c0), naive, st));
  }
  if (hess->w[0] == 0.0f) {
    return static_cast<uint32_t>(hessian_unbounded(o, static_cast<int>(c0), naive, st));
  }
  return static_cast<uint32_t>(nvfp4_pruned(o, static_cast<int>(c0), naive, ring, st));
}

// Codes of an NVFP4 block for scale byte `byte` (reference._nvfp4_encode_with_scale): the
// magnitude of E2M1(RN(x * osc)), the sign of that product (of x where it is NaN); all 0
// when the scale is NaN. Element 2i in the low nibble: lo = elements 0..7, hi = 8..15.
NVS_HD void nvfp4_encode16(const float (&x)[16], uint32_t byte, float osc, uint32_t& lo,
                           uint32_t& hi) {
  lo = hi = 0;
  if ((byte & 0x7Fu) == 0x7Fu) return;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const float y = rn_mul(x[i], osc);
    const uint32_t code =
        e2m1_code_of(e2m1_mag<true>(fabsf(y))) | ((fbits(y != y ? x[i] : y) >> 28) & 8u);
    if (i < 8) {
      lo |= code << (4 * i);
    } else {
      hi |= code << (4 * (i - 8));
    }
  }
}

// ---- MX (E8M0 scales, 32 elements) [P8] ---------------------------------------------------------
// 2^(127 - b) and 2^(b - 127) for b <= 254, exactly (the e8m0.cuh primitives on the device).
NVS_HD float e8m0_inv(uint32_t b) {
#ifdef __CUDA_ARCH__
  return e8m0_inverse(b);
#else
  return ffrom(b < 254u ? (254u - b) << 23 : 0x00400000u);
#endif
}
NVS_HD float e8m0_val(uint32_t b) {
#ifdef __CUDA_ARCH__
  return e8m0_decode(b);
#else
  return ffrom(b ? b << 23 : 0x00400000u);
#endif
}

// Exact MX "mse" objective (reference._mx_objective_cols); stops early (returning a value
// > thr) once a partial sum exceeds thr: partial sums of non-negative terms never decrease.
template <bool kE2M1>
NVS_HD float mx_sse(const float (&x)[32], uint32_t b, float thr) {
  const float inv = e8m0_inv(b), pw = e8m0_val(b);
  float sum = 0.0f;
#pragma unroll
  for (int g = 0; g < 4; ++g) {
#pragma unroll
    for (int i = 8 * g; i < 8 * g + 8; ++i) {
      const float a = fabsf(x[i]);
      const float y = rn_mul(a, inv);
      const float q = kE2M1 ? e2m1_mag<false>(y) : e4m3_mag<false>(y);
      const float e = rn_sub(a, rn_mul(q, pw));
      const float sq = rn_mul(e, e);
      sum = i == 0 ? sq : rn_add(sum, sq);
    }
    if (g < 3 && sum > thr) return sum;
  }
  return sum;
}

// The max element's exact term; mono: saturated (code Emax) with error >= 0.
template <bool kE2M1>
NVS_HD float mx_max_term(float vmax, uint32_t b, bool& mono) {
  const float emax = kE2M1 ? 6.0f : 448.0f;
  const float y = rn_mul(vmax, e8m0_inv(b));
  const float q = kE2M1 ? e2m1_mag<false>(y) : e4m3_mag<false>(y);
  const float e = rn_sub(vmax, rn_mul(q, e8m0_val(b)));
  mono = q == emax && e >= 0.0f;
  return rn_mul(e, e);
}

// b dominates every b + k: RN(vmax * 2^(127-b)) <= 7 (E2M1) / 464 (E4M3) [P8].
template <bool kE2M1>
NVS_HD bool mx_dom(float vmax, uint32_t b) {
  return rn_mul(vmax, e8m0_inv(b)) <= (kE2M1 ? 7.0f : 464.0f);
}

// Chosen E8M0 byte of an MX block whose naive byte is b0 (255: non-finite, kept).
template <bool kE2M1, class Stats>
NVS_HD uint32_t mx_choose(const float (&x)[32], uint32_t b0, Stats& st) {
  if (b0 == 255u) return b0;
  uint32_t amax_bits = 0;
#pragma unroll
  for (int i = 0; i < 32; ++i) {
    const uint32_t v = fbits(x[i]) & 0x7FFFFFFFu;
    amax_bits = amax_bits > v ? amax_bits : v;
  }
  if (amax_bits == 0u) return b0;  // all objectives 0: the naive wins
  const float vmax = ffrom(amax_bits);
  st.exact();
  float best = mx_sse<kE2M1>(x, b0, kInf);
  uint32_t best_b = b0;
  bool best_naive = true;
  auto consider = [&](uint32_t b) {
    st.exact();
    const float v = mx_sse<kE2M1>(x, b, best);
    if (v < best || (v == best && !best_naive && b < best_b)) {
      best = v;
      best_b = b;
      best_naive = false;
    }
  };
  // Downward: the max element's term, monotone once saturated [P1, P2 for E8M0].
  for (int b = static_cast<int>(b0) - 1; b >= 0; --b) {
    bool mono;
    const float l1 = mx_max_term<kE2M1>(vmax, static_cast<uint32_t>(b), mono);
    if (l1 > best) {
      if (mono) break;
      continue;
    }
    consider(static_cast<uint32_t>(b));
  }
  // Upward: the first dominating byte (the naive itself with rceil) ends the scan [P8].
  if (!mx_dom<kE2M1>(vmax, b0)) {
    for (uint32_t b = b0 + 1; b <= 254u; ++b) {
      const bool dc = mx_dom<kE2M1>(vmax, b);
      bool mono;
      if (!(mx_max_term<kE2M1>(vmax, b, mono) > best)) consider(b);
      if (dc) break;
    }
  }
  return best_b;
}

#undef NVS_HD

}  // namespace search
}  // namespace nvfp4

// =====================================================================================
// Kernels (device only).
// =====================================================================================
#ifdef __CUDACC__
namespace nvfp4 {
namespace search {

constexpr int kThreads = 128;

struct Nvfp4SearchParams {
  const void* x;        // contiguous [batches, rows, k]
  uint8_t* packed;      // [batches, rows, k / 2]
  uint8_t* scales;      // linear [batches, rows, kb] or swizzled [batches, mp, kp]
  const float* gs;      // [1] or [batches]
  const float* hessian; // [kb, 16, 16] ("hessian" only)
  int64_t batches, rows, kb, mp, kp;
  int64_t per_batch;    // rows * kb
  int64_t row_tiles;    // "hessian": tiles of kThreads rows per CTA (grid.y splits them)
  bool gs_per_batch;
};

// 16 elements of block blk as fp32: two (fp16/bf16) or four (fp32) 16-byte loads.
template <typename T>
__device__ __forceinline__ void load16(const void* x, int64_t blk, float (&v)[16]) {
  constexpr int kV = Elem<T>::kPerVec;
  const char* p = static_cast<const char*>(x) + blk * 16 * static_cast<int64_t>(sizeof(T));
#pragma unroll
  for (int u = 0; u < 16 / kV; ++u) unpack_vec<T>(load_stream(p + 16 * u), v + kV * u);
}

// Scale byte of block blk = (batch, row r, column c) and, in the swizzled layout, the zero
// column padding after the last column of each row.
template <bool kSwizzle>
__device__ __forceinline__ void store_scale(const Nvfp4SearchParams& p, int64_t batch, int64_t r,
                                            int64_t c, uint32_t byte) {
  if (!kSwizzle) {
    p.scales[(batch * p.rows + r) * p.kb + c] = static_cast<uint8_t>(byte);
    return;
  }
  uint8_t* s = p.scales + batch * p.mp * p.kp;
  s[swizzle_offset(r, c, p.kp)] = static_cast<uint8_t>(byte);
  if (c + 1 == p.kb) {
    for (int64_t j = p.kb; j < p.kp; ++j) s[swizzle_offset(r, j, p.kp)] = 0;
  }
}

// Rows rows..mp-1 of every batch of swizzled scales are padding: zero them, 4 bytes (the 4
// columns of a row inside a 128x4 tile are adjacent) per thread, grid-stride over all CTAs.
__device__ __forceinline__ void zero_row_padding(const Nvfp4SearchParams& p, int64_t cols_p) {
  const int64_t words_per_row = cols_p / 4;
  const int64_t per_batch = (p.mp - p.rows) * words_per_row;
  const int64_t n = p.batches * per_batch;
  const int64_t ctas = int64_t(gridDim.x) * gridDim.y * gridDim.z;
  const int64_t cta = (int64_t(blockIdx.z) * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  for (int64_t w = cta * blockDim.x + threadIdx.x; w < n; w += ctas * blockDim.x) {
    const int64_t b = w / per_batch;
    const int64_t rem = w - b * per_batch;
    const int64_t r = p.rows + rem / words_per_row;
    const int64_t c = (rem % words_per_row) * 4;
    *reinterpret_cast<uint32_t*>(p.scales + b * p.mp * cols_p + swizzle_offset(r, c, cols_p)) = 0u;
  }
}

// The multipliers of bytes 0..126 for global scale gs, into shared memory.
__device__ __forceinline__ void fill_table(float* tab_osc, float* tab_s, float gs, float inv_gs) {
  for (int c = threadIdx.x; c <= kMaxByte; c += blockDim.x) {
    const Mult m = nvfp4_mult(static_cast<uint32_t>(c), gs, inv_gs);
    tab_osc[c] = m.osc;
    tab_s[c] = m.s;
  }
}

// Encode block blk of x with the chosen byte and store codes and scale.
template <bool kSwizzle>
__device__ __forceinline__ void finish_block(const Nvfp4SearchParams& p, const float (&v)[16],
                                             int64_t blk, int64_t batch, int64_t r, int64_t c,
                                             uint32_t byte, const float* tab_osc, float gs,
                                             float inv_gs) {
  const float osc = byte <= static_cast<uint32_t>(kMaxByte) ? tab_osc[byte]
                                                            : nvfp4_mult(byte, gs, inv_gs).osc;
  uint32_t lo, hi;
  nvfp4_encode16(v, byte, osc, lo, hi);
  __stcs(reinterpret_cast<uint2*>(p.packed) + blk, make_uint2(lo, hi));
  store_scale<kSwizzle>(p, batch, r, c, byte);
}

// "mse": one thread per block, blocks in memory order (coalesced 16-byte loads). grid.y
// walks the batches when each has its own global scale (one multiplier table per batch).
template <typename T, bool kSwizzle>
__global__ void __launch_bounds__(kThreads) nvfp4_mse_search_kernel(const Nvfp4SearchParams p) {
  __shared__ float tab_osc[kMaxByte + 1], tab_s[kMaxByte + 1];
  __shared__ float ring_buf[8 * kThreads];
  const Ring ring{ring_buf + threadIdx.x, kThreads};
  NoStats st;
  const int64_t n_groups = p.gs_per_batch ? p.batches : 1;
  const int64_t per_group = p.gs_per_batch ? p.per_batch : p.batches * p.per_batch;
  for (int64_t g = blockIdx.y; g < n_groups; g += gridDim.y) {
    const float gs = __ldg(p.gs + (p.gs_per_batch ? g : 0));
    const float inv_gs = __frcp_rn(gs);
    __syncthreads();  // the previous group's table is no longer read
    fill_table(tab_osc, tab_s, gs, inv_gs);
    __syncthreads();
    for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < per_group;
         i += int64_t(gridDim.x) * kThreads) {
      const int64_t blk = g * per_group + i;
      float v[16];
      load16<T>(p.x, blk, v);
      const uint32_t byte = nvfp4_choose(v, gs, inv_gs, tab_osc, tab_s, nullptr, ring, ring, st);
      const int64_t row = blk / p.kb;
      const int64_t c = blk - row * p.kb;
      const int64_t batch = row / p.rows;
      finish_block<kSwizzle>(p, v, blk, batch, row - batch * p.rows, c, byte, tab_osc, gs, inv_gs);
    }
  }
  if (kSwizzle) zero_row_padding(p, p.kp);
}

// "hessian": a CTA owns one column group j (grid.x), one batch (grid.z) and every
// gridDim.y-th tile of kThreads rows; a thread owns one row of the tile. The group's H, its
// bound weights and ||H||_F sit in shared memory and every read of them is a broadcast.
template <typename T, bool kSwizzle>
__global__ void __launch_bounds__(kThreads) nvfp4_hessian_search_kernel(const Nvfp4SearchParams p) {
  __shared__ __align__(16) float h_s[256];
  __shared__ float w_s[16];
  __shared__ __align__(16) float u_s[256];
  __shared__ HessScalars k_s;
  __shared__ double work_s[528];
  __shared__ float tab_osc[kMaxByte + 1], tab_s[kMaxByte + 1];
  __shared__ float col_buf[24 * kThreads];
  const Ring ring{col_buf + threadIdx.x, kThreads};
  const Column ei{col_buf + 8 * kThreads + threadIdx.x, kThreads};
  NoStats st;
  for (int64_t j = blockIdx.x; j < p.kb; j += gridDim.x) {
    for (int64_t b = blockIdx.z; b < p.batches; b += gridDim.z) {
      const float gs = __ldg(p.gs + (p.gs_per_batch ? b : 0));
      const float inv_gs = __frcp_rn(gs);
      __syncthreads();
      for (int t = threadIdx.x; t < 256; t += blockDim.x) h_s[t] = __ldg(p.hessian + j * 256 + t);
      fill_table(tab_osc, tab_s, gs, inv_gs);
      __syncthreads();
      if (threadIdx.x == 0) k_s = hessian_group_bounds(h_s, w_s, u_s, work_s);
      __syncthreads();
      const HessGroup hg{h_s, w_s, u_s, k_s};
      for (int64_t tile = blockIdx.y; tile < p.row_tiles; tile += gridDim.y) {
        const int64_t r = tile * kThreads + threadIdx.x;
        if (r >= p.rows) continue;
        const int64_t blk = (b * p.rows + r) * p.kb + j;
        float v[16];
        load16<T>(p.x, blk, v);
        const uint32_t byte = nvfp4_choose(v, gs, inv_gs, tab_osc, tab_s, &hg, ring, ei, st);
        finish_block<kSwizzle>(p, v, blk, b, r, j, byte, tab_osc, gs, inv_gs);
      }
    }
  }
  if (kSwizzle) zero_row_padding(p, p.kp);
}

// ---- MX -----------------------------------------------------------------------------------------
struct MxSearchParams {
  const void* x;   // contiguous [batches, rows, k]
  uint8_t* data;   // E2M1: [.., k / 2]; E4M3: [.., k]
  uint8_t* scales; // linear [batches, rows, kb] or swizzled [batches, mp, kp]
  int64_t batches, rows, kb, mp, kp;
  int64_t n_blocks;
};

template <typename T>
__device__ __forceinline__ void load32(const void* x, int64_t blk, float (&v)[32]) {
  constexpr int kV = Elem<T>::kPerVec;
  const char* p = static_cast<const char*>(x) + blk * 32 * static_cast<int64_t>(sizeof(T));
#pragma unroll
  for (int u = 0; u < 32 / kV; ++u) unpack_vec<T>(load_stream(p + 16 * u), v + kV * u);
}

// One thread per 32-element block: naive byte (rceil / floor), search, encode, store.
template <typename T, bool kE2M1, MxRounding kR, bool kSwizzle>
__global__ void __launch_bounds__(kThreads) mx_mse_search_kernel(const MxSearchParams p) {
  NoStats st;
  for (int64_t blk = int64_t(blockIdx.x) * kThreads + threadIdx.x; blk < p.n_blocks;
       blk += int64_t(gridDim.x) * kThreads) {
    float v[32];
    load32<T>(p.x, blk, v);
    uint32_t amax_bits = 0;
#pragma unroll
    for (int i = 0; i < 32; ++i) amax_bits = max(amax_bits, abs_bits(v[i]));
    const bool finite = amax_bits < kInfBits;
    const uint32_t b0 = finite ? e8m0_scale<kR>(amax_bits, kE2M1 ? 6.0f : 448.0f, kE2M1 ? 2 : 8)
                               : 255u;
    const uint32_t b = mx_choose<kE2M1>(v, b0, st);
    const float inv = e8m0_inverse(b);
    if (kE2M1) {
      uint32_t w[4] = {0u, 0u, 0u, 0u};
      if (finite) {
#pragma unroll
        for (int i = 0; i < 32; ++i) {
          const float y = __fmul_rn(v[i], inv);
          const uint32_t code = e2m1_code_of(e2m1_mag<false>(fabsf(y))) | ((fbits(y) >> 28) & 8u);
          w[i / 8] |= code << (4 * (i % 8));
        }
      }
      __stcs(reinterpret_cast<uint4*>(p.data) + blk, make_uint4(w[0], w[1], w[2], w[3]));
    } else {
      uint32_t w[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const uint32_t lo = e4m3x2_encode(__fmul_rn(v[4 * i], inv), __fmul_rn(v[4 * i + 1], inv));
        const uint32_t hi =
            e4m3x2_encode(__fmul_rn(v[4 * i + 2], inv), __fmul_rn(v[4 * i + 3], inv));
        w[i] = finite ? (lo & 0xFFFFu) | (hi << 16) : 0u;
      }
      uint4* d = reinterpret_cast<uint4*>(p.data) + 2 * blk;
      __stcs(d, make_uint4(w[0], w[1], w[2], w[3]));
      __stcs(d + 1, make_uint4(w[4], w[5], w[6], w[7]));
    }
    if (!kSwizzle) {
      p.scales[blk] = static_cast<uint8_t>(b);
    } else {
      const int64_t row = blk / p.kb;
      const int64_t c = blk - row * p.kb;
      const int64_t batch = row / p.rows;
      uint8_t* s = p.scales + batch * p.mp * p.kp;
      const int64_t r = row - batch * p.rows;
      s[swizzle_offset(r, c, p.kp)] = static_cast<uint8_t>(b);
      if (c + 1 == p.kb) {
        for (int64_t j = p.kb; j < p.kp; ++j) s[swizzle_offset(r, j, p.kp)] = 0;
      }
    }
  }
  if (kSwizzle) {
    Nvfp4SearchParams q{};
    q.scales = p.scales;
    q.batches = p.batches;
    q.rows = p.rows;
    q.mp = p.mp;
    zero_row_padding(q, p.kp);
  }
}

}  // namespace search
}  // namespace nvfp4
#endif  // __CUDACC__
