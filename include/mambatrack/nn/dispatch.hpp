// The one table from run-time config values to compiled layer configurations (DESIGN.md §5):
// make_mamba(d_state, d_conv, expand, d_model) checks each value against core/supported.hpp
// through dispatch_value (ConfigError listing the supported values otherwise) and builds the
// Mamba<DState, DConv, Expand, Backend> instantiation, returned as its MambaMixer<Backend> base
// (same layout, run-time sizes), which is what Block/Backbone hold.
#pragma once

#include <cstdint>

#include "mambatrack/core/supported.hpp"
#include "mambatrack/nn/mamba.hpp"
#include "mambatrack/nn/mamba2.hpp"  // make_mamba2(d_state, d_conv, expand, headdim, d_model, opt)

namespace mambatrack::nn {

template <class Backend>
MambaMixer<Backend> make_mamba(int d_state, int d_conv, int expand, int64_t d_model, MambaOptions opt = {}) {
  return dispatch_value(SupportedDState{}, d_state, "mamba d_state", [&](auto s) {
    return dispatch_value(SupportedDConv{}, d_conv, "mamba d_conv", [&](auto k) {
      return dispatch_value(SupportedExpand{}, expand, "mamba expand", [&](auto e) {
        return MambaMixer<Backend>(Mamba<decltype(s)::value, decltype(k)::value, decltype(e)::value, Backend>(d_model, opt));
      });
    });
  });
}

}  // namespace mambatrack::nn
