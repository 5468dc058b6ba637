// Host checks of csrc/core and csrc/nvfp4/block.h (the primitives every kernel uses)
// against the independent formulas of ref.h. Run by tests/cpp/test_host.py.
//   E2M1 rounding: every fp32 in the binades where the code changes ([2^-3, 2^4), both
//         signs), every 251st of all 2^32 elsewhere (both projections, NaN-safe and not, sign).
//   E4M3: decode of all 256 bytes; rounding and encode of every fp32 whose low 11 bits are
//         one of 6 patterns (all 2^21 combinations of the bits that decide the rounding).
//   E8M0: rceil and floor for every finite amax whose low 10 bits are one of 3 patterns, both
//         element types; inverse / decode of all bytes.
//   NVFP4: multipliers of all 256 scale bytes for 4096 global scales; scale byte for 4 M
//         sampled (vmax, gs); global scale from amax for every 251st fp32 and every input
//         near the overflow threshold.
//   FastDiv, swizzle offsets.
#include <algorithm>
#include <thread>
#include <vector>

#include "core/bits.h"
#include "core/e2m1.h"
#include "core/e4m3.h"
#include "core/e8m0.h"
#include "core/swizzle.h"
#include "nvfp4/block.h"
#include "ref.h"

using ref::Checker;

// Runs f(u) for u in [lo, hi) on 2 threads; f returns the number of failures.
template <typename F>
long long parallel_range(uint64_t lo, uint64_t hi, F f) {
  long long fails[2] = {0, 0};
  const uint64_t mid = lo + (hi - lo) / 2;
  std::thread t([&] { fails[1] = f(mid, hi); });
  fails[0] = f(lo, mid);
  t.join();
  return fails[0] + fails[1];
}

// One E2M1 check of input bits u: the magnitude code and value (NaN-safe, and the plain
// variant where y is not NaN) and the signed code, against the comparison chain. Signaling
// NaNs are left out: the host's fmaxf(sNaN, 0) is NaN (IEEE 754-2008 maxNum), CUDA's fmaxf
// returns 0 for every NaN, and no variant without the NaN-safe max ever sees a NaN.
bool e2m1_ok(uint32_t u) {
  const float y = ref::from_bits(u);
  if ((u & 0x7FC00000u) == 0x7F800000u && (u & 0x003FFFFFu) != 0) return true;  // sNaN
  const uint32_t code = ref::e2m1_mag_code(y);
  const uint32_t vbits = ref::bits(ref::e2m1_value(code));
  bool ok = nvfp4::e2m1_mag_code<true>(y) == code &&
            nvfp4::f32_bits(nvfp4::e2m1_mag_value<true>(y)) == vbits;
  if (y == y) {
    ok = ok && nvfp4::e2m1_mag_code<false>(y) == code &&
         nvfp4::f32_bits(nvfp4::e2m1_mag_value<false>(y)) == vbits &&
         nvfp4::e2m1_encode(y) == (code | ((u >> 28) & 8u));
  }
  return ok;
}

int test_e2m1() {
  Checker c{"e2m1"};
  // Every fp32 of magnitude in [2^-3, 2^4), both signs (the binades where the code changes),
  // and every 251st of all 2^32 (the constant 0 below, 6 above, NaN, inf).
  constexpr uint32_t kLo = 0x3E000000u, kN = 0x41800000u - kLo;  // [2^-3, 2^4)
  const long long bad = parallel_range(0, uint64_t(2) * kN, [](uint64_t lo, uint64_t hi) {
    long long f = 0;
    for (uint64_t i = lo; i < hi; ++i) {
      const uint32_t sign = i >= kN ? 0x80000000u : 0u;
      f += !e2m1_ok(sign | (kLo + static_cast<uint32_t>(i % kN)));
    }
    return f;
  }) + parallel_range(0, (uint64_t(1) << 32) / 251, [](uint64_t lo, uint64_t hi) {
    long long f = 0;
    for (uint64_t i = lo; i < hi; ++i) f += !e2m1_ok(static_cast<uint32_t>(i * 251));
    return f;
  });
  c.checks = 2ll * kN + (1ll << 32) / 251;
  if (bad) c.fail("%lld inputs differ from the comparison chain", bad);
  for (uint32_t code = 0; code < 16; ++code) {
    ++c.checks;
    const float v = ref::e2m1_value(code);
    if (ref::bits(nvfp4::e2m1_decode(code)) != ref::bits(v) ||
        ref::bits(nvfp4::e2m1_decode_top(code << 28)) != ref::bits(v) ||
        nvfp4::e2m1_code_of(std::fabs(v)) != (code & 7u)) {
      c.fail("decode of code %u", code);
    }
  }
  return c.done();
}

