// Reference Mamba-1 selective scan in double precision with plain loops (tests and golden checks
// only): the forward of ops/selective_scan.hpp, and its backward by a full forward recompute per
// (sequence, channel) followed by the reverse-time recurrence g_{t-1} = exp(Δ_t·A) ⊙ g_t + dy_{t-1}·C_{t-1}.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "mambatrack/ops/reference/activations.hpp"
#include "mambatrack/ops/selective_scan.hpp"

namespace mambatrack::reference {

namespace scan_detail {
// Δ = softplus(raw) with the reference's threshold 20.
inline double softplus(double x) { return x <= 20.0 ? std::log1p(std::exp(x)) : x; }
}  // namespace scan_detail

// Writes out, and final_state / saved_states when given (saved slot layout: selective_scan_slot).
inline void selective_scan_fwd(const SelectiveScanFwdArgs<double>& a) {
  const SelectiveScanSizes s = validate_selective_scan(a);
  const SelectiveScanInputs<double>& in = a.in;
  validate_cu_seqlens(in.cu_seqlens, s.tokens, "selective_scan");
  const int64_t N = s.d_state, per_group = s.dim / s.ngroups;
  std::vector<double> h(static_cast<std::size_t>(N));
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t start = in.cu_seqlens[b], end = in.cu_seqlens[b + 1];
    for (int64_t d = 0; d < s.dim; ++d) {
      const int64_t g = d / per_group;
      for (int64_t n = 0; n < N; ++n) h[n] = is_given(in.initial_state) ? in.initial_state.at(b, d, n) : 0.0;
      for (int64_t t = start; t < end; ++t) {
        if ((t - start) % in.chunk == 0 && is_given(a.saved_states)) {
          const int64_t slot = selective_scan_slot(b, start, (t - start) / in.chunk, in.chunk);
          for (int64_t n = 0; n < N; ++n) a.saved_states.at(slot, d, n) = h[n];
        }
        double dt = in.delta.at(t, d) + (is_given(in.delta_bias) ? in.delta_bias[d] : 0.0);
        if (in.delta_softplus) dt = scan_detail::softplus(dt);
        const double u = in.u.at(t, d);
        double y = is_given(in.D) ? in.D[d] * u : 0.0;
        for (int64_t n = 0; n < N; ++n) {
          h[n] = std::exp(dt * in.A.at(d, n)) * h[n] + dt * in.B.at(t, g, n) * u;
          y += in.C.at(t, g, n) * h[n];
        }
        if (is_given(in.z)) {
          const double z = in.z.at(t, d);
          y *= z * sigmoid(z);
        }
        a.out.at(t, d) = y;
      }
      if (is_given(a.final_state))
        for (int64_t n = 0; n < N; ++n) a.final_state.at(b, d, n) = h[n];
    }
  }
}

// Overwrites du, ddelta, dB, dC, dz, dinitial_state; accumulates into dA, dD, ddelta_bias.
// Ignores saved_states (recomputes every sequence from its start).
inline void selective_scan_bwd(const SelectiveScanBwdArgs<double>& a) {
  const SelectiveScanSizes s = validate_selective_scan(a, /*require_saved=*/false);
  const SelectiveScanInputs<double>& in = a.in;
  validate_cu_seqlens(in.cu_seqlens, s.tokens, "selective_scan");
  const int64_t N = s.d_state, per_group = s.dim / s.ngroups;
  fill(a.dB, 0.0);
  fill(a.dC, 0.0);
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t start = in.cu_seqlens[b], end = in.cu_seqlens[b + 1], len = end - start;
    for (int64_t d = 0; d < s.dim; ++d) {
      const int64_t g = d / per_group;
      // Forward recompute: hs[i] is the state after token start + i - 1 (hs[0]: the initial state).
      std::vector<std::vector<double>> hs(static_cast<std::size_t>(len + 1), std::vector<double>(N));
      std::vector<double> dts(static_cast<std::size_t>(len)), ys(static_cast<std::size_t>(len));
      for (int64_t n = 0; n < N; ++n) hs[0][n] = is_given(in.initial_state) ? in.initial_state.at(b, d, n) : 0.0;
      for (int64_t i = 0; i < len; ++i) {
        const int64_t t = start + i;
        double dt = in.delta.at(t, d) + (is_given(in.delta_bias) ? in.delta_bias[d] : 0.0);
        if (in.delta_softplus) dt = scan_detail::softplus(dt);
        const double u = in.u.at(t, d);
        double y = is_given(in.D) ? in.D[d] * u : 0.0;
        for (int64_t n = 0; n < N; ++n) {
          hs[i + 1][n] = std::exp(dt * in.A.at(d, n)) * hs[i][n] + dt * in.B.at(t, g, n) * u;
          y += in.C.at(t, g, n) * hs[i + 1][n];
        }
        dts[i] = dt;
        ys[i] = y;  // before the gate
      }
      // Reverse walk; gh[n] = ∂L/∂h_t once dy_t·C_t is added.
      std::vector<double> gh(static_cast<std::size_t>(N));
      for (int64_t n = 0; n < N; ++n) gh[n] = is_given(a.dfinal_state) ? a.dfinal_state.at(b, d, n) : 0.0;
      for (int64_t i = len - 1; i >= 0; --i) {
        const int64_t t = start + i;
        const double u = in.u.at(t, d), dt = dts[i];
        double dy = a.dout.at(t, d);
        if (is_given(in.z)) {
          const double z = in.z.at(t, d), sg = sigmoid(z);
          a.dz.at(t, d) = dy * ys[i] * sg * (1.0 + z * (1.0 - sg));  // d silu(z)/dz = σ(1 + z(1-σ))
          dy *= z * sg;
        }
        double du = 0.0, ddt = 0.0;
        if (is_given(in.D)) {
          du = dy * in.D[d];
          a.dD[d] += dy * u;
        }
        for (int64_t n = 0; n < N; ++n) {
          const double A = in.A.at(d, n), Bn = in.B.at(t, g, n), decay = std::exp(dt * A);
          gh[n] += dy * in.C.at(t, g, n);
          a.dC.at(t, g, n) += dy * hs[i + 1][n];
          a.dB.at(t, g, n) += gh[n] * dt * u;
          du += gh[n] * dt * Bn;
          // h_t = exp(Δ·A)·h_{t-1} + Δ·B·u: ∂/∂Δ = A·exp(Δ·A)·h_{t-1} + B·u, ∂/∂A = Δ·exp(Δ·A)·h_{t-1}.
          ddt += gh[n] * (A * decay * hs[i][n] + Bn * u);
          a.dA.at(d, n) += gh[n] * dt * decay * hs[i][n];
          gh[n] *= decay;
        }
        if (in.delta_softplus) {
          const double raw = in.delta.at(t, d) + (is_given(in.delta_bias) ? in.delta_bias[d] : 0.0);
          if (raw <= 20.0) ddt *= sigmoid(raw);  // softplus' = σ; identity above the threshold
        }
        a.du.at(t, d) = du;
        a.ddelta.at(t, d) = ddt;
        if (is_given(in.delta_bias)) a.ddelta_bias[d] += ddt;
      }
      if (is_given(a.dinitial_state))
        for (int64_t n = 0; n < N; ++n) a.dinitial_state.at(b, d, n) = gh[n];
    }
  }
}

}  // namespace mambatrack::reference
