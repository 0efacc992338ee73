// Philox4x32-10 counter-based RNG (Salmon et al., SC'11): ten rounds of
//   (c0,c1,c2,c3) -> (hi(M1*c2) ^ c1 ^ k0, lo(M1*c2), hi(M0*c0) ^ c3 ^ k1, lo(M0*c0)),
// key bumped by the Weyl constants between rounds. Draw i of stream s under seed k is a pure
// function of (k, s, i), so host loops and CUDA threads produce the same numbers.
#pragma once

#include <cmath>
#include <cstdint>

#include "mambatrack/core/hostdevice.hpp"

namespace mambatrack {

struct PhiloxBlock {
  uint32_t v[4];
};

namespace detail {
constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

MAMBATRACK_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t& lo, uint32_t& hi) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  lo = static_cast<uint32_t>(p);
  hi = static_cast<uint32_t>(p >> 32);
}
}  // namespace detail

// The raw bijection: 4 counter words and 2 key words in, 4 random words out.
MAMBATRACK_HD PhiloxBlock philox4x32_10(PhiloxBlock ctr, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += detail::kPhiloxW0;
      k1 += detail::kPhiloxW1;
    }
    uint32_t lo0, hi0, lo1, hi1;
    detail::mulhilo32(detail::kPhiloxM0, ctr.v[0], lo0, hi0);
    detail::mulhilo32(detail::kPhiloxM1, ctr.v[2], lo1, hi1);
    ctr = PhiloxBlock{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
  }
  return ctr;
}

// Block `index` of stream `stream` under `seed`: counter = (index lo, index hi, stream lo,
// stream hi), key = (seed lo, seed hi).
MAMBATRACK_HD PhiloxBlock philox_block(uint64_t seed, uint64_t stream, uint64_t index) {
  PhiloxBlock ctr{{static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
                   static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)}};
  return philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Conversions of random words, each a pure function so host and device agree bit for bit.
// Uniform float in [0, 1): the top 24 bits times 2^-24 (every value exactly representable).
MAMBATRACK_HD float u32_to_unit_float(uint32_t x) {
  return static_cast<float>(x >> 8) * (1.0f / 16777216.0f);
}
// Uniform double in [0, 1): 53 bits from two words.
MAMBATRACK_HD double u64_to_unit_double(uint32_t hi, uint32_t lo) {
  uint64_t x = (static_cast<uint64_t>(hi) << 32 | lo) >> 11;
  return static_cast<double>(x) * (1.0 / 9007199254740992.0);
}
// Integer in [0, n) from 64 random bits by multiply-shift (bias below n / 2^64).
MAMBATRACK_HD uint64_t u64_to_range(uint32_t hi, uint32_t lo, uint64_t n) {
  uint64_t x = static_cast<uint64_t>(hi) << 32 | lo;
#if defined(__CUDA_ARCH__)
  return __umul64hi(x, n);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(x) * n) >> 64);
#endif
}
// Standard normal by Box-Muller in double from one block (u1 in (0, 1], u2 in [0, 1)).
// Computed in double and rounded once, so host and device agree except, with probability of
// order 1e-9 per draw, in the last bit of the float.
MAMBATRACK_HD double block_to_normal(const PhiloxBlock& b) {
  double u1 = 1.0 - u64_to_unit_double(b.v[0], b.v[1]);
  double u2 = u64_to_unit_double(b.v[2], b.v[3]);
  return ::sqrt(-2.0 * ::log(u1)) * ::cos(6.283185307179586476925286766559 * u2);
}

// Stateless draws: draw i of (seed, stream). Each draw uses its own block, so the i-th draw is
// the same whether made in a host loop or by CUDA thread i.
MAMBATRACK_HD float philox_uniform(uint64_t seed, uint64_t stream, uint64_t i) {
  return u32_to_unit_float(philox_block(seed, stream, i).v[0]);
}
MAMBATRACK_HD double philox_uniform_double(uint64_t seed, uint64_t stream, uint64_t i) {
  PhiloxBlock b = philox_block(seed, stream, i);
  return u64_to_unit_double(b.v[0], b.v[1]);
}
MAMBATRACK_HD double philox_normal(uint64_t seed, uint64_t stream, uint64_t i) {
  return block_to_normal(philox_block(seed, stream, i));
}
MAMBATRACK_HD uint64_t philox_range(uint64_t seed, uint64_t stream, uint64_t i, uint64_t n) {
  PhiloxBlock b = philox_block(seed, stream, i);
  return u64_to_range(b.v[0], b.v[1], n);
}

// A sequential generator over one stream: its whole state is (seed, stream, position), which a
// checkpoint stores to resume the same sequence.
class Philox {
 public:
  Philox() = default;
  explicit Philox(uint64_t seed, uint64_t stream = 0, uint64_t position = 0)
      : seed_(seed), stream_(stream), position_(position) {}

  uint64_t seed() const noexcept { return seed_; }
  uint64_t stream() const noexcept { return stream_; }
  uint64_t position() const noexcept { return position_; }
  void set_position(uint64_t p) noexcept { position_ = p; }
  // Skips n draws (what a device kernel drawing n values consumed).
  void advance(uint64_t n) noexcept { position_ += n; }

  uint32_t next_u32() { return philox_block(seed_, stream_, position_++).v[0]; }
  uint64_t next_u64() {
    PhiloxBlock b = philox_block(seed_, stream_, position_++);
    return static_cast<uint64_t>(b.v[0]) << 32 | b.v[1];
  }
  float uniform() { return philox_uniform(seed_, stream_, position_++); }
  double uniform_double() { return philox_uniform_double(seed_, stream_, position_++); }
  // Uniform in [lo, hi).
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform_double(); }
  double normal() { return philox_normal(seed_, stream_, position_++); }
  double normal(double mean, double sigma) { return mean + sigma * normal(); }
  // Integer in [0, n); n > 0.
  uint64_t below(uint64_t n) { return philox_range(seed_, stream_, position_++, n); }
  // Integer in [lo, hi] inclusive.
  int64_t range(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(below(static_cast<uint64_t>(hi - lo) + 1));
  }

  // A generator for an independent sub-stream (e.g. one per event or per rank).
  Philox split(uint64_t stream) const { return Philox(seed_, stream, 0); }

 private:
  uint64_t seed_ = 0;
  uint64_t stream_ = 0;
  uint64_t position_ = 0;
};

}  // namespace mambatrack
