// The pruned scale search of csrc/search (the very code the CUDA kernels run) against an
// exhaustive search over every candidate, written here from docs/spec.md sec. 5 with the
// independent formulas of ref.h: NVFP4 "mse" and "hessian" (126 E4M3 bytes), MX "mse"
// (255 E8M0 bytes; E2M1 and E4M3 elements, rceil and floor). Seeded samples: several
// distributions, global scales over 13 binades around the natural one plus the values
// outside the proven ranges (exhaustive fallback), five Hessian families. Also the NVFP4
// codes written for the chosen byte, and that the pruning prunes (work per block).
// Run by tests/cpp/test_host.py.
#include <thread>
#include <vector>

#include "core/bits.h"
#include "search/choose.h"
#include "ref.h"

using ref::Checker;
namespace s = nvfp4::search;

struct Stats {
  long long approx_n = 0, approx2_n = 0, exact_n = 0, fallback_n = 0;
  void approx() { ++approx_n; }
  void approx2() { ++approx2_n; }
  void exact() { ++exact_n; }
  void fallback() { ++fallback_n; }
};

// ---- data ------------------------------------------------------------------------------------
constexpr int kDists = 12;
// One block of n values from distribution `dist` (the scale `mag` multiplies them).
void make_block(ref::Rng& r, int dist, double mag, float* x, int n) {
  const int outlier = static_cast<int>(r.next() % n);
  for (int i = 0; i < n; ++i) {
    double v;
    switch (dist) {
      case 0: v = r.normal(); break;
      case 1: v = (r.next() & 1 ? 1 : -1) * -std::log(r.uniform() + 1e-300); break;  // Laplace
      case 2: v = std::tan(3.141592653589793 * (r.uniform() - 0.5)); break;            // Cauchy
      case 3: v = 2 * r.uniform() - 1; break;
      case 4: v = r.uniform() < 0.8 ? 0.0 : r.normal(); break;                          // sparse
      case 5: v = i == outlier ? 40 * r.normal() : r.normal(); break;
      case 6: v = std::round(3 * r.normal()); break;
      case 7: v = std::ldexp(r.next() & 1 ? 1.0 : -1.0, static_cast<int>(r.next() % 9) - 4); break;
      case 8: v = 1.5; break;                                                           // constant
      case 9: v = r.normal() * 1e-30; break;
      case 10: v = r.normal() * 1e30; break;
      default: v = i == 0 ? -0.0 : 0.0; break;
    }
    x[i] = static_cast<float>(v * mag);
  }
}

// A global scale: the natural one for amax times 2^k (k in -6..6), sometimes a value outside
// the fast path's ranges.
float make_gs(ref::Rng& r, float amax) {
  static const float special[] = {0.0f, -1.0f, INFINITY, NAN, 0x1p-101f, 0x1p101f, 1e-33f, 1e33f};
  if (r.next() % 16 == 0) return special[r.next() % 8];
  const float nat = amax > 0 && std::isfinite(amax) ? ref::div(2688.0f, amax) : 1.0f;
  return std::ldexp(nat, static_cast<int>(r.next() % 13) - 6);
}

// ---- the exhaustive reference -----------------------------------------------------------------
struct RefMult {
  float osc, s;
};
RefMult ref_mult(uint32_t c, float gs) {
  const float inv = ref::div(1.0f, gs), sf = ref::e4m3_value(c), d = ref::mul(sf, inv);
  return {(sf == 0.0f || d == 0.0f) ? 0.0f : ref::div(1.0f, d), ref::div(sf, gs)};
}
float ref_e2m1_mag(float y) { return ref::e2m1_value(ref::e2m1_mag_code(y)); }

float ref_sse16(const float* x, RefMult m) {
  float sum = 0.0f;
  for (int i = 0; i < 16; ++i) {
    const float a = std::fabs(x[i]);
    const float e = ref::sub(a, ref::mul(ref_e2m1_mag(ref::mul(a, std::fabs(m.osc))), std::fabs(m.s)));
    sum = i == 0 ? ref::mul(e, e) : ref::add(sum, ref::mul(e, e));
  }
  return sum;
}

