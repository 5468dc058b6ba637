// The format-independent part of the bounded scale search (SPEC sec. 5): the pruned scan
// over candidate bytes (nvfp4_pruned) and the exhaustive one it must equal, driven by an
// objective object (search/objectives.h) that supplies exact values and proven bounds.
// __host__ __device__ and torch-free: tests/cpp runs this very code against the exhaustive
// search. The proofs of the bounds ([P1]..[P9]) are in docs/search.md.
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

// Exact phase: evaluate the kept bytes whose bound is still within ub (each exact value can
// lower ub and retire others). One evaluation per iteration, the first live slot of each
// thread, so a warp runs as many evaluations as its busiest thread needs.
template <class Obj, class Take, class Stats>
NVFP4_HD void exact_phase(const Obj& o, const int (&rec_c)[kRecords], float (&rec_l)[kRecords],
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
NVFP4_HD int nvfp4_pruned(const Obj& o, int c0, float naive_obj, Ring ring, Stats& st) {
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

}  // namespace search
}  // namespace nvfp4
