// bfloat16 and float16 conversions, bit-exact on the edge values: zeros, subnormals, the largest
// finite values, overflow, infinities, NaN and round-to-nearest-even ties.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "mambatrack/core/dtype.hpp"

using namespace mambatrack;

namespace {
float from_bits(uint32_t u) { return bits_float(u); }
}  // namespace

TEST_CASE("bf16: round to nearest even on edge values", "[cpu][core]") {
  struct C {
    uint32_t in;
    uint16_t out;
    const char* what;
  };
  const C cases[] = {
      {0x00000000u, 0x0000, "+0"},
      {0x80000000u, 0x8000, "-0"},
      {0x3f800000u, 0x3f80, "1"},
      {0x3f808000u, 0x3f80, "tie below even: 1 + 2^-8 -> 1"},
      {0x3f818000u, 0x3f82, "tie above odd rounds up to even"},
      {0x3f808001u, 0x3f81, "just above a tie rounds up"},
      {0x3f807fffu, 0x3f80, "just below a tie rounds down"},
      {0x7f7fffffu, 0x7f80, "largest float overflows to +inf"},
      {0x7f7f7fffu, 0x7f7f, "largest bf16 stays"},
      {0xff800000u, 0xff80, "-inf"},
      {0x7f800000u, 0x7f80, "+inf"},
      {0x00000001u, 0x0000, "smallest float subnormal rounds to zero"},
      {0x00008000u, 0x0000, "subnormal tie to even zero"},
      {0x00018000u, 0x0002, "subnormal tie to even up"},
      {0x007fffffu, 0x0080, "largest subnormal rounds to smallest normal"},
      {0x7fc00000u, 0x7fc0, "quiet NaN"},
      {0x7f800001u, 0x7fc0, "signalling NaN with low payload stays NaN"},
      {0xffc00001u, 0xffc0, "negative NaN keeps its sign"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    CHECK(float_to_bf16_bits(from_bits(c.in)) == c.out);
  }
  // bf16 -> float is exact: every one of the 65536 patterns round-trips (NaNs stay NaN).
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = bf16_bits_to_float(static_cast<uint16_t>(b));
    if (std::isnan(f)) {
      CHECK(std::isnan(bf16_bits_to_float(float_to_bf16_bits(f))));
    } else {
      REQUIRE(float_to_bf16_bits(f) == b);
    }
  }
}

TEST_CASE("float16: round to nearest even, subnormals and overflow", "[cpu][core]") {
  struct C {
    float in;
    uint16_t out;
    const char* what;
  };
  const C cases[] = {
      {0.0f, 0x0000, "+0"},
      {-0.0f, 0x8000, "-0"},
      {1.0f, 0x3c00, "1"},
      {65504.0f, 0x7bff, "largest half"},
      {65519.0f, 0x7bff, "below the overflow tie"},
      {65520.0f, 0x7c00, "tie at 65520 rounds to inf"},
      {1e10f, 0x7c00, "overflow"},
      {-1e10f, 0xfc00, "negative overflow"},
      {std::numeric_limits<float>::infinity(), 0x7c00, "+inf"},
      {std::ldexp(1.0f, -14), 0x0400, "smallest normal"},
      {std::ldexp(1.0f, -24), 0x0001, "smallest subnormal"},
      {std::ldexp(1.0f, -25), 0x0000, "half the smallest subnormal: tie to even zero"},
      {std::ldexp(1.5f, -25), 0x0001, "above the tie rounds up"},
      {std::ldexp(3.0f, -25), 0x0002, "1.5 subnormal steps: tie to even 2"},
      {std::ldexp(5.0f, -25), 0x0002, "2.5 subnormal steps: tie to even 2"},
      {std::ldexp(1023.5f, -24), 0x0400, "largest subnormal tie carries into the smallest normal"},
      {1.0f + std::ldexp(1.0f, -11), 0x3c00, "tie at 1 + 2^-11 -> even 1"},
      {1.0f + 3 * std::ldexp(1.0f, -11), 0x3c02, "tie at odd mantissa rounds up"},
      {std::ldexp(1.0f, -30), 0x0000, "far below: zero"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    CHECK(float_to_half_bits(c.in) == c.out);
  }
  CHECK(std::isnan(half_bits_to_float(float_to_half_bits(std::nanf("")))));
  CHECK((float_to_half_bits(std::nanf("")) & 0x7c00) == 0x7c00);
  CHECK((float_to_half_bits(std::nanf("")) & 0x03ff) != 0);
  // Every half pattern converts to float exactly and back.
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = half_bits_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    REQUIRE(float_to_half_bits(f) == h);
  }
  CHECK(half_bits_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(half_bits_to_float(0x03ff) == std::ldexp(1023.0f, -24));
  CHECK(half_bits_to_float(0xfbff) == -65504.0f);
  // Random floats: the result is the nearest half (checked against the neighbours).
  uint32_t state = 12345;
  for (int i = 0; i < 100000; ++i) {
    state = state * 1664525u + 1013904223u;
    const float f = std::ldexp(static_cast<float>(state >> 8) / 16777216.0f, static_cast<int>(state % 40) - 28);
    const uint16_t h = float_to_half_bits(f);
    const double got = half_bits_to_float(h);
    if (std::isinf(got)) continue;
    const double lo = half_bits_to_float(static_cast<uint16_t>(h - (h > 0 ? 1 : 0)));
    const double hi = half_bits_to_float(static_cast<uint16_t>(h + 1));
    REQUIRE(std::abs(got - f) <= std::abs(lo - f));
    REQUIRE(std::abs(got - f) <= std::abs(hi - f));
  }
}

TEST_CASE("dtype: names, sizes and the reference writer's order", "[cpu][core]") {
  DType t;
  CHECK(parse_dtype("BF16", t));
  CHECK(t == DType::BF16);
  CHECK_FALSE(parse_dtype("bf16", t));
  CHECK(dtype_size(DType::C64) == 8);
  CHECK(dtype_size(DType::F8_E4M3) == 1);
  CHECK(dtype_of<float>() == DType::F32);
  CHECK(dtype_of<bfloat16>() == DType::BF16);
  CHECK(static_cast<float>(bfloat16(2.5f)) == 2.5f);
  CHECK(static_cast<float>(float16(-0.125f)) == -0.125f);
}