float ref_hess16(const float* x, RefMult m, const float* H) {
  float e[16];
  for (int i = 0; i < 16; ++i) {
    const float y = ref::mul(x[i], m.osc);
    const float q = ref_e2m1_mag(y);
    const float v = std::signbit(y != y ? x[i] : y) ? -q : q;
    e[i] = ref::sub(x[i], ref::mul(v, m.s));
  }
  float obj = 0.0f;
  for (int i = 0; i < 16; ++i) {
    float t = ref::mul(H[16 * i], e[0]);
    for (int j = 1; j < 16; ++j) t = ref::add(t, ref::mul(H[16 * i + j], e[j]));
    obj = i == 0 ? ref::mul(e[i], t) : ref::add(obj, ref::mul(e[i], t));
  }
  return obj;
}

// docs/spec.md sec. 5: the naive byte, then every candidate; a strictly smaller objective replaces.
uint32_t ref_nvfp4_choose(const float* x, float gs, const float* H) {
  float vmax = 0.0f;
  for (int i = 0; i < 16; ++i) {
    if (!std::isfinite(x[i])) return 0x7F;
    vmax = std::max(vmax, std::fabs(x[i]));
  }
  const uint32_t c0 = ref::e4m3_encode(ref::mul(gs, ref::mul(vmax, ref::div(1.0f, 6.0f))));
  if ((c0 & 0x7F) == 0x7F) return 0x7F;
  auto obj = [&](uint32_t c) {
    return H ? ref_hess16(x, ref_mult(c, gs), H) : ref_sse16(x, ref_mult(c, gs));
  };
  float best = obj(c0);
  uint32_t best_c = c0;
  for (uint32_t c = 1; c <= 0x7E; ++c) {
    const float v = obj(c);
    if (v < best) {
      best = v;
      best_c = c;
    }
  }
  return best_c;
}

template <bool kE2M1>
float ref_mx_sse(const float* x, uint32_t b) {
  const float inv = std::ldexp(1.0f, 127 - static_cast<int>(b));
  const float pw = std::ldexp(1.0f, static_cast<int>(b) - 127);
  float sum = 0.0f;
  for (int i = 0; i < 32; ++i) {
    const float a = std::fabs(x[i]), y = ref::mul(a, inv);
    const float q = kE2M1 ? ref_e2m1_mag(y) : ref::e4m3_round_mag(y);
    const float e = ref::sub(a, ref::mul(q, pw));
    sum = i == 0 ? ref::mul(e, e) : ref::add(sum, ref::mul(e, e));
  }
  return sum;
}

template <bool kE2M1>
uint32_t ref_mx_choose(const float* x, bool floor_mode) {
  float amax = 0.0f;
  for (int i = 0; i < 32; ++i) {
    if (!std::isfinite(x[i])) return 255;
    amax = std::max(amax, std::fabs(x[i]));
  }
  const uint32_t b0 = floor_mode ? ref::e8m0_floor(amax, kE2M1 ? 2 : 8)
                                 : ref::e8m0_rceil(amax, kE2M1 ? 6.0f : 448.0f);
  float best = ref_mx_sse<kE2M1>(x, b0);
  uint32_t best_b = b0;
  for (uint32_t b = 0; b <= 254; ++b) {
    const float v = ref_mx_sse<kE2M1>(x, b);
    if (v < best) {
      best = v;
      best_b = b;
    }
  }
  return best_b;
}

// ---- the checks ---------------------------------------------------------------------------------
// The search under test for one NVFP4 block (the kernels' call, on the host).
uint32_t choose(const float (&x)[16], float gs, const s::HessGroup* hg, Stats& st) {
  const float inv = nvfp4::rn_rcp(gs);
  float tab_osc[s::kMaxByte + 1], tab_s[s::kMaxByte + 1], scratch[24];
  for (int c = 0; c <= s::kMaxByte; ++c) {
    const s::Mult m = s::nvfp4_mult(static_cast<uint32_t>(c), gs, inv);
    tab_osc[c] = m.osc;
    tab_s[c] = m.s;
  }
  const s::Ring ring{scratch, 1};
  const s::Column ei{scratch + 8, 1};
  return s::nvfp4_choose(x, gs, inv, tab_osc, tab_s, hg, ring, ei, st);
}

