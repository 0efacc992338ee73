// CPU Mamba2 SSD scan in float, chunked form (Mamba-2 paper, Listing 1): within a chunk of Q
// tokens with cs_t = Σ_{k≤t} dt_k·A,
//   y_t = Σ_{s≤t} (C_t·B_s)·exp(cs_t − cs_s)·dt_s·x_s + exp(cs_t)·H_in·C_t + D·x_t
//   H_out = exp(cs_last)·H_in + Σ_s exp(cs_last − cs_s)·dt_s·x_s ⊗ B_s,
// chunks chained per (sequence, head) and never crossing a sequence end; backward recomputes
// the chunk states and runs the same products transposed. Same result as reference::ssd_fwd.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <Eigen/Core>

#include "mambatrack/core/parallel.hpp"
#include "mambatrack/core/supported.hpp"
#include "mambatrack/ops/ssd.hpp"

namespace mambatrack::cpu {

namespace detail_ssd {

using MatR = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapR = Eigen::Map<MatR>;
using MapS = Eigen::Map<MatR, 0, Eigen::OuterStride<>>;         // rows of a token-major tensor
using MapSC = Eigen::Map<const MatR, 0, Eigen::OuterStride<>>;

// Scratch of one worker thread, grown on demand and kept between calls (no allocation in the
// steady state of a training loop).
struct Workspace {
  std::vector<float> cb, dcb, states, mat, dmat, lp, lp2, ln, pn, dpn, vec;
  static void need(std::vector<float>& v, std::size_t n) {
    if (v.size() < n) v.resize(n);
  }
};
inline Workspace& workspace() {
  thread_local Workspace ws;
  return ws;
}

// Per-chunk scalars of one head: dt (after bias, softplus, clamp), d dt/d dt_raw, cs = cumsum(dt·A).
struct ChunkScalars {
  float* dt;
  float* grad;
  float* cs;
  float* e;      // exp(cs_t)
  float* w;      // exp(cs_last − cs_s)
  float* ie;     // exp(−cs_s), valid when `factored`
  float* aux;    // backward scratch (4 vectors of Q)
  bool factored = false;
};

// Within a chunk exp(cs_t − cs_s) = exp(cs_t)·exp(−cs_s) when every |cs| stays below this bound
// (both factors then lie in [e^−60, e^60], far from float under/overflow): Q exps instead of Q²/2.
constexpr float kFactorLimit = 60.0f;

inline void chunk_scalars(const SsdInputs<float>& in, int64_t nheads, int64_t h, int64_t t0,
                          int64_t len, ChunkScalars& s) {
  const float bias = !ssd_detail::given(in.dt_bias) ? 0.0f : in.dt_bias[h];
  const float A = in.A[h];
  float run = 0;
  for (int64_t k = 0; k < len; ++k) {
    const float v = in.dt[(t0 + k) * nheads + h] + bias;
    const float sp = ssd_detail::softplus_thresholded(v);
    float dt = sp, g = ssd_detail::softplus_thresholded_grad(v);
    if (sp < in.dt_min) dt = in.dt_min, g = 0;
    if (sp > in.dt_max) dt = in.dt_max, g = 0;
    s.dt[k] = dt;
    s.grad[k] = g;
    run += dt * A;
    s.cs[k] = run;
  }
  const float last = len > 0 ? s.cs[len - 1] : 0.0f;
  for (int64_t k = 0; k < len; ++k) {
    s.e[k] = std::exp(s.cs[k]);
    s.w[k] = std::exp(last - s.cs[k]);
  }
  // cs is monotonic (all dt·A of one sign), so its extremes are the ends.
  s.factored = len == 0 || (std::fabs(s.cs[0]) <= kFactorLimit && std::fabs(last) <= kFactorLimit);
  if (s.factored)
    for (int64_t k = 0; k < len; ++k) s.ie[k] = std::exp(-s.cs[k]);
}

template <int N, int P>
struct SsdChunked {
  static constexpr int kDState = N;
  static constexpr int kHeadDim = P;

