// CPU float Mamba-1 selective scan (math in ops/selective_scan.hpp), forward and backward.
// Work unit: one sequence × a block of kScanBlock channels of one group, its state h[DState][block]
// kept in a fixed-size array so every per-state update runs over contiguous channels (vectorised).
// The backward walks each sequence's chunks in reverse, recomputing states from the chunk-start
// states the forward saved; it runs over (sequence, group, channel slab) tasks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "mambatrack/core/parallel.hpp"
#include "mambatrack/core/supported.hpp"
#include "mambatrack/ops/cpu/vec_math.hpp"
#include "mambatrack/ops/selective_scan.hpp"

namespace mambatrack::cpu {

// Channels per work unit: one 64-byte line of floats (4 SSE / 2 AVX / 1 AVX-512 vector).
inline constexpr int kScanBlock = 16;

namespace scan_detail {

constexpr int kW = kScanBlock;

// Channel blocks never straddle a group (B and C differ between groups); the last block of a
// group may be narrower than kW and is zero-padded in the local arrays (padded lanes keep h = 0).
struct Blocking {
  int64_t per_group, blocks_per_group, blocks;
  Blocking(int64_t dim, int64_t ngroups)
      : per_group(dim / ngroups),
        blocks_per_group((dim / ngroups + kW - 1) / kW),
        blocks(ngroups * ((dim / ngroups + kW - 1) / kW)) {}
  int64_t group(int64_t blk) const { return blk / blocks_per_group; }
  int64_t c0(int64_t blk) const { return group(blk) * per_group + (blk % blocks_per_group) * kW; }
  int64_t width(int64_t blk) const {
    return std::min<int64_t>(kW, per_group - (blk % blocks_per_group) * kW);
  }
};

// dst[0, w) = src[0, w), dst[w, kW) = 0.
inline void load_block(float* dst, const float* src, int64_t w) {
  for (int64_t j = 0; j < w; ++j) dst[j] = src[j];
  for (int64_t j = w; j < kW; ++j) dst[j] = 0.0f;
}

// A state (dim, N) row block, channels [c0, c0 + w), into s[N][kW] (transposed), or zero.
template <int N>
void load_state(float (&s)[N][kW], const float* rows, int64_t c0, int64_t w) {
  for (int n = 0; n < N; ++n)
    for (int j = 0; j < kW; ++j) s[n][j] = (rows && j < w) ? rows[(c0 + j) * N + n] : 0.0f;
}
template <int N>
void store_state(float* rows, const float (&s)[N][kW], int64_t c0, int64_t w) {
  for (int64_t j = 0; j < w; ++j)
    for (int n = 0; n < N; ++n) rows[(c0 + j) * N + n] = s[n][j];
}

// Δ for one token of a block: softplus(delta + bias) or delta + bias (bias: kW values, zero-padded).
// Padded lanes get some Δ, harmless: their u, A, dout and state are 0.
inline void block_dt(float* __restrict dt, const float* __restrict delta_row, const float* __restrict bias,
                     int64_t w, bool softplus_on) {
  load_block(dt, delta_row, w);
  for (int j = 0; j < kW; ++j) dt[j] += bias[j];
  if (softplus_on)
    for (int j = 0; j < kW; ++j) dt[j] = softplus(dt[j]);
}

// One time step: decay = exp(Δ·A), h = decay·h + B·(Δu), y += C·h. The forward and the backward's
// recompute share this function, so recomputed states equal the saved ones bit for bit.
template <int N>
inline void scan_step(float (&__restrict h)[N][kW], float (&__restrict decay)[N][kW],
                      const float* __restrict dt, const float* __restrict du, const float* __restrict Bt,
                      const float* __restrict Ct, const float (&__restrict At)[N][kW], float* __restrict y) {
  for (int n = 0; n < N; ++n) {
    const float bn = Bt[n], cn = Ct[n];
    for (int j = 0; j < kW; ++j) {
      const float a = exp_approx(dt[j] * At[n][j]);
      const float hn = a * h[n][j] + bn * du[j];
      decay[n][j] = a;
      h[n][j] = hn;
      y[j] += cn * hn;
    }
  }
}

// Sum of 16 lanes as a fixed tree (vectorises without -ffast-math; same order everywhere).
inline float sum_block(const float* v) {
  static_assert(kW == 16, "sum_block assumes 16 lanes");
  float s8[8], s4[4];
  for (int j = 0; j < 8; ++j) s8[j] = v[j] + v[j + 8];
  for (int j = 0; j < 4; ++j) s4[j] = s8[j] + s8[j + 4];
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

// One reverse step at token t: with gh = ∂L/∂h_t (before adding dy_t·C_t on entry),
//   ∂L/∂Δ += Σ_n gh·(A·decay·h_{t-1} + B·u), ∂L/∂A += gh·Δ·decay·h_{t-1}, ∂L/∂u += Σ_n gh·Δ·B,
//   ∂L/∂B_n += Σ_channels gh·Δ·u, ∂L/∂C_n += Σ_channels dy·h_t, and gh becomes ∂L/∂h_{t-1}.
template <int N>
inline void reverse_step(float (&__restrict gh)[N][kW], float (&__restrict dA_loc)[N][kW],
                         const float (&__restrict decay)[N][kW], const float (&__restrict h_prev)[N][kW],
                         const float (&__restrict h_cur)[N][kW], const float (&__restrict At)[N][kW],
                         const float* __restrict dt, const float* __restrict uu, const float* __restrict dy,
                         const float* __restrict Bt, const float* __restrict Ct, float* __restrict ddt,
                         float* __restrict du_acc, float* __restrict dBt, float* __restrict dCt) {
  alignas(64) float tb[kW], tc[kW];
  for (int n = 0; n < N; ++n) {
    const float bn = Bt[n], cn = Ct[n];
    for (int j = 0; j < kW; ++j) {
      const float ghv = gh[n][j] + dy[j] * cn;
      const float x = ghv * decay[n][j] * h_prev[n][j];  // ∂L/∂(Δ·A) for this state
      ddt[j] += x * At[n][j] + ghv * bn * uu[j];
      dA_loc[n][j] += x * dt[j];
      du_acc[j] += ghv * bn * dt[j];
      tb[j] = ghv * dt[j] * uu[j];
      tc[j] = dy[j] * h_cur[n][j];
      gh[n][j] = ghv * decay[n][j];
    }
    dBt[n] += sum_block(tb);
    dCt[n] += sum_block(tc);
  }
}

struct Pointers {
  const float *u, *delta, *A, *B, *C, *D, *bias, *z, *init;
  const int64_t* cu;
  template <class In>
  explicit Pointers(const In& in)
      : u(in.u.data), delta(in.delta.data), A(in.A.data), B(in.B.data), C(in.C.data),
        D(is_given(in.D) ? in.D.data : nullptr),
        bias(is_given(in.delta_bias) ? in.delta_bias.data : nullptr),
        z(is_given(in.z) ? in.z.data : nullptr),
        init(is_given(in.initial_state) ? in.initial_state.data : nullptr), cu(in.cu_seqlens.data) {}
};

template <int N>
void fwd(const SelectiveScanFwdArgs<float>& a, const SelectiveScanSizes& s) {
  const Pointers p(a.in);
  const Blocking bk(s.dim, s.ngroups);
  const int64_t dim = s.dim, G = s.ngroups, chunk = a.in.chunk;
  const bool softplus_on = a.in.delta_softplus;
  float* out = a.out.data;
  float* final_state = is_given(a.final_state) ? a.final_state.data : nullptr;
  float* saved = is_given(a.saved_states) ? a.saved_states.data : nullptr;
  parallel_for(0, s.batch * bk.blocks, [&](int64_t task) {
    const int64_t b = task / bk.blocks, blk = task % bk.blocks;
    const int64_t g = bk.group(blk), c0 = bk.c0(blk), w = bk.width(blk);
    const int64_t start = p.cu[b], end = p.cu[b + 1];
    alignas(64) float At[N][kW], h[N][kW], decay[N][kW];
    alignas(64) float Dv[kW], bv[kW], dt[kW], uu[kW], du[kW], y[kW], zz[kW];
    load_state<N>(At, p.A, c0, w);
    if (p.bias) load_block(bv, p.bias + c0, w);
    else std::fill(bv, bv + kW, 0.0f);
    load_state<N>(h, p.init ? p.init + b * dim * N : nullptr, c0, w);
    if (p.D) load_block(Dv, p.D + c0, w);
    else std::fill(Dv, Dv + kW, 0.0f);
    for (int64_t t = start; t < end; ++t) {
      if (saved && (t - start) % chunk == 0) {
        const int64_t slot = selective_scan_slot(b, start, (t - start) / chunk, chunk);
        store_state<N>(saved + slot * dim * N, h, c0, w);
      }
      const int64_t row = t * dim + c0;
      block_dt(dt, p.delta + row, bv, w, softplus_on);
      load_block(uu, p.u + row, w);
      for (int j = 0; j < kW; ++j) {
        du[j] = dt[j] * uu[j];
        y[j] = Dv[j] * uu[j];
      }
      scan_step<N>(h, decay, dt, du, p.B + (t * G + g) * N, p.C + (t * G + g) * N, At, y);
      if (p.z) {
        load_block(zz, p.z + row, w);
        for (int j = 0; j < kW; ++j) y[j] *= zz[j] * sigmoid_approx(zz[j]);
      }
      for (int64_t j = 0; j < w; ++j) out[row + j] = y[j];
    }
    if (final_state) store_state<N>(final_state + b * dim * N, h, c0, w);
  });
}

template <int N>
void bwd(const SelectiveScanBwdArgs<float>& a, const SelectiveScanSizes& s) {
  const Pointers p(a.in);
  const Blocking bk(s.dim, s.ngroups);
  const int64_t dim = s.dim, G = s.ngroups, chunk = a.in.chunk;
  const bool softplus_on = a.in.delta_softplus;
  const float* saved = a.saved_states.data;
  const float* dout = a.dout.data;
  const float* dfinal = is_given(a.dfinal_state) ? a.dfinal_state.data : nullptr;
  float* dinit = is_given(a.dinitial_state) ? a.dinitial_state.data : nullptr;
  const int64_t max_len = max_seqlen(a.in.cu_seqlens);
  const int64_t L = std::max<int64_t>(1, std::min(chunk, max_len));  // tokens recomputed at once

  // Tasks are (sequence, group, slab), a slab being a range of the group's channel blocks. With
  // one slab per group a task owns the dB/dC rows of its tokens; when there are fewer (sequence,
  // group) pairs than threads (few long sequences), the group's blocks are split into `slabs` and
  // each slab sums dB/dC into its own copy, added in slab order afterwards. Parameter gradients sum
  // over sequences: each of `parts` contiguous task ranges accumulates them in its own buffer,
  // added in part order. Both orders depend on the thread count only (deterministic for a count).
  const int64_t threads = num_threads(), pairs = s.batch * G;
  const int64_t slabs = std::max<int64_t>(1, std::min<int64_t>(bk.blocks_per_group, (threads + pairs - 1) / pairs));
  const int64_t tasks = pairs * slabs;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(tasks, threads));
  const int64_t pstride = dim * (N + 2);
  std::vector<float> partial(static_cast<std::size_t>(parts * pstride), 0.0f);
  const int64_t bc_rows = s.tokens * G * N;  // one copy of dB (or dC)
  std::vector<float> slab_dBC(static_cast<std::size_t>(slabs > 1 ? 2 * slabs * bc_rows : 0));

  parallel_for(0, parts, [&](int64_t part) {
    std::vector<float> hs_buf(static_cast<std::size_t>((L + 1) * N * kW));
    std::vector<float> dec_buf(static_cast<std::size_t>(L * N * kW));
    std::vector<float> dt_buf(static_cast<std::size_t>(L * kW)), y_buf(static_cast<std::size_t>(L * kW));
    auto hs = reinterpret_cast<float(*)[N][kW]>(hs_buf.data());
    auto decs = reinterpret_cast<float(*)[N][kW]>(dec_buf.data());
    float* pA = partial.data() + part * pstride;
    float* pD = pA + dim * N;
    float* pbias = pD + dim;
    for (int64_t task = part * tasks / parts; task < (part + 1) * tasks / parts; ++task) {
      const int64_t b = task / (G * slabs), g = (task / slabs) % G, slab = task % slabs;
      const int64_t start = p.cu[b], end = p.cu[b + 1];
      float* dB = slabs > 1 ? slab_dBC.data() + 2 * slab * bc_rows : a.dB.data;
      float* dC = slabs > 1 ? dB + bc_rows : a.dC.data;
      for (int64_t t = start; t < end; ++t) {
        std::fill(dB + (t * G + g) * N, dB + (t * G + g + 1) * N, 0.0f);
        std::fill(dC + (t * G + g) * N, dC + (t * G + g + 1) * N, 0.0f);
      }
      const int64_t blk_begin = g * bk.blocks_per_group + slab * bk.blocks_per_group / slabs;
      const int64_t blk_end = g * bk.blocks_per_group + (slab + 1) * bk.blocks_per_group / slabs;
      for (int64_t blk = blk_begin; blk < blk_end; ++blk) {
        const int64_t c0 = bk.c0(blk), w = bk.width(blk);
        alignas(64) float At[N][kW], h[N][kW], gh[N][kW], dA_loc[N][kW];
        alignas(64) float Dv[kW], bv[kW], dD_loc[kW], dbias_loc[kW], uu[kW], du[kW], dy[kW], zz[kW], go[kW],
            ddt[kW], du_acc[kW], raw[kW], tb[kW];
        load_state<N>(At, p.A, c0, w);
        load_state<N>(gh, dfinal ? dfinal + b * dim * N : nullptr, c0, w);
        for (int n = 0; n < N; ++n) std::fill(dA_loc[n], dA_loc[n] + kW, 0.0f);
        std::fill(dD_loc, dD_loc + kW, 0.0f);
        std::fill(dbias_loc, dbias_loc + kW, 0.0f);
        if (p.D) load_block(Dv, p.D + c0, w);
        else std::fill(Dv, Dv + kW, 0.0f);
        if (p.bias) load_block(bv, p.bias + c0, w);
        else std::fill(bv, bv + kW, 0.0f);
        const int64_t n_chunks = end == start ? 0 : (end - start - 1) / chunk + 1;  // no overflow for a huge chunk
        for (int64_t k = n_chunks - 1; k >= 0; --k) {
          const int64_t t0 = start + k * chunk, m = std::min(end, t0 + chunk) - t0;
          // Recompute the chunk's states from its saved start state.
          load_state<N>(h, saved + selective_scan_slot(b, start, k, chunk) * dim * N, c0, w);
          std::memcpy(hs[0], h, sizeof(h));
          for (int64_t i = 0; i < m; ++i) {
            const int64_t row = (t0 + i) * dim + c0;
            float* dt = dt_buf.data() + i * kW;
            float* y = y_buf.data() + i * kW;
            block_dt(dt, p.delta + row, bv, w, softplus_on);
            load_block(uu, p.u + row, w);
            for (int j = 0; j < kW; ++j) {
              du[j] = dt[j] * uu[j];
              y[j] = Dv[j] * uu[j];
            }
            scan_step<N>(h, decs[i], dt, du, p.B + ((t0 + i) * G + g) * N, p.C + ((t0 + i) * G + g) * N,
                         At, y);
            std::memcpy(hs[i + 1], h, sizeof(h));
          }
          // Reverse walk: gh = ∂L/∂h_t after adding dy_t·C_t, then carried back through exp(Δ_t·A).
          for (int64_t i = m - 1; i >= 0; --i) {
            const int64_t t = t0 + i, row = t * dim + c0;
            const float* dt = dt_buf.data() + i * kW;
            const float* y = y_buf.data() + i * kW;
            load_block(uu, p.u + row, w);
            load_block(go, dout + row, w);
            if (p.z) {
              load_block(zz, p.z + row, w);
              for (int j = 0; j < kW; ++j) {
                const float sg = sigmoid_approx(zz[j]);
                tb[j] = go[j] * y[j] * sg * (1.0f + zz[j] * (1.0f - sg));  // ∂silu(z)/∂z = σ(1 + z(1-σ))
                dy[j] = go[j] * zz[j] * sg;
              }
              for (int64_t j = 0; j < w; ++j) a.dz.data[row + j] = tb[j];
            } else {
              std::memcpy(dy, go, sizeof(dy));
            }
            for (int j = 0; j < kW; ++j) {
              dD_loc[j] += dy[j] * uu[j];
              du_acc[j] = dy[j] * Dv[j];
              ddt[j] = 0.0f;
            }
            const int64_t bc = (t * G + g) * N;
            reverse_step<N>(gh, dA_loc, decs[i], hs[i], hs[i + 1], At, dt, uu, dy, p.B + bc, p.C + bc, ddt,
                            du_acc, dB + bc, dC + bc);
            if (softplus_on) {
              load_block(raw, p.delta + row, w);
              for (int j = 0; j < kW; ++j) {
                raw[j] += bv[j];
                const float sg = sigmoid_approx(raw[j]), above = raw[j] > 20.0f ? 1.0f : 0.0f;
                ddt[j] *= sg + above * (1.0f - sg);  // softplus' = σ, 1 above the threshold
              }
            }
            for (int64_t j = 0; j < w; ++j) {
              a.du.data[row + j] = du_acc[j];
              a.ddelta.data[row + j] = ddt[j];
              dbias_loc[j] += ddt[j];
            }
          }
        }
        if (dinit) store_state<N>(dinit + b * dim * N, gh, c0, w);
        for (int64_t j = 0; j < w; ++j) {
          for (int n = 0; n < N; ++n) pA[(c0 + j) * N + n] += dA_loc[n][j];
          pD[c0 + j] += dD_loc[j];
          pbias[c0 + j] += dbias_loc[j];
        }
      }
    }
  });
  if (slabs > 1) {
    parallel_for(0, s.tokens, [&](int64_t t) {
      for (int64_t i = t * G * N; i < (t + 1) * G * N; ++i) {
        float sb = 0.0f, sc = 0.0f;
        for (int64_t slab = 0; slab < slabs; ++slab) {
          sb += slab_dBC[static_cast<std::size_t>(2 * slab * bc_rows + i)];
          sc += slab_dBC[static_cast<std::size_t>((2 * slab + 1) * bc_rows + i)];
        }
        a.dB.data[i] = sb;
        a.dC.data[i] = sc;
      }
    });
  }
  for (int64_t part = 0; part < parts; ++part) {
    const float* pA = partial.data() + part * pstride;
    for (int64_t i = 0; i < dim * N; ++i) a.dA.data[i] += pA[i];
    if (p.D)
      for (int64_t d = 0; d < dim; ++d) a.dD.data[d] += pA[dim * N + d];
    if (p.bias)
      for (int64_t d = 0; d < dim; ++d) a.ddelta_bias.data[d] += pA[dim * N + dim + d];
  }
}

}  // namespace scan_detail

// Forward. Throws ShapeError for inconsistent shapes or cu_seqlens, ConfigError for a d_state
// that is not compiled (core/supported.hpp lists them) or chunk < 1.
inline void selective_scan_fwd(const SelectiveScanFwdArgs<float>& a) {
  const SelectiveScanSizes s = validate_selective_scan(a);
  validate_cu_seqlens(a.in.cu_seqlens, s.tokens, "selective_scan");
  dispatch_value(SupportedDState{}, static_cast<int>(s.d_state), "d_state",
                 [&](auto n) { scan_detail::fwd<decltype(n)::value>(a, s); });
}

// Backward (overwrite/accumulate rules in ops/selective_scan.hpp). Needs the forward's
// saved_states. Parameter gradients (and dB/dC when few sequences are split over channel slabs)
// are summed in an order set by the thread count: identical results for a given count. Allocates
// per call its partial sums and the recompute buffers (threads × min(chunk, longest) × d_state × 16
// floats), plus 2 × slabs × tokens × ngroups × d_state floats when it splits channels.
inline void selective_scan_bwd(const SelectiveScanBwdArgs<float>& a) {
  const SelectiveScanSizes s = validate_selective_scan(a, /*require_saved=*/true);
  validate_cu_seqlens(a.in.cu_seqlens, s.tokens, "selective_scan");
  dispatch_value(SupportedDState{}, static_cast<int>(s.d_state), "d_state",
                 [&](auto n) { scan_detail::bwd<decltype(n)::value>(a, s); });
}

}  // namespace mambatrack::cpu