int test_e4m3() {
  Checker c{"e4m3"};
  for (uint32_t b = 0; b < 256; ++b) {
    ++c.checks;
    const float want = ref::e4m3_value(b), got = nvfp4::e4m3_decode(b);
    if (!(ref::bits(want) == ref::bits(got) || (want != want && got != got)))
      c.fail("decode(0x%02x) = %a, want %a", b, got, want);
  }
  const uint32_t lows[6] = {0x000, 0x001, 0x3FF, 0x400, 0x401, 0x7FF};
  const long long bad = parallel_range(0, uint64_t(1) << 21, [&](uint64_t lo, uint64_t hi) {
    long long f = 0;
    for (uint64_t top = lo; top < hi; ++top) {
      for (uint32_t low : lows) {
        const uint32_t u = static_cast<uint32_t>(top << 11) | low;
        if ((u & 0x7FC00000u) == 0x7F800000u && (u & 0x003FFFFFu) != 0) continue;  // sNaN
        const float v = ref::from_bits(u);
        bool ok = nvfp4::e4m3_encode(v) == ref::e4m3_encode(v);
        const float a = std::fabs(v);
        if (a == a) {
          const uint32_t want = ref::bits(ref::e4m3_round_mag(a));
          ok = ok && ref::bits(nvfp4::e4m3_mag<false>(a)) == want &&
               ref::bits(nvfp4::e4m3_mag<true>(a)) == want;
        } else {
          ok = ok && nvfp4::e4m3_mag<true>(a) == 0.0f;
        }
        f += !ok;
      }
    }
    return f;
  });
  c.checks += 6ll << 21;
  if (bad) c.fail("%lld sampled inputs differ from the integer-rounding formula", bad);
  return c.done();
}

int test_e8m0() {
  Checker c{"e8m0"};
  const uint32_t lows[3] = {0x000, 0x001, 0x3FF};
  const long long bad = parallel_range(0, 0x7F800000u >> 10, [&](uint64_t lo, uint64_t hi) {
    long long f = 0;
    for (uint64_t top = lo; top < hi; ++top) {  // bits 30..10 of a finite amax
      for (uint32_t low : lows) {
        const uint32_t ab = static_cast<uint32_t>(top << 10) | low;
        const float amax = ref::from_bits(ab);
        using nvfp4::MxRounding;
        f += nvfp4::e8m0_scale<MxRounding::kRceil>(ab, 448.0f, 8) != ref::e8m0_rceil(amax, 448.0f);
        f += nvfp4::e8m0_scale<MxRounding::kRceil>(ab, 6.0f, 2) != ref::e8m0_rceil(amax, 6.0f);
        f += nvfp4::e8m0_scale<MxRounding::kFloor>(ab, 448.0f, 8) != ref::e8m0_floor(amax, 8);
        f += nvfp4::e8m0_scale<MxRounding::kFloor>(ab, 6.0f, 2) != ref::e8m0_floor(amax, 2);
      }
    }
    return f;
  });
  c.checks = 12ll * (0x7F800000 >> 10);
  if (bad) c.fail("%lld sampled amax give another E8M0 byte", bad);
  for (uint32_t b = 0; b < 256; ++b) {
    ++c.checks;
    const float dec = nvfp4::e8m0_decode(b);
    const bool ok = b == 255 ? dec != dec
                             : (dec == std::ldexp(1.0f, int(b) - 127) &&
                                (b == 255 || nvfp4::e8m0_inverse(b) == std::ldexp(1.0f, 127 - int(b))));
    if (!ok) c.fail("decode / inverse of byte %u", b);
  }
  return c.done();
}

