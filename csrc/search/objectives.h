// Objectives of the scale search (docs/spec.md sec. 5) for one NVFP4 block: the exact "mse" and
// "hessian" values in the reference's operation order, the approximate passes with their
// proven error brackets, and the bounds the pruned scan uses (MseObj, HessObj).
// __host__ __device__, torch-free; proofs [P1]..[P7] in docs/search.md.
#pragma once

#include "core/bits.h"
#include "core/e2m1.h"
#include "nvfp4/block.h"
#include "search/prune.h"

namespace nvfp4 {
namespace search {

// osc = RN(1 / RN(fp32(sf) * RN(1/gs))) (0 where fp32(sf) == 0 or the product is 0) and
// s = RN(fp32(sf) / gs): the NVFP4 multipliers of nvfp4/block.h for one candidate byte.
// NaN iff sf (or gs) is NaN.
struct Mult {
  float osc, s;
};
NVFP4_HD Mult nvfp4_mult(uint32_t byte, float gs, float inv_gs) {
  return Mult{nvfp4_osc(byte, inv_gs), nvfp4_dq(byte, gs)};
}

// The fast (bounded) path needs: 2^-100 <= gs <= 2^100, then every candidate's osc and s are
// finite, positive normal numbers and exactly double from byte c to c + 8 (c >= 8) [P4]; and
// 2^-60 <= vmax <= 2^60, so that no square overflows and the absolute rounding of tiny terms
// is covered by the margins [P3].
NVFP4_HD bool gs_fast(float gs) { return gs >= 0x1p-100f && gs <= 0x1p100f; }
NVFP4_HD bool vmax_fast(float vmax) { return vmax >= 0x1p-60f && vmax <= 0x1p60f; }

// ---- exact objectives (the reference's operation order) ------------------------------------
// NVFP4 "mse" (reference._nvfp4_objective_cols): y = RN(|x| * |osc|), q = E2M1(y),
// e = RN(|x| - RN(q * |s|)), s = RN(e_0^2), s = RN(s + RN(e_i^2)), i = 1..N-1.
template <int N>
NVFP4_HD float sse_exact(const float (&x)[N], float osc, float s) {
  const float oa = fabsf(osc), sa = fabsf(s);
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const float a = fabsf(x[i]);
    const float q = e2m1_mag_value<true>(rn_mul(a, oa));
    const float e = rn_sub(a, rn_mul(q, sa));
    const float sq = rn_mul(e, e);
    sum = i == 0 ? sq : rn_add(sum, sq);
  }
  return sum;
}

// Signed errors of the "hessian" objective: v = copysign(q, RN(x * osc)) (sign of x where
// that product is NaN), e = RN(x - RN(v * s)) (reference._nvfp4_round and its caller).
NVFP4_HD float err_signed_exact(float x, float osc, float s) {
  const float y = rn_mul(x, osc);
  const float q = e2m1_mag_value<true>(fabsf(y));
  const uint32_t sgn = f32_bits(y != y ? x : y) & 0x80000000u;
  return rn_sub(x, rn_mul(f32_from_bits(f32_bits(q) | sgn), s));
}

// e^T H e for a 16x16 row-major H. kExact: sum_i RN(e_i * t_i), t_i = sum_j RN(H[i][j] * e_j),
// both left to right (reference._quadratic_form); else fused products, the approximate form
// of [P7]. The row loop stays rolled (code size); its e_i comes from the per-thread column
// ei (a copy of e).
template <bool kExact>
NVFP4_HD float quad_form16(const float (&e)[16], const float* __restrict__ H, Column ei) {
#pragma unroll
  for (int i = 0; i < 16; ++i) ei[i] = e[i];
  float obj = 0.0f;
#pragma unroll 1
  for (int i = 0; i < 16; ++i) {
    const float* h = H + 16 * i;
    if constexpr (kExact) {
      float t = rn_mul(h[0], e[0]);
#pragma unroll
      for (int j = 1; j < 16; ++j) t = rn_add(t, rn_mul(h[j], e[j]));
      const float p = rn_mul(ei[i], t);
      obj = i == 0 ? p : rn_add(obj, p);
    } else {
      float t = 0.0f;
#pragma unroll
      for (int j = 0; j < 16; ++j) t = rn_fma(h[j], e[j], t);
      obj = rn_fma(ei[i], t, obj);
    }
  }
  return obj;
}

NVFP4_HD float hess_exact(const float (&x)[16], Mult m, const float* __restrict__ H, Column ei) {
  float e[16];
#pragma unroll
  for (int i = 0; i < 16; ++i) e[i] = err_signed_exact(x[i], m.osc, m.s);
  return quad_form16<true>(e, H, ei);
}

// ---- approximate passes (fast path only: y never NaN, osc and s positive) ------------------
// V = sum_i e_i^2 with e_i = RN(|x_i| - q_i * s) fused: the reference's codes q_i, one rounding
// per error and per accumulation. |SSE_exact - V| <= 2^-12 V + 2^-20 A, A = sum x_i^2 [P3].
NVFP4_HD float sse_approx16(const float (&x)[16], float osc, float s) {
  float acc = 0.0f;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const float a = fabsf(x[i]);
    const float q = e2m1_mag_value<false>(rn_mul(a, osc));
    const float e = rn_fma(-q, s, a);
    acc = rn_fma(e, e, acc);
  }
  return acc;
}

