// Branch-free float exp / log / sigmoid / softplus that the compiler vectorises inside plain loops (libm's
// expf does not vectorise without -ffast-math). exp(x) = 2^k · p(r), x = k·ln2 + r, |r| <= ln2/2,
// p the Cephes degree-7 polynomial (about 1 ulp on [-87, 88]); inputs are clamped to that range.
#pragma once

#include <cmath>
#include <cstdint>

namespace mambatrack::cpu {

inline float exp_approx(float x) {
  // Clamp by blending with 0/1 masks: GCC (without -ffast-math) vectorises these selects, not
  // `x < lo ? lo : x`.
  const float below = x < -87.0f ? 1.0f : 0.0f;
  const float above = x > 88.0f ? 1.0f : 0.0f;
  x += below * (-87.0f - x);
  x += above * (88.0f - x);
  // Round x·log2(e) to the nearest integer with the 1.5·2^23 trick (no roundps needed on SSE2).
  const float kRound = 12582912.0f;
  const float k = (x * 1.44269504088896341f + kRound) - kRound;
  const float r = (x - k * 0.693359375f) + k * 2.12194440e-4f;  // ln2 split in two for exactness
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;  // k in [-126, 127]: a normal 2^k
  return p * __builtin_bit_cast(float, bits);
}

// 1 / (1 + exp(-x)); exact limits 0 and 1 are approached, never NaN.
inline float sigmoid_approx(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

// log1p(v) for v in [0, 1] as 2·atanh(s), s = v / (2 + v) in [0, 1/3]: the odd series to s^13
// (truncation < 2e-8 relative), exact for tiny v, no table and no branch.
inline float log1p_unit(float v) {
  const float s = v / (2.0f + v), s2 = s * s;
  float p = 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return 2.0f * s * p;
}

// The scan's softplus, x <= 20 ? log1p(exp(x)) : x (the threshold of the reference kernels),
// computed as max(x, 0) + log1p(exp(-|x|)).
inline float softplus(float x) {
  const float ax = std::fabs(x);
  const float r = 0.5f * (x + ax) + log1p_unit(exp_approx(-ax));
  const float above = x > 20.0f ? 1.0f : 0.0f;
  return r + above * (x - r);
}

}  // namespace mambatrack::cpu