int test_nvfp4_block() {
  Checker c{"nvfp4 block math"};
  ref::Rng rng(12345);
  std::vector<float> gss = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1.0f, -3.0f, 0x1p-149f,
                            0x1p-126f, 0x1p-101f, 0x1p101f, 3.4028234663852886e38f, 1e-38f};
  while (gss.size() < 4096) {  // every binade, both signs
    const float g = ref::from_bits(static_cast<uint32_t>(rng.next()) & 0x7F7FFFFFu);
    gss.push_back(rng.next() & 1 ? g : -g);
  }
  for (float gs : gss) {
    const float inv = ref::div(1.0f, gs);
    if (ref::bits(nvfp4::rn_rcp(gs)) != ref::bits(inv) && !(inv != inv)) c.fail("rcp(%a)", gs);
    for (uint32_t sf = 0; sf < 256; ++sf) {
      ++c.checks;
      const float s = ref::e4m3_value(sf);
      const float d = ref::mul(s, inv);
      const float osc = (s == 0.0f || d == 0.0f) ? 0.0f : ref::div(1.0f, d);
      const float dq = ref::div(s, gs);
      const float got_osc = nvfp4::nvfp4_osc(sf, inv), got_dq = nvfp4::nvfp4_dq(sf, gs);
      const bool ok = (ref::bits(got_osc) == ref::bits(osc) || (osc != osc && got_osc != got_osc)) &&
                      (ref::bits(got_dq) == ref::bits(dq) || (dq != dq && got_dq != got_dq));
      if (!ok) c.fail("multipliers of byte 0x%02x, gs %a", sf, gs);
    }
  }
  const float rcp6 = ref::div(1.0f, 6.0f);
  for (int i = 0; i < (1 << 22); ++i) {
    ++c.checks;
    const float vmax = ref::from_bits(static_cast<uint32_t>(rng.next()) & 0x7FFFFFFFu);
    const float gs = gss[rng.next() % gss.size()];
    const uint32_t vb = ref::bits(vmax);
    const uint32_t want = vb >= 0x7F800000u ? 0x7Fu : ref::e4m3_encode(ref::mul(gs, ref::mul(vmax, rcp6)));
    const uint32_t got = nvfp4::nvfp4_block_scale(vb, gs);
    if (got != want && !((got & 0x7F) == 0x7F && (want & 0x7F) == 0x7F))
      c.fail("scale byte of vmax %a, gs %a: 0x%02x, want 0x%02x", vmax, gs, got, want);
  }
  // global scale: 2688 / amax; 1 for 0; FLT_MAX where a finite amax overflows; 0 for inf; NaN.
  auto check_gs = [&](uint32_t ab) {
    ++c.checks;
    const float amax = ref::from_bits(ab);
    float want;
    if (amax == 0.0f) {
      want = 1.0f;
    } else {
      want = ref::div(2688.0f, amax);
      if (std::isinf(want) && std::isfinite(amax)) want = 3.4028234663852886e38f;
    }
    const float got = nvfp4::nvfp4_global_scale_from_amax(ab);
    if (!(ref::bits(got) == ref::bits(want) || (want != want && got != got)))
      c.fail("global scale of amax %a: %a, want %a", amax, got, want);
  };
  for (uint64_t ab = 0; ab <= 0x7FFFFFFFu; ab += 251) check_gs(static_cast<uint32_t>(ab));
  const uint32_t edge = ref::bits(ref::div(2688.0f, 3.4028234663852886e38f));
  for (uint32_t ab = edge - 4096; ab <= edge + 4096; ++ab) check_gs(ab);
  for (uint32_t ab : {0x7F800000u, 0x7FC00000u, 0x7F800001u, 1u}) check_gs(ab);
  return c.done();
}

