// Mamba2 SSD (state-space duality) scan: argument structs and the validation shared by every
// backend. Per sequence and head h (group g = h / (nheads/ngroups)), with dt = clamp(softplus(
// dt_raw + dt_bias), dt_min, dt_max) (softplus threshold 20):
//   H_t = exp(dt_t·A_h)·H_{t-1} + dt_t · x_t ⊗ B_t[g]   (H: headdim × d_state, H_{-1} = initial)
//   y_t = H_t·C_t[g] + D_h·x_t
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/tensor.hpp"

namespace mambatrack {

namespace ssd_detail {
// Scalars of a storage type as double (bfloat16 has no arithmetic or comparisons of its own).
template <class T>
double as_double(T v) {
  if constexpr (std::is_arithmetic_v<T>) return static_cast<double>(v);
  else return static_cast<double>(static_cast<float>(v));
}
template <class T>
T infinity() {
  if constexpr (std::numeric_limits<T>::has_infinity) return std::numeric_limits<T>::infinity();
  else return T(std::numeric_limits<float>::infinity());
}
}  // namespace ssd_detail

// The inputs of the scan, common to forward and backward. Layout is token-major; a batch is a
// packed set of sequences given by cu_seqlens (batch + 1 offsets, cu[0] = 0, non-decreasing,
// cu[batch] = tokens); the state restarts at every sequence start. A padded batch of length L is
// cu = {0, L, 2L, ...}. Optional views are left unset ({}). Device = Cuda: every view (cu_seqlens
// included) lives on the device; the host then checks shapes only, not cu_seqlens' values.
template <class T, class Device = Host>
struct SsdInputs {
  View<const T, Device> x;              // (tokens, nheads, headdim)
  View<const T, Device> dt;             // (tokens, nheads), before bias and softplus
  View<const T, Device> dt_bias;        // (nheads), optional (empty: no bias)
  View<const T, Device> A;              // (nheads), negative (the layer passes -exp(A_log))
  View<const T, Device> B;              // (tokens, ngroups, d_state)
  View<const T, Device> C;              // (tokens, ngroups, d_state)
  View<const T, Device> D;              // (nheads), optional skip
  View<const T, Device> initial_state;  // (batch, nheads, headdim, d_state), optional (empty: zeros)
  View<const int64_t, Device> cu_seqlens;  // (batch + 1)
  T dt_min = T(0);              // dt clamp (Mamba2's dt_limit); the default (0, inf) is a no-op
  T dt_max = ssd_detail::infinity<T>();
  // Optional host-side upper bound on every sequence's length (0: unknown), a speed hint: the
  // CUDA SSD caps its chunk at it and, when every sequence then fits one chunk, runs no state
  // passing at all. It must be a true bound: a sequence longer than the chunk it picks gets NaN
  // outputs (and gradients), never silently wrong ones.
  int64_t max_seqlen_hint = 0;
};

template <class T, class Device = Host>
struct SsdFwdArgs {
  SsdInputs<T, Device> in;
  View<T, Device> y;            // (tokens, nheads, headdim), overwritten
  View<T, Device> final_state;  // (batch, nheads, headdim, d_state), optional, overwritten
  int64_t chunk_size = 64;      // chunked backends only; the result does not depend on it
  // Optional (null: none): the chunk-start states (fp32) for the backward with the same inputs
  // and chunk_size, so that it does not recompute them. A chunked backend (CUDA) resizes the
  // tensor when its shape differs (its shape is the backend's business; it may leave it empty
  // when its backward needs no states); other backends leave it untouched.
  Tensor<float, Device>* saved_states = nullptr;
};

// Backward: gradients of activations (dx, ddt, dB, dC, dinitial_state) are OVERWRITTEN;
// gradients of parameters (dA, dD, ddt_bias) are ACCUMULATED (+=) into the given buffers, so
// they can point into a flat gradient store. ddt is the gradient of the raw dt (before bias and
// softplus); it is 0 where the dt clamp is active. Optional outputs may be left unset ({}).
template <class T, class Device = Host>
struct SsdBwdArgs {
  SsdInputs<T, Device> in;
  View<const T, Device> dy;             // (tokens, nheads, headdim)
  View<const T, Device> dfinal_state;   // (batch, nheads, headdim, d_state), optional (empty: zeros)
  View<T, Device> dx;                   // like x
  View<T, Device> ddt;                  // like dt
  View<T, Device> dB;                   // like B
  View<T, Device> dC;                   // like C
  View<T, Device> dinitial_state;       // like initial_state, optional
  View<T, Device> dA;                   // (nheads), +=
  View<T, Device> dD;                   // (nheads), +=, optional (needed when D is given)
  View<T, Device> ddt_bias;             // (nheads), +=, optional (needed when dt_bias is given)
  int64_t chunk_size = 64;
  // Optional: SsdFwdArgs::saved_states as filled by the forward with the same inputs and
  // chunk_size (empty: recompute). Backends that recompute anyway ignore it.
  View<const float, Device> saved_states;
};

struct SsdDims {
  int64_t tokens = 0, nheads = 0, headdim = 0, ngroups = 0, d_state = 0, batch = 0;
  int64_t heads_per_group() const { return nheads / ngroups; }
};

namespace ssd_detail {

// An optional view is "not given" when it is default-constructed (no data, rank 0).
template <class U, class Device>
bool given(const View<U, Device>& v) {
  return v.data != nullptr || v.rank() > 0;
}

// Checks cu_seqlens against the token count: batch + 1 entries, starts at 0, non-decreasing,
// ends at tokens.
inline int64_t check_cu_seqlens(View<const int64_t> cu, int64_t tokens) {
  MAMBATRACK_CHECK_SHAPE(cu.rank() == 1 && cu.dim(0) >= 1,
                         "cu_seqlens must be a 1-d list of batch + 1 offsets, got shape ", cu.shape);
  MAMBATRACK_CHECK_SHAPE(cu.data != nullptr, "cu_seqlens has no data");
  const int64_t batch = cu.dim(0) - 1;
  MAMBATRACK_CHECK_SHAPE(cu[0] == 0, "cu_seqlens[0] must be 0, got ", cu[0]);
  for (int64_t b = 0; b < batch; ++b) {
    MAMBATRACK_CHECK_SHAPE(cu[b + 1] >= cu[b], "cu_seqlens must be non-decreasing: cu_seqlens[",
                           b, "] = ", cu[b], " > cu_seqlens[", b + 1, "] = ", cu[b + 1]);
  }
  MAMBATRACK_CHECK_SHAPE(cu[batch] == tokens, "cu_seqlens[", batch, "] = ", cu[batch],
                         " must equal the token count ", tokens);
  return batch;
}

// The batch size from cu_seqlens' shape only (device cu_seqlens: values are not readable here).
template <class Device>
int64_t batch_of_cu_seqlens(View<const int64_t, Device> cu, int64_t tokens) {
  if constexpr (std::is_same_v<Device, Host>) {
    return check_cu_seqlens(cu, tokens);
  } else {
    MAMBATRACK_CHECK_SHAPE(cu.rank() == 1 && cu.dim(0) >= 1,
                           "cu_seqlens must be a 1-d list of batch + 1 offsets, got shape ", cu.shape);
    MAMBATRACK_CHECK_SHAPE(cu.data != nullptr, "cu_seqlens has no data");
    return cu.dim(0) - 1;
  }
}

template <class U, class Device>
void check_optional_shape(const View<U, Device>& v, const Shape& want, const char* name) {
  MAMBATRACK_CHECK_SHAPE(!ssd_detail::given(v) || v.shape == want, name, " has shape ", v.shape,
                         ", expected ", want, " (or empty)");
}
template <class U, class Device>
void check_shape(const View<U, Device>& v, const Shape& want, const char* name) {
  MAMBATRACK_CHECK_SHAPE(v.shape == want, name, " has shape ", v.shape, ", expected ", want);
}

// softplus with PyTorch's threshold: x for x > 20, log1p(exp(x)) otherwise; its derivative.
template <class T>
inline T softplus_thresholded(T v) {
  return v > T(20) ? v : std::log1p(std::exp(v));
}
template <class T>
inline T softplus_thresholded_grad(T v) {
  return v > T(20) ? T(1) : T(1) / (T(1) + std::exp(-v));
}

}  // namespace ssd_detail

// Validates the inputs and returns the sizes. ShapeError names the offending tensor and shapes.
// On the host cu_seqlens' values are checked too; device cu_seqlens must be valid already.
template <class T, class Device>
SsdDims validate_ssd_inputs(const SsdInputs<T, Device>& in) {
  SsdDims d;
  MAMBATRACK_CHECK_SHAPE(in.x.rank() == 3, "x must be (tokens, nheads, headdim), got ", in.x.shape);
  MAMBATRACK_CHECK_SHAPE(in.B.rank() == 3, "B must be (tokens, ngroups, d_state), got ", in.B.shape);
  d.tokens = in.x.dim(0);
  d.nheads = in.x.dim(1);
  d.headdim = in.x.dim(2);
  d.ngroups = in.B.dim(1);
  d.d_state = in.B.dim(2);
  MAMBATRACK_CHECK_SHAPE(d.nheads > 0 && d.ngroups > 0 && d.nheads % d.ngroups == 0,
                         "nheads (", d.nheads, ", from x ", in.x.shape,
                         ") must be a positive multiple of ngroups (", d.ngroups, ", from B ",
                         in.B.shape, ")");
  ssd_detail::check_shape(in.dt, Shape{d.tokens, d.nheads}, "dt");
  ssd_detail::check_shape(in.B, Shape{d.tokens, d.ngroups, d.d_state}, "B");
  ssd_detail::check_shape(in.C, Shape{d.tokens, d.ngroups, d.d_state}, "C");
  ssd_detail::check_shape(in.A, Shape{d.nheads}, "A");
  ssd_detail::check_optional_shape(in.dt_bias, Shape{d.nheads}, "dt_bias");
  ssd_detail::check_optional_shape(in.D, Shape{d.nheads}, "D");
  d.batch = ssd_detail::batch_of_cu_seqlens<Device>(in.cu_seqlens, d.tokens);
  ssd_detail::check_optional_shape(in.initial_state, Shape{d.batch, d.nheads, d.headdim, d.d_state},
                               "initial_state");
  const double dt_min = ssd_detail::as_double(in.dt_min), dt_max = ssd_detail::as_double(in.dt_max);
  MAMBATRACK_CHECK(dt_min >= 0.0 && dt_max >= dt_min, ConfigError,
                   "dt limits must satisfy 0 <= dt_min <= dt_max, got (", dt_min, ", ", dt_max, ")");
  return d;
}

template <class T, class Device>
SsdDims validate_ssd_fwd(const SsdFwdArgs<T, Device>& a) {
  const SsdDims d = validate_ssd_inputs(a.in);
  ssd_detail::check_shape(a.y, Shape{d.tokens, d.nheads, d.headdim}, "y");
  ssd_detail::check_optional_shape(a.final_state, Shape{d.batch, d.nheads, d.headdim, d.d_state},
                               "final_state");
  MAMBATRACK_CHECK(a.chunk_size >= 1, ConfigError, "chunk_size must be >= 1, got ", a.chunk_size);
  return d;
}

template <class T, class Device>
SsdDims validate_ssd_bwd(const SsdBwdArgs<T, Device>& a) {
  const SsdDims d = validate_ssd_inputs(a.in);
  const Shape state{d.batch, d.nheads, d.headdim, d.d_state};
  ssd_detail::check_shape(a.dy, Shape{d.tokens, d.nheads, d.headdim}, "dy");
  ssd_detail::check_optional_shape(a.dfinal_state, state, "dfinal_state");
  ssd_detail::check_shape(a.dx, a.in.x.shape, "dx");
  ssd_detail::check_shape(a.ddt, a.in.dt.shape, "ddt");
  ssd_detail::check_shape(a.dB, a.in.B.shape, "dB");
  ssd_detail::check_shape(a.dC, a.in.C.shape, "dC");
  ssd_detail::check_optional_shape(a.dinitial_state, state, "dinitial_state");
  ssd_detail::check_shape(a.dA, Shape{d.nheads}, "dA");
  ssd_detail::check_optional_shape(a.dD, Shape{d.nheads}, "dD");
  ssd_detail::check_optional_shape(a.ddt_bias, Shape{d.nheads}, "ddt_bias");
  MAMBATRACK_CHECK_SHAPE(!ssd_detail::given(a.in.D) || ssd_detail::given(a.dD), "D is given, so dD must be given too");
  MAMBATRACK_CHECK_SHAPE(!ssd_detail::given(a.in.dt_bias) || ssd_detail::given(a.ddt_bias),
                         "dt_bias is given, so ddt_bias must be given too");
  MAMBATRACK_CHECK(a.chunk_size >= 1, ConfigError, "chunk_size must be >= 1, got ", a.chunk_size);
  return d;
}

}  // namespace mambatrack
