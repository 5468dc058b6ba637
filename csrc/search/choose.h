// Whole-block drivers of the scale search, shared by the kernels (nvfp4/search.cuh,
// mx/search.cuh) and tests/cpp: the scale byte chosen for one NVFP4 block (nvfp4_choose,
// "mse" or "hessian") or one MX block (mx_choose, "mse"), and the NVFP4 codes for it.
// __host__ __device__, torch-free.
#pragma once

#include "core/e2m1.h"
#include "core/e4m3.h"
#include "core/e8m0.h"
#include "nvfp4/block.h"
#include "search/hessian_bounds.h"
#include "search/objectives.h"
#include "search/prune.h"

namespace nvfp4 {
namespace search {

constexpr int kThreads = 128;  // CTA size of the search kernels (nvfp4/, mx/search.cuh)

// The exact "hessian" search without bounds (a group with w == 0): every byte gets the
// approximate quadratic form, only near-minimal ones the exact one. Exact, just slower.
template <class Stats>
NVFP4_HD int hessian_unbounded(const HessObj& o, int c0, float naive_obj, Stats& st) {
  Incumbent inc(c0, naive_obj);
  for (int c = 1; c <= kMaxByte; ++c) {
    st.approx2();
    float e[16];
    errors_approx16(o.x, o.tab_osc[c], o.tab_s[c], e);
    const Bound b = o.bracket(e, -kInf);
    if (!(b.lo > inc.ub)) inc.keep(o, c, b.lo, b.hi, st);
  }
  inc.exact_phase(o, st);
  return inc.best_c;
}

// ---- whole-block drivers (shared by the kernels and tests/cpp) -----------------------------
// NVFP4 block: x (16 values, fp32), the global scale and its RN reciprocal, the candidates'
// multipliers tab_osc / tab_s (bytes 0..126). Returns the chosen scale byte (0x7F for a
// non-finite block). hess: nullptr for "mse".
// ring: 8 floats of per-thread scratch; ei: 16 more ("hessian" only).
template <class Stats>
NVFP4_HD uint32_t nvfp4_choose(const float (&x)[16], float gs, float inv_gs, const float* tab_osc,
                             const float* tab_s, const HessGroup* hess, Ring ring, Column ei,
                             Stats& st) {
  uint32_t amax_bits = 0;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const uint32_t b = f32_bits(x[i]) & 0x7FFFFFFFu;
    amax_bits = amax_bits > b ? amax_bits : b;
  }
  if (amax_bits >= 0x7F800000u) return kNanScale;  // NaN / inf in the block
  const float vmax = f32_from_bits(amax_bits);
  const uint32_t c0 = nvfp4_scale_byte(vmax, gs);
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
    if ((f32_bits(x[i]) & 0x7FFFFFFFu) == amax_bits) wmax = wi;
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
NVFP4_HD void nvfp4_encode16(const float (&x)[16], uint32_t byte, float osc, uint32_t& lo,
                           uint32_t& hi) {
  lo = hi = 0;
  if ((byte & 0x7Fu) == 0x7Fu) return;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const float y = rn_mul(x[i], osc);
    const uint32_t code =
        e2m1_code_of(e2m1_mag_value<true>(fabsf(y))) | ((f32_bits(y != y ? x[i] : y) >> 28) & 8u);
    if (i < 8) {
      lo |= code << (4 * i);
    } else {
      hi |= code << (4 * (i - 8));
    }
  }
}

// ---- MX (E8M0 scales, 32 elements) [P8] ---------------------------------------------------------
// Exact MX "mse" objective (reference._mx_objective_cols); stops early (returning a value
// > thr) once a partial sum exceeds thr: partial sums of non-negative terms never decrease.
template <bool kE2M1>
NVFP4_HD float mx_sse(const float (&x)[32], uint32_t b, float thr) {
  const float inv = e8m0_inverse(b), pw = e8m0_decode(b);
  float sum = 0.0f;
#pragma unroll
  for (int g = 0; g < 4; ++g) {
#pragma unroll
    for (int i = 8 * g; i < 8 * g + 8; ++i) {
      const float a = fabsf(x[i]);
      const float y = rn_mul(a, inv);
      const float q = kE2M1 ? e2m1_mag_value<false>(y) : e4m3_mag<false>(y);
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
NVFP4_HD float mx_max_term(float vmax, uint32_t b, bool& mono) {
  const float emax = kE2M1 ? 6.0f : 448.0f;
  const float y = rn_mul(vmax, e8m0_inverse(b));
  const float q = kE2M1 ? e2m1_mag_value<false>(y) : e4m3_mag<false>(y);
  const float e = rn_sub(vmax, rn_mul(q, e8m0_decode(b)));
  mono = q == emax && e >= 0.0f;
  return rn_mul(e, e);
}

// b dominates every b + k: RN(vmax * 2^(127-b)) <= 7 (E2M1) / 464 (E4M3) [P8].
template <bool kE2M1>
NVFP4_HD bool mx_dom(float vmax, uint32_t b) {
  return rn_mul(vmax, e8m0_inverse(b)) <= (kE2M1 ? 7.0f : 464.0f);
}

// Chosen E8M0 byte of an MX block whose naive byte is b0 (255: non-finite, kept).
template <bool kE2M1, class Stats>
NVFP4_HD uint32_t mx_choose(const float (&x)[32], uint32_t b0, Stats& st) {
  if (b0 == 255u) return b0;
  uint32_t amax_bits = 0;
#pragma unroll
  for (int i = 0; i < 32; ++i) {
    const uint32_t v = f32_bits(x[i]) & 0x7FFFFFFFu;
    amax_bits = amax_bits > v ? amax_bits : v;
  }
  if (amax_bits == 0u) return b0;  // all objectives 0: the naive wins
  const float vmax = f32_from_bits(amax_bits);
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

}  // namespace search
}  // namespace nvfp4