int test_fastdiv_swizzle() {
  Checker c{"fastdiv, swizzle"};
  ref::Rng rng(7);
  std::vector<uint32_t> ds;
  for (uint32_t d = 1; d <= 1024; ++d) ds.push_back(d);
  for (int s = 11; s < 31; ++s)
    for (int k = -1; k <= 1; ++k) ds.push_back((1u << s) + k);
  for (int i = 0; i < 2000; ++i) ds.push_back(1 + static_cast<uint32_t>(rng.next() % 0x7FFFFFFFu));
  for (uint32_t d : ds) {
    const nvfp4::FastDiv f = nvfp4::FastDiv::make(d);
    const uint32_t ns[6] = {0, d - 1, d, 0x7FFFFFFFu, 0x7FFFFFFFu - d % 0x7FFFFFFFu, d * 2u - 1u};
    for (uint32_t n : ns) {
      if (n > 0x7FFFFFFFu) continue;
      ++c.checks;
      if (f.div(n) != n / d) c.fail("%u / %u", n, d);
    }
    for (int i = 0; i < 64; ++i) {
      const uint32_t n = static_cast<uint32_t>(rng.next() % 0x80000000u);
      ++c.checks;
      if (f.div(n) != n / d) c.fail("%u / %u", n, d);
    }
  }
  // The layout of docs/spec.md sec. 4, written with / and %; a bijection onto [0, Mp * Kp).
  for (int64_t m : {1, 128, 130, 300}) {
    for (int64_t kb : {1, 4, 7, 12}) {
      const int64_t mp = (m + 127) / 128 * 128, kp = (kb + 3) / 4 * 4;
      std::vector<int> seen(mp * kp, 0);
      for (int64_t r = 0; r < mp; ++r) {
        for (int64_t col = 0; col < kp; ++col) {
          ++c.checks;
          const int64_t want = ((r / 128) * (kp / 4) + col / 4) * 512 + (r % 32) * 16 +
                               ((r % 128) / 32) * 4 + col % 4;
          const int64_t got = nvfp4::swizzle_offset(r, col, kp);
          if (got != want || nvfp4::swizzle_offset32(r, col, kp) != uint32_t(want)) {
            c.fail("swizzle_offset(%lld, %lld, %lld)", (long long)r, (long long)col, (long long)kp);
          } else {
            ++seen[got];
          }
        }
      }
      for (int s : seen)
        if (s != 1) c.fail("swizzle offsets of %lld x %lld are not a bijection", (long long)m, (long long)kb);
      // zero_swizzled_row_padding clears exactly the rows m..mp-1.
      std::vector<uint8_t> buf(2 * mp * kp, 0xAB);
      nvfp4::zero_swizzled_row_padding<int64_t>(buf.data(), 2, m, mp, kp, 0, 1);
      for (int64_t b = 0; b < 2; ++b)
        for (int64_t r = 0; r < mp; ++r)
          for (int64_t col = 0; col < kp; ++col) {
            ++c.checks;
            const uint8_t v = buf[b * mp * kp + nvfp4::swizzle_offset(r, col, kp)];
            if (v != (r >= m ? 0 : 0xAB)) c.fail("row padding byte (%lld, %lld)", (long long)r, (long long)col);
          }
    }
  }
  return c.done();
}

int main() {
  int rc = 0;
  rc |= test_e2m1();
  rc |= test_e4m3();
  rc |= test_e8m0();
  rc |= test_nvfp4_block();
  rc |= test_fastdiv_swizzle();
  return rc;
}