  static MapSC rows_x(const float* base, const SsdDims& d, int64_t t, int64_t len, int64_t h) {
    return MapSC(base + (t * d.nheads + h) * P, len, P, Eigen::OuterStride<>(d.nheads * P));
  }
  static MapS rows_y(float* base, const SsdDims& d, int64_t t, int64_t len, int64_t h) {
    return MapS(base + (t * d.nheads + h) * P, len, P, Eigen::OuterStride<>(d.nheads * P));
  }
  static MapSC rows_bc(const float* base, const SsdDims& d, int64_t t, int64_t len, int64_t g) {
    return MapSC(base + (t * d.ngroups + g) * N, len, N, Eigen::OuterStride<>(d.ngroups * N));
  }
  static MapS rows_dbc(float* base, const SsdDims& d, int64_t t, int64_t len, int64_t g) {
    return MapS(base + (t * d.ngroups + g) * N, len, N, Eigen::OuterStride<>(d.ngroups * N));
  }

  // CB[c] = C_c·B_cᵀ for every chunk of the sequence (shared by the heads of the group).
  static void chunk_cb(const SsdInputs<float>& in, const SsdDims& d, int64_t g, int64_t t0,
                       int64_t len, int64_t Q, float* cb) {
    for (int64_t c = 0; c * Q < len; ++c) {
      const int64_t lc = std::min(Q, len - c * Q), t = t0 + c * Q;
      MapR(cb + c * Q * Q, lc, lc).noalias() =
          rows_bc(in.C.data, d, t, lc, g) * rows_bc(in.B.data, d, t, lc, g).transpose();
    }
  }

  // The causal decay matrix of a chunk: Lm[t,s] = exp(cs_t − cs_s) for s ≤ t (entries above
  // the diagonal are not written and never read).
  static void decay_matrix(const ChunkScalars& sc, int64_t lc, float* Lm) {
    for (int64_t t = 0; t < lc; ++t) {
      float* lr = Lm + t * lc;
      if (sc.factored) {
        const float et = sc.e[t];
        for (int64_t s = 0; s <= t; ++s) lr[s] = et * sc.ie[s];
      } else {
        const float ct = sc.cs[t];
        for (int64_t s = 0; s <= t; ++s) lr[s] = std::exp(ct - sc.cs[s]);
      }
    }
  }

  static void load_state(const SsdInputs<float>& in, int64_t b, int64_t h, const SsdDims& d,
                         float* S) {
    if (!ssd_detail::given(in.initial_state)) {
      std::fill(S, S + P * N, 0.0f);
    } else {
      const float* src = in.initial_state.data + ((b * d.nheads + h) * P) * N;
      std::copy(src, src + P * N, S);
    }
  }

