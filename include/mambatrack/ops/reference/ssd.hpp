// Reference Mamba2 SSD scan in double: the plain sequential recurrence, token by token,
//   H_t = exp(dt_t·A)·H_{t-1} + dt_t · x_t ⊗ B_t,  y_t = H_t·C_t + D·x_t,
// and its backward (reverse recurrence over stored states). For tests only: it keeps every H_t
// of one (sequence, head) in memory and is not fast.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "mambatrack/ops/ssd.hpp"

namespace mambatrack::reference {

namespace detail_ssd {
// dt after bias, softplus and clamp, and d(dt)/d(dt_raw) (0 where the clamp is active).
inline void discretize_dt(const SsdInputs<double>& in, int64_t t, int64_t h, double& dt,
                          double& grad) {
  const double v = in.dt.at(t, h) + (!ssd_detail::given(in.dt_bias) ? 0.0 : in.dt_bias[h]);
  const double sp = ssd_detail::softplus_thresholded(v);
  if (sp < in.dt_min) {
    dt = in.dt_min, grad = 0;
  } else if (sp > in.dt_max) {
    dt = in.dt_max, grad = 0;
  } else {
    dt = sp, grad = ssd_detail::softplus_thresholded_grad(v);
  }
}
}  // namespace detail_ssd

inline void ssd_fwd(const SsdFwdArgs<double>& args) {
  const SsdDims d = validate_ssd_fwd(args);
  const SsdInputs<double>& in = args.in;
  const int64_t P = d.headdim, N = d.d_state;
  std::vector<double> H(P * N);
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t h = 0; h < d.nheads; ++h) {
      const int64_t g = h / d.heads_per_group();
      for (int64_t i = 0; i < P * N; ++i)
        H[i] = !ssd_detail::given(in.initial_state) ? 0.0 : in.initial_state.at(b, h, i / N, i % N);
      for (int64_t t = in.cu_seqlens[b]; t < in.cu_seqlens[b + 1]; ++t) {
        double dt, unused;
        detail_ssd::discretize_dt(in, t, h, dt, unused);
        const double decay = std::exp(dt * in.A[h]);
        for (int64_t p = 0; p < P; ++p) {
          double acc = 0;
          for (int64_t n = 0; n < N; ++n) {
            double& s = H[p * N + n];
            s = decay * s + dt * in.x.at(t, h, p) * in.B.at(t, g, n);
            acc += s * in.C.at(t, g, n);
          }
          args.y.at(t, h, p) = acc + (!ssd_detail::given(in.D) ? 0.0 : in.D[h] * in.x.at(t, h, p));
        }
      }
      if (ssd_detail::given(args.final_state))
        for (int64_t i = 0; i < P * N; ++i) args.final_state.at(b, h, i / N, i % N) = H[i];
    }
  }
}

// Overwrites dx, ddt, dB, dC, dinitial_state; accumulates into dA, dD, ddt_bias.
inline void ssd_bwd(const SsdBwdArgs<double>& args) {
  const SsdDims d = validate_ssd_bwd(args);
  const SsdInputs<double>& in = args.in;
  const int64_t P = d.headdim, N = d.d_state;
  fill(args.dB, 0.0);  // summed over the heads of a group
  fill(args.dC, 0.0);
  std::vector<double> states, dH(P * N);
  for (int64_t b = 0; b < d.batch; ++b) {
    const int64_t t0 = in.cu_seqlens[b], len = in.cu_seqlens[b + 1] - t0;
    for (int64_t h = 0; h < d.nheads; ++h) {
      const int64_t g = h / d.heads_per_group();
      // Forward again, keeping H_{t-1} for every t: states[(t - t0 + 1)] = H_t, states[0] = H_{-1}.
      states.assign((len + 1) * P * N, 0.0);
      if (ssd_detail::given(in.initial_state))
        for (int64_t i = 0; i < P * N; ++i) states[i] = in.initial_state.at(b, h, i / N, i % N);
      for (int64_t k = 0; k < len; ++k) {
        double dt, unused;
        detail_ssd::discretize_dt(in, t0 + k, h, dt, unused);
        const double decay = std::exp(dt * in.A[h]);
        for (int64_t p = 0; p < P; ++p)
          for (int64_t n = 0; n < N; ++n)
            states[(k + 1) * P * N + p * N + n] =
                decay * states[k * P * N + p * N + n] +
                dt * in.x.at(t0 + k, h, p) * in.B.at(t0 + k, g, n);
      }
      for (int64_t i = 0; i < P * N; ++i)
        dH[i] = !ssd_detail::given(args.dfinal_state) ? 0.0 : args.dfinal_state.at(b, h, i / N, i % N);
      for (int64_t k = len - 1; k >= 0; --k) {
        const int64_t t = t0 + k;
        double dt, dt_grad;
        detail_ssd::discretize_dt(in, t, h, dt, dt_grad);
        const double decay = std::exp(dt * in.A[h]);
        const double* Hk = &states[(k + 1) * P * N];
        const double* Hprev = &states[k * P * N];
        // y_t = H_t C_t + D x_t
        for (int64_t p = 0; p < P; ++p) {
          const double dy = args.dy.at(t, h, p);
          for (int64_t n = 0; n < N; ++n) {
            dH[p * N + n] += dy * in.C.at(t, g, n);
            args.dC.at(t, g, n) += Hk[p * N + n] * dy;
          }
        }
        double ddt = 0, ddecay = 0;
        for (int64_t p = 0; p < P; ++p) {
          const double x = in.x.at(t, h, p), dy = args.dy.at(t, h, p);
          double dx = !ssd_detail::given(in.D) ? 0.0 : in.D[h] * dy;
          if (ssd_detail::given(in.D)) args.dD[h] += dy * x;
          // H_t = decay·H_{t-1} + dt·x ⊗ B
          for (int64_t n = 0; n < N; ++n) {
            const double g_pn = dH[p * N + n], B = in.B.at(t, g, n);
            dx += dt * g_pn * B;
            args.dB.at(t, g, n) += dt * g_pn * x;
            ddt += g_pn * x * B;
            ddecay += g_pn * Hprev[p * N + n];
          }
          args.dx.at(t, h, p) = dx;
        }
        // decay = exp(dt·A)
        ddt += ddecay * decay * in.A[h];
        args.dA[h] += ddecay * decay * dt;
        const double ddt_raw = ddt * dt_grad;
        args.ddt.at(t, h) = ddt_raw;
        if (ssd_detail::given(in.dt_bias)) args.ddt_bias[h] += ddt_raw;
        for (int64_t i = 0; i < P * N; ++i) dH[i] *= decay;
      }
      if (ssd_detail::given(args.dinitial_state))
        for (int64_t i = 0; i < P * N; ++i) args.dinitial_state.at(b, h, i / N, i % N) = dH[i];
    }
  }
}

}  // namespace mambatrack::reference