// The codes written for the chosen byte (search/choose.h nvfp4_encode16) against docs/spec.md sec. 2.
void check_codes(Checker& c, const float (&x)[16], uint32_t byte, float gs) {
  const float osc = ref_mult(byte, gs).osc;
  uint32_t lo, hi;
  s::nvfp4_encode16(x, byte, s::nvfp4_mult(byte, gs, nvfp4::rn_rcp(gs)).osc, lo, hi);
  for (int i = 0; i < 16; ++i) {
    uint32_t want = 0;
    if ((byte & 0x7F) != 0x7F) {
      const float y = ref::mul(x[i], osc);
      want = ref::e2m1_mag_code(y) | (std::signbit(y != y ? x[i] : y) ? 8u : 0u);
    }
    const uint32_t got = ((i < 8 ? lo : hi) >> (4 * (i % 8))) & 15u;
    ++c.checks;
    if (got != want) c.fail("code %d of a block with byte 0x%02x: %u, want %u", i, byte, got, want);
  }
}

int test_nvfp4_mse() {
  Checker c{"nvfp4 mse search"};
  ref::Rng r(2024);
  Stats gauss;  // Gaussian blocks with the natural global scale: the pruning's work
  long long gauss_blocks = 0;
  for (int n = 0; n < 24000; ++n) {
    float x[16];
    const int dist = n % kDists;
    make_block(r, dist, std::ldexp(1.0, static_cast<int>(r.next() % 21) - 10), x, 16);
    if (n % 97 == 0) x[r.next() % 16] = r.next() & 1 ? NAN : -INFINITY;
    float amax = 0.0f;
    for (float v : x) amax = std::max(amax, std::fabs(v));
    const bool natural = dist == 0 && n % 5 == 0;
    const float gs = natural ? ref::div(2688.0f, amax) : make_gs(r, amax);
    Stats st;
    const uint32_t got = choose(x, gs, nullptr, st);
    const uint32_t want = ref_nvfp4_choose(x, gs, nullptr);
    ++c.checks;
    if (got != want) c.fail("block %d (dist %d, gs %a): byte 0x%02x, want 0x%02x", n, dist, gs, got, want);
    check_codes(c, x, got, gs);
    if (natural) {
      ++gauss_blocks;
      gauss.approx_n += st.approx_n;
      gauss.exact_n += st.exact_n;
    }
  }
  const double passes = double(gauss.approx_n) / gauss_blocks;
  const double exacts = double(gauss.exact_n) / gauss_blocks;
  std::printf("nvfp4 mse, Gaussian, natural gs: %.2f approximate passes, %.2f exact evaluations per block (of 126)\n",
              passes, exacts);
  ++c.checks;
  if (!(passes < 8 && exacts < 2)) c.fail("the pruning examined too much: %.2f passes, %.2f exact", passes, exacts);
  return c.done();
}

// A 16x16 Hessian of family f (0: correlated activations, 1: badly conditioned, 2: rank 8,
// 3: not symmetric and indefinite, 4: diagonal).
void make_hessian(ref::Rng& r, int f, float* H) {
  double A[16][16], X[64][16];
  for (auto& row : A)
    for (double& v : row) v = r.normal();
  for (int n = 0; n < 64; ++n) {
    double z[16];
    for (double& v : z) v = r.normal();
    for (int j = 0; j < 16; ++j) {
      double acc = 0;
      const int rank = f == 2 ? 8 : 16;
      for (int k = 0; k < rank; ++k) acc += z[k] * A[k][j];
      X[n][j] = f == 1 ? acc * std::ldexp(1.0, j - 8) : acc + (f == 0 ? 0.0 : 0.0);
    }
  }
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 16; ++j) {
      double acc = 0;
      for (int n = 0; n < 64; ++n) acc += X[n][i] * X[n][j];
      if (f == 3) acc += (i < j ? 5.0 : -5.0) * std::fabs(A[i][j]) + (i == j && i % 3 == 0 ? -50.0 : 0.0);
      if (f == 4) acc = i == j ? 1.0 + r.uniform() * 100 : 0.0;
      H[16 * i + j] = static_cast<float>(acc);
    }
  }
}