  // One (sequence, group) and heads [h_begin, h_end) of that group, chunk by chunk.
  static void fwd_task(const SsdFwdArgs<float>& a, const SsdDims& d, int64_t b, int64_t g,
                       int64_t h_begin, int64_t h_end) {
    const SsdInputs<float>& in = a.in;
    const int64_t t0 = in.cu_seqlens[b], len = in.cu_seqlens[b + 1] - t0;
    const int64_t Q = std::min<int64_t>(a.chunk_size, std::max<int64_t>(len, 1));
    const int64_t nch = (len + Q - 1) / Q;
    Workspace& ws = workspace();
    Workspace::need(ws.cb, std::max<int64_t>(nch, 1) * Q * Q);
    Workspace::need(ws.mat, Q * Q);
    Workspace::need(ws.lp, Q * P);
    Workspace::need(ws.pn, P * N);
    Workspace::need(ws.vec, 10 * Q);
    chunk_cb(in, d, g, t0, len, Q, ws.cb.data());
    ChunkScalars sc{ws.vec.data(),         ws.vec.data() + Q,     ws.vec.data() + 2 * Q,
                    ws.vec.data() + 3 * Q, ws.vec.data() + 4 * Q, ws.vec.data() + 5 * Q,
                    ws.vec.data() + 6 * Q};
    for (int64_t h = h_begin; h < h_end; ++h) {
      MapR S(ws.pn.data(), P, N);
      load_state(in, b, h, d, S.data());
      const float Dh = !ssd_detail::given(in.D) ? 0.0f : in.D[h];
      for (int64_t c = 0; c < nch; ++c) {
        const int64_t lc = std::min(Q, len - c * Q), t = t0 + c * Q;
        chunk_scalars(in, d.nheads, h, t, lc, sc);
        const auto X = rows_x(in.x.data, d, t, lc, h);
        const auto Bm = rows_bc(in.B.data, d, t, lc, g);
        const auto Cm = rows_bc(in.C.data, d, t, lc, g);
        auto Y = rows_y(a.y.data, d, t, lc, h);
        // M[t,s] = CB[t,s]·exp(cs_t − cs_s)·dt_s (causal); Y = M·X.
        float* M = ws.mat.data();
        const float* cb = ws.cb.data() + c * Q * Q;
        decay_matrix(sc, lc, M);
        for (int64_t r = 0; r < lc; ++r) {
          float* mr = M + r * lc;
          const float* cbr = cb + r * lc;
          for (int64_t s = 0; s <= r; ++s) mr[s] *= cbr[s] * sc.dt[s];
          for (int64_t s = r + 1; s < lc; ++s) mr[s] = 0.0f;
        }
        Y.noalias() = MapR(M, lc, lc) * X;
        // + exp(cs_t)·C_t·H_inᵀ and the D skip.
        MapR CS(ws.lp.data(), lc, P);
        CS.noalias() = Cm * S.transpose();
        for (int64_t r = 0; r < lc; ++r) Y.row(r) += sc.e[r] * CS.row(r) + Dh * X.row(r);
        // H_out = exp(cs_last)·H_in + (w ∘ X)ᵀ·B.
        MapR WX(ws.lp.data(), lc, P);
        for (int64_t r = 0; r < lc; ++r) WX.row(r) = (sc.w[r] * sc.dt[r]) * X.row(r);
        S *= sc.e[lc - 1];
        S.noalias() += WX.transpose() * Bm;
      }
      if (ssd_detail::given(a.final_state)) {
        float* dst = a.final_state.data + ((b * d.nheads + h) * P) * N;
        std::copy(S.data(), S.data() + P * N, dst);
      }
    }
  }

