// The compile-time parameter values that are instantiated (DESIGN.md §5). Kernels templated on
// one of these dispatch from a run-time value with dispatch_value(); any other value is a
// ConfigError that lists the supported ones. Adding a value is one edit of a list here.
#pragma once

#include <cstdint>
#include <sstream>
#include <string>
#include <utility>

#include "mambatrack/core/error.hpp"

namespace mambatrack {

template <int... Values>
struct ValueList {
  static std::string str() {
    std::ostringstream os;
    int i = 0;
    ((os << (i++ ? ", " : "") << Values), ...);
    return os.str();
  }
  static constexpr bool contains(int v) { return ((v == Values) || ...); }
};

using SupportedDState = ValueList<4, 8, 12, 16, 32, 48, 64, 96, 128>;
using SupportedDConv = ValueList<2, 3, 4>;
using SupportedHeadDim = ValueList<8, 12, 16, 32, 64>;
using SupportedExpand = ValueList<1, 2, 4>;

// Calls f(std::integral_constant<int, V>{}) for the V of the list equal to `value`; throws a
// ConfigError naming `what` and the supported values otherwise. Returns what f returns.
template <int... Values, class F>
decltype(auto) dispatch_value(ValueList<Values...>, int value, const char* what, F&& f) {
  if (!ValueList<Values...>::contains(value)) {
    throw ConfigError(std::string(what) + " = " + std::to_string(value) +
                      " is not compiled; supported: " + ValueList<Values...>::str());
  }
  constexpr int kFirst[] = {Values...};
  using Ret = decltype(f(std::integral_constant<int, kFirst[0]>{}));
  if constexpr (std::is_void_v<Ret>) {
    ((value == Values ? (f(std::integral_constant<int, Values>{}), true) : false) || ...);
  } else {
    Ret out{};
    ((value == Values ? (out = f(std::integral_constant<int, Values>{}), true) : false) || ...);
    return out;
  }
}

}  // namespace mambatrack
