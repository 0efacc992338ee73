// Mamba-1 selective scan: the argument structs and shape checks shared by every backend.
//   Δ_t = softplus(delta_t + delta_bias) (or without softplus), h_t = exp(Δ_t·A) ⊙ h_{t-1} + Δ_t·B_t·u_t,
//   y_t = <C_t, h_t> + D·u_t, out_t = y_t · silu(z_t) (when z is given); h resets at every sequence
//   start (to initial_state[b] or 0). Token-major layout, channels contiguous (DESIGN.md §3, §8).
#pragma once

#include <cstdint>

#include "mambatrack/core/dtype.hpp"
#include "mambatrack/core/error.hpp"
#include "mambatrack/core/tensor.hpp"
#include "mambatrack/ops/args.hpp"

namespace mambatrack {

// The type of the scan's states (initial, final, the saved chunk starts and their gradients): the
// storage type, except that bfloat16 storage keeps them in float — mixed precision runs the
// recurrence in fp32 and saves fp32 states for the backward's recompute, as mamba_ssm does.
template <class T>
struct ScanState {
  using type = T;
};
template <>
struct ScanState<bfloat16> {
  using type = float;
};
template <class T>
using scan_state_t = typename ScanState<T>::type;

// Inputs of the scan. Shapes (tokens = cu_seqlens[batch], G = ngroups, N = d_state):
//   u, delta, z: (tokens, dim);  A: (dim, N), already negative (A = -exp(A_log));
//   B, C: (tokens, G, N), channel d uses group d / (dim / G);  D, delta_bias: (dim);
//   initial_state: (batch, dim, N), of scan_state_t<T>;  cu_seqlens: (batch + 1), 0 = cu[0] <= ... <= cu[batch] = tokens.
// D, delta_bias, z and initial_state are optional.
template <class T, class Device = Host>
struct SelectiveScanInputs {
  View<const T, Device> u, delta, A, B, C;
  View<const T, Device> D, delta_bias, z;                  // optional
  View<const scan_state_t<T>, Device> initial_state;       // optional
  View<const int64_t, Device> cu_seqlens;
  bool delta_softplus = true;
  // The forward saves h at the start of every `chunk` tokens of each sequence; the backward
  // recomputes inside one chunk at a time from those states. Memory/recompute trade-off only:
  // the results do not depend on it.
  int64_t chunk = 64;
  // Optional host-side upper bound on every sequence's length (0: unknown). Only a speed hint:
  // the CUDA scan runs one pass per direction, without the cross-chunk combine, when it is
  // <= chunk (its results do not depend on it, and a wrong bound costs time, not correctness).
  int64_t max_seqlen_hint = 0;
};

// Forward: out (tokens, dim); final_state (batch, dim, N) optional; saved_states with the shape
// selective_scan_saved_shape() (needed by the backward; may be absent when no backward follows).
template <class T, class Device = Host>
struct SelectiveScanFwdArgs {
  SelectiveScanInputs<T, Device> in;
  View<T, Device> out;
  View<scan_state_t<T>, Device> final_state;   // optional
  View<scan_state_t<T>, Device> saved_states;  // optional
};

// Backward of L(out, final_state) given dout = ∂L/∂out (tokens, dim) and, optionally,
// dfinal_state = ∂L/∂final_state (batch, dim, N).
// Gradients of activations are OVERWRITTEN: du, ddelta (w.r.t. the raw delta, before bias and
// softplus), dB, dC, dz (required when z is given), dinitial_state (optional, only with an
// initial_state). Gradients of parameters are ACCUMULATED (+=): dA, dD (when D is given),
// ddelta_bias (when delta_bias is given) — the trainer zeroes one flat gradient buffer per step.
template <class T, class Device = Host>
struct SelectiveScanBwdArgs {
  SelectiveScanInputs<T, Device> in;
  View<const scan_state_t<T>, Device> saved_states;  // from the forward with the same inputs and chunk
  View<const T, Device> dout;
  View<const scan_state_t<T>, Device> dfinal_state;  // optional
  View<T, Device> du, ddelta, dB, dC, dz;             // overwritten
  View<scan_state_t<T>, Device> dinitial_state;       // overwritten
  View<T, Device> dA, dD, ddelta_bias;                     // accumulated
};

struct SelectiveScanSizes {
  int64_t tokens = 0, dim = 0, d_state = 0, ngroups = 0, batch = 0;
};

// Chunk-start states: sequence b starting at token `start` keeps the state entering its chunk k
// in slot b + start / chunk + k. Slots of different sequences never collide (see
// selective_scan_saved_shape), and the count depends on sizes only, not on cu_seqlens' values,
// so a device backend can size the buffer without reading them.
inline int64_t selective_scan_slot(int64_t b, int64_t start, int64_t k, int64_t chunk) {
  return b + start / chunk + k;
}
// (batch + tokens / chunk, dim, d_state): the last slot used is at most
// batch - 1 + floor(tokens / chunk), since floor(s/c) + ceil(l/c) <= floor((s+l)/c) + 1.
inline Shape selective_scan_saved_shape(int64_t batch, int64_t tokens, int64_t dim, int64_t d_state,
                                        int64_t chunk) {
  MAMBATRACK_CHECK(chunk >= 1, ConfigError, "selective scan chunk must be >= 1, got ", chunk);
  return Shape{batch + tokens / chunk, dim, d_state};
}

namespace detail {
template <class V>
void scan_check_shape(const V& v, const Shape& want, const char* name) {
  MAMBATRACK_CHECK_SHAPE(v.shape == want, "selective_scan: ", name, " has shape ", v.shape,
                         ", expected ", want);
}
template <class V>
void scan_check_optional(const V& v, const Shape& want, const char* name) {
  if (is_given(v)) scan_check_shape(v, want, name);
}
}  // namespace detail

// Shape checks of the inputs (device-agnostic: cu_seqlens' values are checked by
// validate_cu_seqlens on the host). Returns the sizes.
template <class T, class Device>
SelectiveScanSizes validate_selective_scan_inputs(const SelectiveScanInputs<T, Device>& in) {
  SelectiveScanSizes s;
  MAMBATRACK_CHECK_SHAPE(in.u.rank() == 2, "selective_scan: u must be (tokens, dim), got ", in.u.shape);
  s.tokens = in.u.dim(0);
  s.dim = in.u.dim(1);
  MAMBATRACK_CHECK_SHAPE(in.A.rank() == 2 && in.A.dim(0) == s.dim,
                         "selective_scan: A must be (dim, d_state) = (", s.dim, ", N), got ", in.A.shape);
  s.d_state = in.A.dim(1);
  MAMBATRACK_CHECK_SHAPE(in.B.rank() == 3 && in.B.dim(0) == s.tokens && in.B.dim(2) == s.d_state,
                         "selective_scan: B must be (tokens, ngroups, d_state) = (", s.tokens, ", G, ",
                         s.d_state, "), got ", in.B.shape);
  s.ngroups = in.B.dim(1);
  MAMBATRACK_CHECK_SHAPE(s.ngroups >= 1 && s.dim % s.ngroups == 0, "selective_scan: dim ", s.dim,
                         " is not a multiple of ngroups ", s.ngroups, " (B ", in.B.shape, ")");
  MAMBATRACK_CHECK_SHAPE(in.cu_seqlens.rank() == 1 && in.cu_seqlens.dim(0) >= 2,
                         "selective_scan: cu_seqlens must be (batch + 1) with batch >= 1, got ",
                         in.cu_seqlens.shape);
  s.batch = in.cu_seqlens.dim(0) - 1;
  MAMBATRACK_CHECK(in.chunk >= 1, ConfigError, "selective_scan: chunk must be >= 1, got ", in.chunk);
  const Shape td{s.tokens, s.dim};
  detail::scan_check_shape(in.delta, td, "delta");
  detail::scan_check_shape(in.C, in.B.shape, "C");
  detail::scan_check_optional(in.z, td, "z");
  detail::scan_check_optional(in.D, Shape{s.dim}, "D");
  detail::scan_check_optional(in.delta_bias, Shape{s.dim}, "delta_bias");
  detail::scan_check_optional(in.initial_state, Shape{s.batch, s.dim, s.d_state}, "initial_state");
  return s;
}

// The saved-state shape for these inputs (what a layer allocates before the forward).
template <class T, class Device>
Shape selective_scan_saved_shape(const SelectiveScanInputs<T, Device>& in) {
  const SelectiveScanSizes s = validate_selective_scan_inputs(in);
  return selective_scan_saved_shape(s.batch, s.tokens, s.dim, s.d_state, in.chunk);
}

template <class T, class Device>
SelectiveScanSizes validate_selective_scan(const SelectiveScanFwdArgs<T, Device>& a) {
  const auto s = validate_selective_scan_inputs(a.in);
  detail::scan_check_shape(a.out, Shape{s.tokens, s.dim}, "out");
  detail::scan_check_optional(a.final_state, Shape{s.batch, s.dim, s.d_state}, "final_state");
  detail::scan_check_optional(a.saved_states,
                         selective_scan_saved_shape(s.batch, s.tokens, s.dim, s.d_state, a.in.chunk),
                         "saved_states");
  return s;
}

// require_saved: backends that recompute from chunk states need them (the reference does not).
template <class T, class Device>
SelectiveScanSizes validate_selective_scan(const SelectiveScanBwdArgs<T, Device>& a, bool require_saved) {
  const auto s = validate_selective_scan_inputs(a.in);
  const Shape td{s.tokens, s.dim}, state{s.batch, s.dim, s.d_state};
  const Shape saved = selective_scan_saved_shape(s.batch, s.tokens, s.dim, s.d_state, a.in.chunk);
  if (require_saved) detail::scan_check_shape(a.saved_states, saved, "saved_states");
  else detail::scan_check_optional(a.saved_states, saved, "saved_states");
  detail::scan_check_shape(a.dout, td, "dout");
  detail::scan_check_optional(a.dfinal_state, state, "dfinal_state");
  detail::scan_check_shape(a.du, td, "du");
  detail::scan_check_shape(a.ddelta, td, "ddelta");
  detail::scan_check_shape(a.dB, a.in.B.shape, "dB");
  detail::scan_check_shape(a.dC, a.in.B.shape, "dC");
  detail::scan_check_shape(a.dA, a.in.A.shape, "dA");
  if (is_given(a.in.z)) detail::scan_check_shape(a.dz, td, "dz");
  if (is_given(a.in.D)) detail::scan_check_shape(a.dD, Shape{s.dim}, "dD");
  if (is_given(a.in.delta_bias)) detail::scan_check_shape(a.ddelta_bias, Shape{s.dim}, "ddelta_bias");
  if (is_given(a.dinitial_state)) {
    MAMBATRACK_CHECK_SHAPE(is_given(a.in.initial_state),
                           "selective_scan: dinitial_state requested without an initial_state");
    detail::scan_check_shape(a.dinitial_state, state, "dinitial_state");
  }
  return s;
}

}  // namespace mambatrack
