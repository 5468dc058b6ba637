// The bounded scale search of docs/spec.md sec. 5 (scale_method "mse" / "hessian" for
// NVFP4, "mse" for MXFP8 / MXFP4), bit-exact with the reference's exhaustive search. This
// file: the format-independent pruned scan over candidate bytes (nvfp4_pruned), driven by an
// objective object (search/objectives.h) that supplies exact values and proven bounds, and
// the exhaustive scan it must equal.
//
// One thread owns one block (16 or 32 elements in registers) and searches its scale alone.
// The per-block search (search/*.h) is __host__ __device__ and torch-free, so the very code
// the kernels run is also compiled with g++ and checked against an exhaustive search by
// tests/cpp/test_search.cpp.
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
// factor (or an approximate quadratic form) with a proven error [P7] before the exact one.
// MX scales are powers of two, so the dominance above is exact [P8] and the search is a
// handful of exact evaluations.
// Anything outside the proven ranges (a global scale below 2^-100 or above 2^100, negative
// or non-finite; a block max outside [2^-60, 2^60]; a non-finite Hessian) falls back to
// the exhaustive search with the reference's exact arithmetic, NaN semantics included.
#pragma once

#include "core/bits.h"

namespace nvfp4 {
namespace search {

constexpr float kInf = __builtin_huge_valf();
constexpr int kMaxByte = 0x7E;  // largest NVFP4 candidate (448)
constexpr int kRecords = 4;     // exact-phase slots; a byte finding them all live is
                                // evaluated exactly at once


// A per-thread array indexed at run time, kept out of registers: on the device a column of a
// shared-memory array (element i of thread t at p[i * stride], bank-conflict free); used for
// the dominance ring (8 floats) and the error vector of the quadratic forms (16 floats).
struct Column {
  float* p;
  int stride;
  NVFP4_HD float& operator[](int i) const { return p[i * stride]; }
};
using Ring = Column;  // ring[c & 7]: a lower bound valid for every byte c + 8k [P4]


// Counters of the work a search did (the kernels pass a NoStats; tests/cpp counts).
struct NoStats {
  NVFP4_HD void approx() {}
  NVFP4_HD void approx2() {}
  NVFP4_HD void exact() {}
  NVFP4_HD void fallback() {}
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
NVFP4_HD int nvfp4_exhaustive(const Obj& o, int c0, float naive_obj, Stats& st) {
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

// The state of a search over candidate bytes: ub, the least proven upper bound of the minimum
// objective; the best exact objective so far with the reference's tie rule (the naive byte
// first, then the smallest byte); and kRecords slots of bytes kept for the exact phase with
// their lower bounds (a slot whose bound has since exceeded ub is free: that byte can no
// longer be the minimum).
struct Incumbent {
  float ub, best;
  int best_c;
  bool best_naive;
  int rec_c[kRecords];
  float rec_l[kRecords];

  NVFP4_HD Incumbent(int c0, float naive_obj)
      : ub(naive_obj), best(naive_obj), best_c(c0), best_naive(true) {
#pragma unroll
    for (int k = 0; k < kRecords; ++k) {
      rec_c[k] = 0;
      rec_l[k] = kInf;
    }
  }

  // The exact objective v of byte c.
  NVFP4_HD void take(int c, float v) {
    if (v < best || (v == best && !best_naive && c < best_c)) {
      best = v;
      best_c = c;
      best_naive = false;
    }
    ub = fminf(ub, v);
  }

  // A byte not provably worse than ub, its objective in [lo, hi]: keep it for the exact
  // phase; with every slot live (near-ties), evaluate it exactly now.
  template <class Obj, class Stats>
  NVFP4_HD void keep(const Obj& o, int c, float lo, float hi, Stats& st) {
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

  // Exact phase: evaluate the kept bytes whose bound is still within ub (each exact value
  // can lower ub and retire others). One evaluation per iteration, the first live slot of
  // each thread, so a warp runs as many evaluations as its busiest thread needs.
  template <class Obj, class Stats>
  NVFP4_HD void exact_phase(const Obj& o, Stats& st) {
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
};

template <class Obj, class Stats>
NVFP4_HD int nvfp4_pruned(const Obj& o, int c0, float naive_obj, Ring ring, Stats& st) {
  Incumbent inc(c0, naive_obj);
  const float& ub = inc.ub;  // least proven upper bound of the minimum objective

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
        inc.keep(o, c, b.lo, b.hi, st);
      } else if (o.sat_lb(c) > ub) {
        down = false;
        c = c0;
      }
    } else {
      const float lnew = dc ? fmaxf(lp, b.ldom) : lp;
      if (!(b.lo > ub)) inc.keep(o, c, b.lo, b.hi, st);
      ring[c & 7] = lnew;
      run = lnew > ub ? run + 1 : 0;
    }
  }

  inc.exact_phase(o, st);
  return inc.best_c;
}

}  // namespace search
}  // namespace nvfp4
