// The E2M1 rounding of csrc/core/e2m1.h against the formulation it replaced (the magic
// constant C = 2^(max(e, 0) + 22), code = bits(RN(a + C)) - bits(C) + 2 max(e, 0)), kept
// here verbatim: the code (both kNanSafe variants), its bits << 22 form, the value and the
// signed code must be the same for every input. Run by tests/cpp/test_host.py.
//   CI: every fp32 in [0, 8) (every clamped magnitude a = min(|y|, 6) the rounding sees, and
//       the saturation above 6), every 7th fp32 of (-8, -0], every 61st of all 2^32 (every
//       exponent and sign), and every input with exponent 255 (inf, NaN) or 0 (subnormals).
//   `test_e2m1_forms --full`: all 2^32 inputs (about a minute on 2 cores).
//   The nibble placements (e2m1_shl22_at_nibble, e2m1_encode_nearest_at_nibble) against
//   code << 4i, every nibble, every 4099th fp32 (both as y and as x with osc 1 and 2^-3).
// Signaling NaNs are left out for the kNanSafe = false variant (where y is never NaN): the
// host's fminf(sNaN, 6) is NaN (IEEE 754-2008 minNum), CUDA's is 6 for every NaN, and
// a = 6 is checked with the rest of [0, 8). The host build rounds each fp32 operation once
// (-ffp-contract=off; rn_fma is std::fma), the same operations the device's _rn intrinsics do.
#include <chrono>
#include <cstring>
#include <thread>

#include "core/bits.h"
#include "core/e2m1.h"
#include "ref.h"
#include "train/rng.h"

namespace old_form {
using namespace nvfp4;

template <bool kNanSafe>
inline float e2m1_clamp_mag(float y) {
  return fminf(kNanSafe ? fmaxf(fabsf(y), 0.0f) : fabsf(y), 6.0f);
}
inline uint32_t e2m1_magic_bits(float a) {
  const uint32_t e = (f32_bits(a) & 0x7F800000u) + (22u << 23);
  const uint32_t lo = 0x3F800000u + (22u << 23);
  return e > lo ? e : lo;
}
template <bool kNanSafe>
inline uint32_t e2m1_mag_code(float y) {
  const float a = e2m1_clamp_mag<kNanSafe>(y);
  const uint32_t cb = e2m1_magic_bits(a);
  const uint32_t sb = f32_bits(rn_add(a, f32_from_bits(cb)));
  return sb - cb + ((cb >> 22) - 298u);
}
template <bool kNanSafe>
inline float e2m1_mag_value(float y) {
  const float a = e2m1_clamp_mag<kNanSafe>(y);
  const float c = f32_from_bits(e2m1_magic_bits(a));
  return rn_sub(rn_add(a, c), c);
}
inline uint32_t e2m1_encode(float y) {
  return e2m1_mag_code<false>(y) | ((f32_bits(y) >> 28) & 8u);
}
}  // namespace old_form

// Number of differences for input bits u (0 or more).
inline int diffs(uint32_t u) {
  const float y = nvfp4::f32_from_bits(u);
  int bad = 0;
  {  // NaN-safe: every input
    const uint32_t c = old_form::e2m1_mag_code<true>(y);
    const uint32_t b = nvfp4::e2m1_mag_code_shl22<true>(y);
    bad += b != (c << 22);
    bad += nvfp4::e2m1_mag_code<true>(y) != c;
    bad += nvfp4::f32_bits(nvfp4::e2m1_mag_value<true>(y)) !=
           nvfp4::f32_bits(old_form::e2m1_mag_value<true>(y));
  }
  const bool snan = (u & 0x7FC00000u) == 0x7F800000u && (u & 0x003FFFFFu) != 0;
  if (!snan) {
    const uint32_t c = old_form::e2m1_mag_code<false>(y);
    bad += nvfp4::e2m1_mag_code_shl22<false>(y) != (c << 22);
    bad += nvfp4::e2m1_mag_code<false>(y) != c;
    bad += nvfp4::f32_bits(nvfp4::e2m1_mag_value<false>(y)) !=
           nvfp4::f32_bits(old_form::e2m1_mag_value<false>(y));
    bad += nvfp4::e2m1_encode(y) != old_form::e2m1_encode(y);
  }
  return bad;
}

// Inputs lo + i * step for i in [0, n), on 2 threads; the number of inputs that differ.
long long sweep(uint32_t lo, uint64_t n, uint32_t step) {
  long long f[2] = {0, 0};
  auto run = [&](int t) {
    long long b = 0;
    for (uint64_t i = t; i < n; i += 2) b += diffs(static_cast<uint32_t>(lo + i * step)) != 0;
    f[t] = b;
  };
  std::thread th(run, 1);
  run(0);
  th.join();
  return f[0] + f[1];
}

int main(int argc, char** argv) {
  const bool full = argc > 1 && std::strcmp(argv[1], "--full") == 0;
  ref::Checker c{full ? "e2m1 forms (all 2^32 inputs)" : "e2m1 forms"};
  const auto t0 = std::chrono::steady_clock::now();
  long long bad = 0;
  if (full) {
    bad += sweep(0, uint64_t(1) << 32, 1);
    c.checks += 1ll << 32;
  } else {
    constexpr uint32_t k8 = 0x41000000u;  // 8.0
    bad += sweep(0, k8, 1);  // [0, 8)
    c.checks += k8;
    bad += sweep(0x80000000u, k8 / 7, 7);  // (-8, -0]
    c.checks += k8 / 7;
    bad += sweep(0, (uint64_t(1) << 32) / 61, 61);  // every exponent and sign
    c.checks += (1ll << 32) / 61;
    for (uint32_t s = 0; s < 2; ++s) {
      bad += sweep((s << 31) | 0x7F800000u, uint64_t(1) << 23, 1);  // inf, NaN
      bad += sweep(s << 31, uint64_t(1) << 23, 1);                  // 0, subnormals
      c.checks += 2ll << 23;
    }
  }
  if (bad) c.fail("%lld inputs differ from the previous formulation", bad);
  long long nib = 0;
  for (uint64_t u = 0; u < (uint64_t(1) << 32); u += 4099) {
    const float y = nvfp4::f32_from_bits(static_cast<uint32_t>(u));
    for (int i = 0; i < 8; ++i) {
      for (float osc : {1.0f, 0.125f}) {
        ++c.checks;
        const bool ok =
            nvfp4::e2m1_shl22_at_nibble(nvfp4::e2m1_mag_code_shl22<true>(y), i) ==
                nvfp4::e2m1_mag_code<true>(y) << (4 * i) &&
            nvfp4::train::e2m1_encode_nearest_at_nibble(y, osc, i) ==
                nvfp4::train::e2m1_encode_nearest(y, osc) << (4 * i);
        nib += !ok;
      }
    }
  }
  if (nib) c.fail("%lld nibble placements differ", nib);
  bad += nib;
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("(%.1f s) ", s);
  return c.done();
}
