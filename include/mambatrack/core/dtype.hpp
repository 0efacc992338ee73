// Element types: the bfloat16 and float16 storage types with round-to-nearest-even conversion
// from float (NaN stays NaN, overflow goes to infinity, float16 subnormals exact), and the DType
// enumeration of the safetensors format with sizes and names.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "mambatrack/core/hostdevice.hpp"

namespace mambatrack {

MAMBATRACK_HD uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
MAMBATRACK_HD float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// float -> bfloat16 bits, round to nearest, ties to even. NaN -> quiet NaN of the same sign.
MAMBATRACK_HD uint16_t float_to_bf16_bits(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
MAMBATRACK_HD float bf16_bits_to_float(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

// float -> IEEE binary16 bits, round to nearest, ties to even, subnormals included.
MAMBATRACK_HD uint16_t float_to_half_bits(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t mag = u & 0x7fffffffu;
  if (mag > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((mag >> 13) & 0x3ffu));
  if (mag >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: infinity
  if (mag < 0x38800000u) {  // below 2^-14: a float16 subnormal or zero
    if (mag <= 0x33000000u) return static_cast<uint16_t>(sign);  // <= 2^-25 rounds to zero
    const uint32_t exponent = mag >> 23;                          // 102 .. 112
    const uint32_t mantissa = (mag & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exponent;                       // 14 .. 24
    uint32_t r = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rest > halfway || (rest == halfway && (r & 1u))) ++r;  // may carry into the smallest normal
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t r = mag - 0x38000000u;  // rebias the exponent from 127 to 15
  r += 0xfffu + ((r >> 13) & 1u);
  return static_cast<uint16_t>(sign | (r >> 13));
}

MAMBATRACK_HD float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    if (mantissa == 0) return bits_float(sign);
    uint32_t e = 113;  // normalise the subnormal
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --e;
    }
    return bits_float(sign | (e << 23) | ((mantissa & 0x3ffu) << 13));
  }
  if (exponent == 31) return bits_float(sign | 0x7f800000u | (mantissa << 13));
  return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

// 16-bit storage types. Arithmetic happens in float; these only hold bits.
struct bfloat16 {
  uint16_t bits = 0;
  bfloat16() = default;
  MAMBATRACK_HD explicit bfloat16(float f) : bits(float_to_bf16_bits(f)) {}
  MAMBATRACK_HD explicit operator float() const { return bf16_bits_to_float(bits); }
  MAMBATRACK_HD static bfloat16 from_bits(uint16_t b) {
    bfloat16 x;
    x.bits = b;
    return x;
  }
};
struct float16 {
  uint16_t bits = 0;
  float16() = default;
  MAMBATRACK_HD explicit float16(float f) : bits(float_to_half_bits(f)) {}
  MAMBATRACK_HD explicit operator float() const { return half_bits_to_float(bits); }
  MAMBATRACK_HD static float16 from_bits(uint16_t b) {
    float16 x;
    x.bits = b;
    return x;
  }
};

// The safetensors dtypes, declared in the order the reference writer sorts by (it writes the
// larger enumerators first).
enum class DType : int {
  BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64
};
constexpr int kNumDTypes = 17;

inline int dtype_size(DType t) {
  switch (t) {
    case DType::BOOL: case DType::U8: case DType::I8:
    case DType::F8_E5M2: case DType::F8_E4M3: case DType::F8_E8M0: return 1;
    case DType::I16: case DType::U16: case DType::F16: case DType::BF16: return 2;
    case DType::I32: case DType::U32: case DType::F32: return 4;
    case DType::C64: case DType::F64: case DType::I64: case DType::U64: return 8;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  static const char* const names[kNumDTypes] = {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3",
                                                "F8_E8M0", "I16", "U16", "F16", "BF16", "I32",
                                                "U32", "F32", "C64", "F64", "I64", "U64"};
  int i = static_cast<int>(t);
  return (i >= 0 && i < kNumDTypes) ? names[i] : "?";
}

// Parses "F32" etc.; returns false for anything else.
inline bool parse_dtype(const std::string& name, DType& out) {
  for (int i = 0; i < kNumDTypes; ++i) {
    if (name == dtype_name(static_cast<DType>(i))) {
      out = static_cast<DType>(i);
      return true;
    }
  }
  return false;
}

inline std::string supported_dtypes() {
  std::string s;
  for (int i = 0; i < kNumDTypes; ++i) s += (i ? ", " : "") + std::string(dtype_name(static_cast<DType>(i)));
  return s;
}

// The DType of a C++ element type.
template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, bool>) return DType::BOOL;
  else if constexpr (std::is_same_v<T, uint8_t>) return DType::U8;
  else if constexpr (std::is_same_v<T, int8_t>) return DType::I8;
  else if constexpr (std::is_same_v<T, int16_t>) return DType::I16;
  else if constexpr (std::is_same_v<T, uint16_t>) return DType::U16;
  else if constexpr (std::is_same_v<T, float16>) return DType::F16;
  else if constexpr (std::is_same_v<T, bfloat16>) return DType::BF16;
  else if constexpr (std::is_same_v<T, int32_t>) return DType::I32;
  else if constexpr (std::is_same_v<T, uint32_t>) return DType::U32;
  else if constexpr (std::is_same_v<T, float>) return DType::F32;
  else if constexpr (std::is_same_v<T, double>) return DType::F64;
  else if constexpr (std::is_same_v<T, int64_t>) return DType::I64;
  else if constexpr (std::is_same_v<T, uint64_t>) return DType::U64;
  else static_assert(sizeof(T) == 0, "no safetensors dtype for this type");
}

}  // namespace mambatrack
