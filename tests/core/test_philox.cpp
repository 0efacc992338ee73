// Philox4x32-10: the published known-answer vectors (Random123's kat_vectors) and the
// statistics and determinism of the derived draws.
#include <catch2/catch.hpp>

#include <cmath>
#include <set>

#include "mambatrack/core/philox.hpp"

using namespace mambatrack;

TEST_CASE("philox: Random123 known-answer vectors of Philox4x32-10", "[cpu][core]") {
  struct Kat {
    PhiloxBlock ctr;
    uint32_t k0, k1;
    PhiloxBlock want;
  };
  const Kat kats[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}}},
      {{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu, 0xffffffffu,
       {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}}},
      {{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u,
       {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}}},
  };
  for (const auto& k : kats) {
    const PhiloxBlock got = philox4x32_10(k.ctr, k.k0, k.k1);
    for (int i = 0; i < 4; ++i) CHECK(got.v[i] == k.want.v[i]);
  }
  // philox_block maps (seed, stream, index) onto key and counter words as documented.
  const PhiloxBlock b = philox_block(0x299f31d0a4093822ull, 0x0370734413198a2eull, 0x85a308d3243f6a88ull);
  CHECK(b.v[0] == 0xd16cfe09u);
  CHECK(b.v[3] == 0x24126ea1u);
}

TEST_CASE("philox: uniform, normal and integer draws have the right statistics", "[cpu][core]") {
  Philox rng(42, 3);
  const int n = 200000;
  double sum = 0, sumsq = 0, nsum = 0, nsumsq = 0, nkurt = 0;
  int counts[10] = {};
  for (int i = 0; i < n; ++i) {
    const float u = rng.uniform();
    REQUIRE(u >= 0.0f);
    REQUIRE(u < 1.0f);
    sum += u;
    sumsq += double(u) * u;
    const double z = rng.normal();
    nsum += z;
    nsumsq += z * z;
    nkurt += z * z * z * z;
    const uint64_t k = rng.below(10);
    REQUIRE(k < 10);
    ++counts[k];
  }
  // Standard errors at n = 2e5: mean of U(0,1) 6.5e-4, of N(0,1) 2.2e-3; bounds are ~5 sigma.
  CHECK(std::abs(sum / n - 0.5) < 3.5e-3);
  CHECK(std::abs(sumsq / n - 1.0 / 3.0) < 3.5e-3);
  CHECK(std::abs(nsum / n) < 1.2e-2);
  CHECK(std::abs(nsumsq / n - 1.0) < 1.6e-2);
  CHECK(std::abs(nkurt / n - 3.0) < 0.12);
  for (int c : counts) CHECK(std::abs(c - n / 10) < 700);  // binomial sigma ~134
  for (int i = 0; i < 1000; ++i) {
    const int64_t r = rng.range(-2, 2);
    REQUIRE(r >= -2);
    REQUIRE(r <= 2);
  }
}

TEST_CASE("philox: sequences are reproducible, resumable and streams independent", "[cpu][core]") {
  Philox a(7, 1), b(7, 1), c(7, 2), d(8, 1);
  std::vector<uint32_t> first;
  for (int i = 0; i < 100; ++i) first.push_back(a.next_u32());
  for (int i = 0; i < 100; ++i) CHECK(b.next_u32() == first[i]);
  int same_stream = 0, same_seed = 0;
  for (int i = 0; i < 100; ++i) {
    same_stream += c.next_u32() == first[i];
    same_seed += d.next_u32() == first[i];
  }
  CHECK(same_stream == 0);
  CHECK(same_seed == 0);
  // Resuming from a stored position continues the same sequence.
  Philox e(7, 1);
  e.set_position(40);
  CHECK(e.next_u32() == first[40]);
  // The stateless draw i equals the i-th sequential draw (what a CUDA thread i computes).
  Philox f(99, 5);
  for (uint64_t i = 0; i < 50; ++i) CHECK(f.uniform() == philox_uniform(99, 5, i));
  // Uniform floats are multiples of 2^-24, so distinct counters give many distinct values.
  std::set<float> values;
  for (uint64_t i = 0; i < 1000; ++i) values.insert(philox_uniform(1, 0, i));
  CHECK(values.size() > 990);
}