  static void bwd_task(const SsdBwdArgs<float>& a, const SsdDims& d, int64_t b, int64_t g,
                       double* dA_part, double* dD_part, double* dbias_part) {
    const SsdInputs<float>& in = a.in;
    const int64_t t0 = in.cu_seqlens[b], len = in.cu_seqlens[b + 1] - t0;
    const int64_t Q = std::min<int64_t>(a.chunk_size, std::max<int64_t>(len, 1));
    const int64_t nch = (len + Q - 1) / Q;
    Workspace& ws = workspace();
    Workspace::need(ws.cb, std::max<int64_t>(nch, 1) * Q * Q);
    Workspace::need(ws.dcb, std::max<int64_t>(nch, 1) * Q * Q);
    Workspace::need(ws.states, std::max<int64_t>(nch, 1) * P * N);
    Workspace::need(ws.mat, Q * Q);
    Workspace::need(ws.dmat, Q * Q);
    Workspace::need(ws.lp, Q * P);
    Workspace::need(ws.lp2, Q * P);
    Workspace::need(ws.ln, Q * N);
    Workspace::need(ws.pn, P * N);
    Workspace::need(ws.dpn, P * N);
    Workspace::need(ws.vec, 10 * Q);
    chunk_cb(in, d, g, t0, len, Q, ws.cb.data());
    std::fill(ws.dcb.data(), ws.dcb.data() + nch * Q * Q, 0.0f);
    for (int64_t t = t0; t < t0 + len; ++t) {
      std::fill_n(a.dB.data + (t * d.ngroups + g) * N, N, 0.0f);
      std::fill_n(a.dC.data + (t * d.ngroups + g) * N, N, 0.0f);
    }
    ChunkScalars sc{ws.vec.data(),         ws.vec.data() + Q,     ws.vec.data() + 2 * Q,
                    ws.vec.data() + 3 * Q, ws.vec.data() + 4 * Q, ws.vec.data() + 5 * Q,
                    ws.vec.data() + 6 * Q};
    float* ddt = sc.aux;           // gradient w.r.t. dt (after softplus)
    float* dw = sc.aux + Q;        // gradient w.r.t. w_s
    float* de = sc.aux + 2 * Q;    // gradient w.r.t. e_t
    float* intra = sc.aux + 3 * Q; // Σ_{t≥k} Σ_{s<k} G[t,s]
    const int64_t hpg = d.heads_per_group();
    for (int64_t h = g * hpg; h < (g + 1) * hpg; ++h) {
      const float A = in.A[h];
      const float Dh = !ssd_detail::given(in.D) ? 0.0f : in.D[h];
      // Forward again: the state entering every chunk.
      load_state(in, b, h, d, ws.states.data());
      for (int64_t c = 0; c + 1 < nch; ++c) {
        const int64_t lc = Q, t = t0 + c * Q;
        chunk_scalars(in, d.nheads, h, t, lc, sc);
        const auto X = rows_x(in.x.data, d, t, lc, h);
        const auto Bm = rows_bc(in.B.data, d, t, lc, g);
        MapR WX(ws.lp.data(), lc, P);
        for (int64_t r = 0; r < lc; ++r) WX.row(r) = (sc.w[r] * sc.dt[r]) * X.row(r);
        MapR next(ws.states.data() + (c + 1) * P * N, P, N);
        next.noalias() = sc.e[lc - 1] * MapR(ws.states.data() + c * P * N, P, N);
        next.noalias() += WX.transpose() * Bm;
      }
      MapR dS(ws.dpn.data(), P, N);
      if (!ssd_detail::given(a.dfinal_state)) {
        dS.setZero();
      } else {
        const float* src = a.dfinal_state.data + ((b * d.nheads + h) * P) * N;
        std::copy(src, src + P * N, dS.data());
      }
      double dA_acc = 0, dD_acc = 0, dbias_acc = 0;
      for (int64_t c = nch - 1; c >= 0; --c) {
        const int64_t lc = std::min(Q, len - c * Q), t = t0 + c * Q;
        chunk_scalars(in, d.nheads, h, t, lc, sc);
        const auto X = rows_x(in.x.data, d, t, lc, h);
        const auto Bm = rows_bc(in.B.data, d, t, lc, g);
        const auto Cm = rows_bc(in.C.data, d, t, lc, g);
        const auto dY = rows_x(a.dy.data, d, t, lc, h);
        auto dX = rows_y(a.dx.data, d, t, lc, h);
        auto dBm = rows_dbc(a.dB.data, d, t, lc, g);
        auto dCm = rows_dbc(a.dC.data, d, t, lc, g);
        const MapR Sin(ws.states.data() + c * P * N, P, N);
        const float* cb = ws.cb.data() + c * Q * Q;
        float* dcb = ws.dcb.data() + c * Q * Q;  // dcb rows use stride lc, like cb
        const float E = sc.e[lc - 1];
        // Lm = exp(cs_t − cs_s); K = CB∘Lm; M = K·dt_s (causal).
        float* M = ws.mat.data();
        decay_matrix(sc, lc, M);
        MapR dM(ws.dmat.data(), lc, lc);
        dM.noalias() = dY * X.transpose();
        // Intra-chunk term y = M·X: gradients of CB, of dt_s and of the exponent (G = dM∘M).
        for (int64_t s = 0; s < lc; ++s) ddt[s] = 0, intra[s] = 0;
        for (int64_t r = 0; r < lc; ++r) {
          float* mr = M + r * lc;
          float* gr = dM.data() + r * lc;
          float* dcbr = dcb + r * lc;
          const float* cbr = cb + r * lc;
          for (int64_t s = 0; s <= r; ++s) {
            const float ldt = mr[s] * sc.dt[s];
            const float kv = cbr[s] * mr[s];
            const float dm = gr[s];
            ddt[s] += dm * kv;
            dcbr[s] += dm * ldt;
            mr[s] = kv * sc.dt[s];
            gr[s] = dm * mr[s];
          }
          for (int64_t s = r + 1; s < lc; ++s) mr[s] = 0.0f;
          float run = 0;  // intra_k = Σ_{t≥k} Σ_{s<k} G[t,s]
          for (int64_t s = 0; s <= r; ++s) {
            intra[s] += run;
            run += gr[s];
          }
        }
        float* K = M;
        dX.noalias() = MapR(K, lc, lc).transpose() * dY;
        // D skip.
        if (ssd_detail::given(in.D)) {
          dX += Dh * dY;
          dD_acc += static_cast<double>((dY.array() * X.array()).sum());
        }
        // State terms: H_out = E·H_in + (w∘X)ᵀ·B, with dS the gradient of H_out.
        MapR XdS(ws.ln.data(), lc, N);
        XdS.noalias() = X * dS;
        for (int64_t s = 0; s < lc; ++s) {
          dw[s] = XdS.row(s).dot(Bm.row(s));
          dBm.row(s) += (sc.w[s] * sc.dt[s]) * XdS.row(s);
        }
        MapR BdS(ws.lp.data(), lc, P);
        BdS.noalias() = Bm * dS.transpose();
        for (int64_t s = 0; s < lc; ++s) dX.row(s) += (sc.w[s] * sc.dt[s]) * BdS.row(s);
        const float dE = (Sin.array() * dS.array()).sum();
        // Off-diagonal term y_t += e_t·C_t·H_inᵀ: with dYS = dY·H_in, dC_t += e_t·dYS_t,
        // d e_t = dYS_t·C_t, dH_in += (e∘dY)ᵀ·C.
        MapR dYS(ws.ln.data(), lc, N);
        dYS.noalias() = dY * Sin;
        MapR EdY(ws.lp2.data(), lc, P);
        for (int64_t r = 0; r < lc; ++r) {
          de[r] = dYS.row(r).dot(Cm.row(r));
          dCm.row(r) += sc.e[r] * dYS.row(r);
          EdY.row(r) = sc.e[r] * dY.row(r);
        }
        dS *= E;
        dS.noalias() += EdY.transpose() * Cm;  // now the gradient of H_in
        // Gradients of cs_k = Σ_{j≤k} a_j gathered per a_k = dt_k·A (no reverse cumsum of
        // cancelling terms): da_k = intra_k + Σ_{t≥k} de_t·e_t + dE·E + Σ_{s<k} dw_s·w_s.
        float suffix = 0;
        for (int64_t k = lc - 1; k >= 0; --k) {
          suffix += de[k] * sc.e[k];
          de[k] = suffix;
        }
        float prefix = 0;
        for (int64_t k = 0; k < lc; ++k) {
          const float da = intra[k] + de[k] + dE * E + prefix;
          prefix += dw[k] * sc.w[k] * sc.dt[k];
          const float ddt_k = ddt[k] + dw[k] * sc.w[k] + da * A;
          const float raw = ddt_k * sc.grad[k];
          a.ddt[(t + k) * d.nheads + h] = raw;
          dA_acc += static_cast<double>(da) * sc.dt[k];
          dbias_acc += raw;
        }
      }
      if (ssd_detail::given(a.dinitial_state)) {
        float* dst = a.dinitial_state.data + ((b * d.nheads + h) * P) * N;
        std::copy(dS.data(), dS.data() + P * N, dst);
      }
      const int64_t slot = b * d.nheads + h;
      dA_part[slot] = dA_acc;
      dD_part[slot] = dD_acc;
      dbias_part[slot] = dbias_acc;
    }
    // CB = C·Bᵀ: dC += dCB·B, dB += dCBᵀ·C (dCB summed over the heads of the group).
    for (int64_t c = 0; c < nch; ++c) {
      const int64_t lc = std::min(Q, len - c * Q), t = t0 + c * Q;
      const MapR dCB(ws.dcb.data() + c * Q * Q, lc, lc);
      auto dCm = rows_dbc(a.dC.data, d, t, lc, g);
      auto dBm = rows_dbc(a.dB.data, d, t, lc, g);
      dCm.noalias() += dCB * rows_bc(in.B.data, d, t, lc, g);
      dBm.noalias() += dCB.transpose() * rows_bc(in.C.data, d, t, lc, g);
    }
  }
};

}  // namespace detail_ssd

// y (and final_state) from the inputs; parallel over (sequence, group) pairs, the heads of a
// group in one task so that C·Bᵀ of each chunk is computed once; when there are fewer pairs than
// threads the heads of a group are split over tasks (each recomputing C·Bᵀ the same way), so
// the result is bitwise the same for any thread count. Throws ConfigError for a d_state or
// headdim that is not compiled (core/supported.hpp).
inline void ssd_fwd(const SsdFwdArgs<float>& args) {
  const SsdDims d = validate_ssd_fwd(args);
  dispatch_value(SupportedDState{}, static_cast<int>(d.d_state), "d_state", [&](auto n) {
    dispatch_value(SupportedHeadDim{}, static_cast<int>(d.headdim), "headdim", [&](auto p) {
      using Kernel = detail_ssd::SsdChunked<decltype(n)::value, decltype(p)::value>;
      const int64_t pairs = d.batch * d.ngroups, hpg = d.heads_per_group();
      const int64_t splits = std::min<int64_t>(hpg, (num_threads() + pairs - 1) / std::max<int64_t>(pairs, 1));
      const int64_t per = (hpg + splits - 1) / splits;
      parallel_for(0, pairs * splits, [&](int64_t i) {
        const int64_t pair = i / splits, part = i % splits, g = pair % d.ngroups;
        const int64_t h0 = g * hpg + part * per, h1 = std::min(g * hpg + hpg, h0 + per);
        if (h0 < h1) Kernel::fwd_task(args, d, pair / d.ngroups, g, h0, h1);
      });
    });
  });
}

// Backward of ssd_fwd: recomputes the chunk states, then walks the chunks in reverse.
// dx, ddt, dB, dC, dinitial_state are OVERWRITTEN; dA, dD, ddt_bias are ACCUMULATED (+=).
// Parameter gradients are summed per (sequence, head) in double, then over sequences in order.
inline void ssd_bwd(const SsdBwdArgs<float>& args) {
  const SsdDims d = validate_ssd_bwd(args);
  dispatch_value(SupportedDState{}, static_cast<int>(d.d_state), "d_state", [&](auto n) {
    dispatch_value(SupportedHeadDim{}, static_cast<int>(d.headdim), "headdim", [&](auto p) {
      using Kernel = detail_ssd::SsdChunked<decltype(n)::value, decltype(p)::value>;
      std::vector<double> part(3 * d.batch * d.nheads, 0.0);
      double* dA_part = part.data();
      double* dD_part = dA_part + d.batch * d.nheads;
      double* dbias_part = dD_part + d.batch * d.nheads;
      parallel_for(0, d.batch * d.ngroups, [&](int64_t i) {
        Kernel::bwd_task(args, d, i / d.ngroups, i % d.ngroups, dA_part, dD_part, dbias_part);
      });
      for (int64_t h = 0; h < d.nheads; ++h) {
        double sa = 0, sd = 0, sb = 0;
        for (int64_t b = 0; b < d.batch; ++b) {
          sa += dA_part[b * d.nheads + h];
          sd += dD_part[b * d.nheads + h];
          sb += dbias_part[b * d.nheads + h];
        }
        args.dA[h] += static_cast<float>(sa);
        if (ssd_detail::given(args.dD)) args.dD[h] += static_cast<float>(sd);
        if (ssd_detail::given(args.ddt_bias)) args.ddt_bias[h] += static_cast<float>(sb);
      }
    });
  });
}

}  // namespace mambatrack::cpu