int test_nvfp4_hessian() {
  Checker c{"nvfp4 hessian search"};
  ref::Rng r(99);
  Stats all;
  for (int g = 0; g < 128; ++g) {
    float H[256], w[16], U[256];
    double work[528];
    make_hessian(r, g % 5, H);
    const s::HessGroup hg{H, w, U, s::hessian_group_bounds(H, w, U, work)};
    for (int n = 0; n < 64; ++n) {
      float x[16];
      const int dist = (g + n) % kDists;
      make_block(r, dist, std::ldexp(1.0, static_cast<int>(r.next() % 9) - 4), x, 16);
      float amax = 0.0f;
      for (float v : x) amax = std::max(amax, std::fabs(v));
      const float gs = make_gs(r, amax);
      Stats st;
      const uint32_t got = choose(x, gs, &hg, st);
      const uint32_t want = ref_nvfp4_choose(x, gs, H);
      all.approx_n += st.approx_n;
      all.fallback_n += st.fallback_n;
      ++c.checks;
      if (got != want)
        c.fail("group %d (family %d) block %d (dist %d, gs %a): byte 0x%02x, want 0x%02x", g, g % 5, n,
               dist, gs, got, want);
    }
  }
  std::printf("nvfp4 hessian: %.2f approximate passes per block, %lld of %lld blocks exhaustive\n",
              double(all.approx_n) / c.checks, all.fallback_n, c.checks);
  return c.done();
}

template <bool kE2M1>
int test_mx(const char* name) {
  Checker c{name};
  ref::Rng r(kE2M1 ? 5 : 6);
  for (int n = 0; n < 4000; ++n) {
    float x[32];
    make_block(r, n % kDists, std::ldexp(1.0, static_cast<int>(r.next() % 61) - 30), x, 32);
    if (n % 89 == 0) x[r.next() % 32] = INFINITY;
    for (bool floor_mode : {false, true}) {
      float amax = 0.0f;
      bool finite = true;
      for (float v : x) {
        finite = finite && std::isfinite(v);
        amax = std::max(amax, std::fabs(v));
      }
      const uint32_t ab = nvfp4::abs_bits(amax);
      const uint32_t b0 = !finite ? 255u
                          : floor_mode ? nvfp4::e8m0_scale<nvfp4::MxRounding::kFloor>(ab, kE2M1 ? 6.0f : 448.0f, kE2M1 ? 2 : 8)
                                       : nvfp4::e8m0_scale<nvfp4::MxRounding::kRceil>(ab, kE2M1 ? 6.0f : 448.0f, kE2M1 ? 2 : 8);
      Stats st;
      const uint32_t got = s::mx_choose<kE2M1>(x, b0, st);
      const uint32_t want = ref_mx_choose<kE2M1>(x, floor_mode);
      ++c.checks;
      if (got != want) c.fail("block %d (%s): byte %u, want %u", n, floor_mode ? "floor" : "rceil", got, want);
    }
  }
  return c.done();
}

int main() {
  int rc[4] = {0, 0, 0, 0};
  std::thread t([&] {
    rc[1] = test_nvfp4_hessian();
    rc[3] = test_mx<false>("mxfp8 mse search");
  });
  rc[0] = test_nvfp4_mse();
  rc[2] = test_mx<true>("mxfp4 mse search");
  t.join();
  return rc[0] | rc[1] | rc[2] | rc[3];
}