// Signed errors of the approximate "hessian" passes: e_i = RN(x_i - sign(x_i) q_i s) (fused).
NVFP4_HD void errors_approx16(const float (&x)[16], float osc, float s, float (&e)[16]) {
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const float q = e2m1_mag_value<false>(rn_mul(fabsf(x[i]), osc));
    e[i] = rn_fma(-f32_from_bits(f32_bits(q) | (f32_bits(x[i]) & 0x80000000u)), s, x[i]);
  }
}

// sum_i w_i e_i^2 [P6] and sum_i e_i^2, fused.
NVFP4_HD float wsum16(const float (&e)[16], const float* __restrict__ w) {
  float acc = 0.0f;
#pragma unroll
  for (int i = 0; i < 16; ++i) acc = rn_fma(rn_mul(w[i], e[i]), e[i], acc);
  return acc;
}
NVFP4_HD float sum_sq16(const float (&e)[16]) {
  float acc = 0.0f;
#pragma unroll
  for (int i = 0; i < 16; ++i) acc = rn_fma(e[i], e[i], acc);
  return acc;
}


// ||U e||^2 for the upper-triangular U = L^T of the group's shifted Cholesky factor [P7]
// (row k of U at U + 16 k, zero below the diagonal). Rows in 4 bands of 4; band g uses
// columns 4g..15 only: 160 + 16 fused products, and the row loops stay rolled (a fully
// unrolled triangle keeps ~136 loaded coefficients live and costs the kernel 100+ registers).
NVFP4_HD float chol_form16(const float (&e)[16], const float* __restrict__ U) {
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
NVFP4_HD float max_term(float vmax, float osc, float s, bool& mono) {
  const float q = e2m1_mag_value<false>(rn_mul(vmax, osc));
  const float e = rn_sub(vmax, rn_mul(q, s));
  mono = q == 6.0f && e >= 0.0f;
  return rn_mul(e, e);
}

// Lower bound, valid for the candidate itself and (domination) for every c + 8k, from an
// approximate or exact sum Q of squared errors whose elements have squares summing to A [P3].
NVFP4_HD float lower_from(float q, float a) {
  return rn_sub(rn_mul(q, 1.0f - 0x1p-12f), rn_mul(a, 0x1p-20f));
}
NVFP4_HD float upper_from(float q, float a) {
  return rn_add(rn_mul(q, 1.0f + 0x1p-12f), rn_mul(a, 0x1p-20f));
}

// Sum, left to right, of the exact terms RN(e_i^2) of the elements saturated at this byte
// with a non-negative error (code 6, |x_i| >= RN(6 s)): a lower bound of the objective
// (a sub-sum of non-negative terms in the same order), which can only grow as the byte
// falls [P2]. kWeighted: terms RN(w_i * RN(e_i^2)) for the "hessian" bound [P6].
template <bool kWeighted>
NVFP4_HD float saturated_sum(const float (&x)[16], float osc, float s, const float* w) {
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

  NVFP4_HD float exact(int c) const { return sse_exact<16>(x, tab_osc[c], tab_s[c]); }
  NVFP4_HD float lb1(int c, bool& mono) const { return max_term(vmax, tab_osc[c], tab_s[c], mono); }
  NVFP4_HD float lb1_dom(float l1) const { return lower_from(l1, vmax2); }
  NVFP4_HD bool dom(int c) const { return c >= 8 && rn_mul(vmax, tab_osc[c]) <= 6.99f; }
  NVFP4_HD float naive_dom(float v) const { return lower_from(v, a2); }
  NVFP4_HD float sat_lb(int c) const {
    return saturated_sum<false>(x, tab_osc[c], tab_s[c], nullptr);
  }
  NVFP4_HD Bound bound(int c, float) const {
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

  NVFP4_HD float exact(int c) const {
    return hess_exact(x, Mult{tab_osc[c], tab_s[c]}, g.H, ei);
  }
  NVFP4_HD float lb1(int c, bool& mono) const {
    const float t = max_term(vmax, tab_osc[c], tab_s[c], mono);
    return rn_mul(rn_mul(wmax, t), 1.0f - 0x1p-20f);
  }
  NVFP4_HD float lb1_dom(float l1) const { return lower_from(l1, wmax_v2); }
  NVFP4_HD bool dom(int c) const { return c >= 8 && rn_mul(vmax, tab_osc[c]) <= 6.99f; }
  NVFP4_HD float naive_dom(float) const { return -kInf; }  // the exact objective is no sum of squares
  NVFP4_HD float sat_lb(int c) const { return saturated_sum<true>(x, tab_osc[c], tab_s[c], g.w); }
  // The weighted pass [P6]; if it does not drop the byte, a bracket of the objective from the
  // Cholesky form (or, without a factor, the approximate quadratic form) [P7].
  NVFP4_HD Bound bound(int c, float ub) const {
    float e[16];
    errors_approx16(x, tab_osc[c], tab_s[c], e);
    const float lw = lower_from(wsum16(e, g.w), aw);
    if (lw > ub) return {lw, lw, kInf};
    return bracket(e, lw);
  }
  NVFP4_HD Bound bracket(const float (&e)[16], float lw) const {
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
    const float v = quad_form16<false>(e, g.H, ei);
    const float eta =
        rn_mul(rn_mul(g.k.rho, rn_add(rn_mul(e2, 0x1p-13f), rn_mul(a2, 0x1p-22f))), 1.0f + 0x1p-16f);
    return {lw, fmaxf(lw, rn_sub(v, eta)), rn_add(v, eta)};
  }
};

}  // namespace search
}  // namespace nvfp4
