// Independent, straightforward reference formulas for tests/cpp (no code shared with
// csrc beyond plain C++): the element and scale roundings of docs/spec.md written as the
// spec states them (comparison chains, integer rounding in double), and a tiny test
// harness. Doubles hold every fp32 product exactly and RN_f32(op in double) == RN_f32(op)
// for + - * / (53 >= 2 * 24 + 2: double rounding is innocuous).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ref {

inline uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// fp32 of one IEEE operation, through double.
inline float mul(float a, float b) { return static_cast<float>(double(a) * double(b)); }
inline float div(float a, float b) { return static_cast<float>(double(a) / double(b)); }
inline float sub(float a, float b) { return static_cast<float>(double(a) - double(b)); }
inline float add(float a, float b) { return static_cast<float>(double(a) + double(b)); }

// docs/spec.md sec. 1: |y| <= 0.25 -> 0; (0.25, 0.75) -> 0.5; [0.75, 1.25] -> 1; (1.25, 1.75) -> 1.5;
// [1.75, 2.5] -> 2; (2.5, 3.5) -> 3; [3.5, 5] -> 4; > 5 -> 6. NaN -> 0 (the NaN-safe rule).
inline uint32_t e2m1_mag_code(float y) {
  const float a = std::fabs(y);
  if (a != a || a <= 0.25f) return 0;
  if (a < 0.75f) return 1;
  if (a <= 1.25f) return 2;
  if (a < 1.75f) return 3;
  if (a <= 2.5f) return 4;
  if (a < 3.5f) return 5;
  if (a <= 5.0f) return 6;
  return 7;
}
inline float e2m1_value(uint32_t code) {
  static const float v[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  return (code & 8u) ? -v[code & 7u] : v[code & 7u];
}

// E4M3 value of a byte: 2^(e-7) (1 + m/8), subnormal m 2^-9; 0x7F / 0xFF NaN.
inline float e4m3_value(uint32_t b) {
  const int e = (b >> 3) & 15, m = b & 7;
  if ((b & 0x7F) == 0x7F) return NAN;
  const double v = e ? std::ldexp(1.0 + m / 8.0, e - 7) : std::ldexp(double(m), -9);
  return static_cast<float>((b & 0x80) ? -v : v);
}

// Nearest E4M3 magnitude of a >= 0 (not NaN), ties to even, saturating to 448: the value
// scaled to an integer multiple of the spacing of its binade, rounded with rint.
inline float e4m3_round_mag(float a) {
  if (a >= 448.0f) return 448.0f;
  int e = std::ilogb(a);  // a = 0: very negative
  if (a == 0.0f || e < -6) e = -6;
  const double q = std::rint(std::ldexp(double(a), 3 - e));  // exact scaling; RNE
  return static_cast<float>(std::min(std::ldexp(q, e - 3), 448.0));
}

// Byte of an E4M3 magnitude on the grid (0..0x7E).
inline uint32_t e4m3_byte_of(float q) {
  static const struct Table {
    float v[0x7F];
    Table() {
      for (uint32_t b = 0; b < 0x7F; ++b) v[b] = e4m3_value(b);
    }
  } table;
  const float* p = std::lower_bound(table.v, table.v + 0x7F, q);  // the values increase
  if (p == table.v + 0x7F || *p != q) {
    std::fprintf(stderr, "not an E4M3 value: %a\n", q);
    std::abort();
  }
  return static_cast<uint32_t>(p - table.v);
}

// fp32 -> E4M3 byte, satfinite RNE, NaN -> 0x7F (the sign of NaN ignored).
inline uint32_t e4m3_encode(float v) {
  if (v != v) return 0x7F;
  return (std::signbit(v) ? 0x80u : 0u) | e4m3_byte_of(e4m3_round_mag(std::fabs(v)));
}

// The E8M0 byte of docs/spec.md sec. 3 for a finite amax >= 0. rceil: the smallest normal fp32
// power of two >= d = RN(amax / Emax), as a biased exponent (a subnormal d gives 2^-126:
// the spec rounds up on the fp32 bits); floor: floor(log2(amax)) + 127 - emax (the
// exponent field for normals, 0 for zero and subnormals), at least 0.
inline uint32_t e8m0_rceil(float amax, float emax_value) {
  const float d = div(amax, emax_value);
  if (d == 0.0f) return 0;
  if (d < std::ldexp(1.0f, -126)) return 1;
  int e;
  const double m = std::frexp(double(d), &e);  // d = m 2^e, m in [0.5, 1)
  const int lg = m == 0.5 ? e - 1 : e;           // ceil(log2 d)
  return static_cast<uint32_t>(lg + 127);
}
inline uint32_t e8m0_floor(float amax, int emax) {
  int field = 0;
  if (amax >= std::ldexp(1.0f, -126)) field = std::ilogb(amax) + 127;
  return field - emax > 0 ? static_cast<uint32_t>(field - emax) : 0u;
}

// A tiny harness: counts failures, prints the first few.
struct Checker {
  const char* name;
  long long checks = 0, fails = 0;
  template <typename... A>
  void fail(const char* fmt, A... a) {
    if (++fails <= 10) {
      std::fprintf(stderr, "[%s] ", name);
      std::fprintf(stderr, fmt, a...);
      std::fprintf(stderr, "\n");
    }
  }
  int done() const {
    std::printf("%s: %lld checks, %lld failures\n", name, checks, fails);
    return fails ? 1 : 0;
  }
};

// splitmix64: the seeded generator of the samples.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return (next() >> 11) * 0x1p-53; }
  double normal() {
    const double u = uniform() + 0x1p-60, v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }
};

}  // namespace ref
