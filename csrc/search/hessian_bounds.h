// Per column group of a Hessian: the fp64 bounds of the "hessian" search (the diagonal
// weights of [P6] and the shifted Cholesky factor of [P7], docs/search.md).
// __host__ __device__, torch-free.
#pragma once

#include <cmath>

#include "search/objectives.h"

namespace nvfp4 {
namespace search {

// ---- Hessian group bounds [P6] ------------------------------------------------------------------
// tau: a lower bound of lambda_min of C = D^-1/2 S D^-1/2 (S the symmetric part of H,
// D = diag(H)), from ||C^-1|| <= min(||C^-1||_F, ||C^-1||_1) with C^-1 from a Cholesky
// factorisation in fp64; then H >= tau D, and with kappa covering the rounding of the
// reference's quadratic form, obj >= sum_i (tau H_ii - kappa) e_i^2. Writes w[16] (fp32,
// rounded down; all zero when any H_ii <= 0, H is not finite, C is not numerically positive
// definite (lambda_min < 1e-8) or a weight would not be positive) and returns rho = ||H||_F
// rounded up to fp32.
// v rounded to fp32 toward +inf (kUp) or -inf: the device intrinsic, or on the host the
// nearest fp32 stepped once away from v when it lies on the wrong side.
template <bool kUp>
NVFP4_HD float f32_directed(double v) {
#ifdef __CUDA_ARCH__
  return kUp ? __double2float_ru(v) : __double2float_rd(v);
#else
  float f = static_cast<float>(v);
  const double fd = static_cast<double>(f);
  if (kUp ? fd < v : fd > v) f = std::nextafter(f, kUp ? kInf : -kInf);
  return f;
#endif
}
NVFP4_HD float f32_down(double v) { return f32_directed<false>(v); }
NVFP4_HD float f32_up(double v) { return f32_directed<true>(v); }

// In-place Cholesky a = L L^T (lower triangle of a, fp64); false at a pivot <= floor.
NVFP4_HD bool cholesky16(double (&a)[16][16], double floor) {
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
NVFP4_HD HessScalars hessian_group_bounds(const float* __restrict__ H, float* __restrict__ w,
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

}  // namespace search
}  // namespace nvfp4
