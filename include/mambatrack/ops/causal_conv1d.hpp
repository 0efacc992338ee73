// Causal depthwise 1-D convolution with optional SiLU: the argument structs and shape checks shared
// by every backend. out[t, c] = act(bias[c] + Σ_{j<K} w[c, j] · x[t - (K-1) + j, c]), with x = 0
// before each sequence's first token (packed batches via cu_seqlens), act = SiLU or identity.
// The weight is (channels, K); the reference module stores it as (channels, 1, K).
#pragma once

#include <cstdint>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/tensor.hpp"
#include "mambatrack/ops/args.hpp"

namespace mambatrack {

// x: (tokens, channels); weight: (channels, d_conv); bias: (channels), optional;
// cu_seqlens: (batch + 1).
template <class T, class Device = Host>
struct CausalConv1dInputs {
  View<const T, Device> x, weight;
  View<const T, Device> bias;  // optional
  View<const int64_t, Device> cu_seqlens;
  bool silu = true;
};

// out: (tokens, channels), must not alias x (later tokens read earlier inputs).
template <class T, class Device = Host>
struct CausalConv1dFwdArgs {
  CausalConv1dInputs<T, Device> in;
  View<T, Device> out;
};

// dout = ∂L/∂out. dx is OVERWRITTEN; dweight (channels, d_conv) and dbias (when a bias is
// given) are ACCUMULATED (+=) — the trainer zeroes one flat gradient buffer per step.
template <class T, class Device = Host>
struct CausalConv1dBwdArgs {
  CausalConv1dInputs<T, Device> in;
  View<const T, Device> dout;
  View<T, Device> dx;              // overwritten
  View<T, Device> dweight, dbias;  // accumulated
};

struct CausalConv1dSizes {
  int64_t tokens = 0, channels = 0, d_conv = 0, batch = 0;
};

namespace detail {
template <class V>
void conv_check_shape(const V& v, const Shape& want, const char* name) {
  MAMBATRACK_CHECK_SHAPE(v.shape == want, "causal_conv1d: ", name, " has shape ", v.shape, ", expected ", want);
}
}  // namespace detail

// Shape checks (device-agnostic; cu_seqlens' values: validate_cu_seqlens on the host).
template <class T, class Device>
CausalConv1dSizes validate_causal_conv1d_inputs(const CausalConv1dInputs<T, Device>& in) {
  CausalConv1dSizes s;
  MAMBATRACK_CHECK_SHAPE(in.x.rank() == 2, "causal_conv1d: x must be (tokens, channels), got ", in.x.shape);
  s.tokens = in.x.dim(0);
  s.channels = in.x.dim(1);
  MAMBATRACK_CHECK_SHAPE(in.weight.rank() == 2 && in.weight.dim(0) == s.channels,
                         "causal_conv1d: weight must be (channels, d_conv) = (", s.channels, ", K), got ",
                         in.weight.shape);
  s.d_conv = in.weight.dim(1);
  MAMBATRACK_CHECK_SHAPE(in.cu_seqlens.rank() == 1 && in.cu_seqlens.dim(0) >= 2,
                         "causal_conv1d: cu_seqlens must be (batch + 1) with batch >= 1, got ",
                         in.cu_seqlens.shape);
  s.batch = in.cu_seqlens.dim(0) - 1;
  if (is_given(in.bias)) detail::conv_check_shape(in.bias, Shape{s.channels}, "bias");
  return s;
}

template <class T, class Device>
CausalConv1dSizes validate_causal_conv1d(const CausalConv1dFwdArgs<T, Device>& a) {
  const auto s = validate_causal_conv1d_inputs(a.in);
  detail::conv_check_shape(a.out, a.in.x.shape, "out");
  return s;
}

template <class T, class Device>
CausalConv1dSizes validate_causal_conv1d(const CausalConv1dBwdArgs<T, Device>& a) {
  const auto s = validate_causal_conv1d_inputs(a.in);
  detail::conv_check_shape(a.dout, a.in.x.shape, "dout");
  detail::conv_check_shape(a.dx, a.in.x.shape, "dx");
  detail::conv_check_shape(a.dweight, a.in.weight.shape, "dweight");
  if (is_given(a.in.bias)) detail::conv_check_shape(a.dbias, Shape{s.channels}, "dbias");
  return s;
}

}  // namespace mambatrack
