// CUDA Mamba2 SSD scan (math and argument structs: ops/ssd.hpp), chunked as in mamba_ssm's
// ssd_combined: per chunk of Q tokens of one sequence, with cs_t = A·Σ_{k≤t} dt_k,
//   y_t   = Σ_{s≤t} (C_t·B_s)·exp(cs_t − cs_s)·dt_s·x_s + exp(cs_t)·H_in·C_t + D·x_t
//   H_out = exp(cs_last)·H_in + Σ_s exp(cs_last − cs_s)·dt_s·x_s ⊗ B_s,
// chunk states passed along each (sequence, head); chunks never cross a sequence start. The
// backward recomputes the states and runs the transposed products. Float or bfloat16 storage,
// float math and state; with bfloat16 and headdim, d_state multiples of 16 the products with the
// chunk states and M·X, dY·Xᵀ, Mᵀ·dY run on tensor cores (WMMA bf16 16x16x16, fp32 accumulate);
// C·Bᵀ and the products with W (they feed ∂L/∂cs, whose sums cancel) stay shared-memory tiled
// fp32 SIMT, as does everything for float storage. d_state and headdim are run-time tile sizes (one instantiation per storage type),
// restricted to the supported lists of core/supported.hpp. Deterministic: no atomics;
// dA/dD/ddt_bias are per-(chunk, head) partials summed in a fixed order; dB/dC are summed over the
// heads of a group in head order inside one block.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "mambatrack/core/cuda_memory.cuh"
#include "mambatrack/core/dtype.hpp"
#include "mambatrack/core/supported.hpp"
#include "mambatrack/ops/cuda/kernel_util.cuh"
#include "mambatrack/ops/ssd.hpp"

namespace mambatrack::cuda {

namespace ssd_cuda_detail {

constexpr int kThreads = 256;   // threads of every chunk kernel (8 warps)
constexpr int kPassElems = 8;   // state elements per thread of the state-passing kernel
constexpr int kPassPre = 8;     // boundaries loaded ahead by the state-passing kernel
constexpr int64_t kMaxChunk = 256;

template <class T>
struct Params {
  const T *x = nullptr, *dt = nullptr, *dt_bias = nullptr, *A = nullptr, *B = nullptr, *C = nullptr;
  const T *D = nullptr, *init = nullptr;
  const int64_t* cu = nullptr;
  T *y = nullptr, *final_state = nullptr;
  const T *dy = nullptr, *dfinal = nullptr;
  T *dx = nullptr, *ddt = nullptr, *dB = nullptr, *dC = nullptr, *dinit = nullptr;
  int64_t tokens = 0, nheads = 0, ngroups = 1, hpg = 1, batch = 0, slots = 0, nb = 0;
  int P = 0, N = 0, Q = 64;
  bool mma = false;  // bf16 storage, headdim and d_state multiples of 16: tensor-core products
  float dt_min = 0.0f, dt_max = 0.0f;
  int* slot_seq = nullptr;  // slot -> sequence (-1: unused)
  int* slot_k = nullptr;    // slot -> chunk index in its sequence
  float* ws_H = nullptr;    // (nb, nheads, P, N): chunk-local states, then chunk-start states
  float* ws_dec = nullptr;  // (nb, nheads): cs_last of the chunk before the boundary
  float* ws_G = nullptr;    // (nb, nheads, P, N): chunk-local adjoints, then chunk-end adjoints
  float* ws_decb = nullptr; // (nb, nheads): cs_last of the chunk after the boundary
  float* ws_par = nullptr;  // (slots, 3, nheads): dA, dD, ddt_bias partials
};

// Chunk k of sequence b (tokens [t0, t0 + L)) runs in slot b + start/Q + k (unique, see
// selective_scan_slot). The state between chunks j−1 and j (j >= 1) lives at boundary
// start/Q + j − 1: unique too, and below tokens/Q + 1.
struct ChunkPos {
  int64_t b, k, start, end, t0, nk;
  int L;
};
template <class T>
__device__ __forceinline__ bool chunk_pos(const Params<T>& p, int64_t slot, ChunkPos& c) {
  const int b = p.slot_seq[slot];
  if (b < 0) return false;
  c.b = b;
  c.k = p.slot_k[slot];
  c.start = p.cu[b];
  c.end = p.cu[b + 1];
  c.t0 = c.start + c.k * p.Q;
  c.L = static_cast<int>(c.end - c.t0 < p.Q ? c.end - c.t0 : p.Q);
  c.nk = (c.end - c.start + p.Q - 1) / p.Q;
  return true;
}
__host__ __device__ __forceinline__ int64_t boundary(int64_t start, int64_t j, int64_t Q) { return start / Q + j - 1; }

template <int kUnused = 0>
__global__ void map_slots(const int64_t* __restrict cu, int64_t batch, int64_t tokens, int64_t chunk, int64_t slots,
                          int* __restrict slot_seq, int* __restrict slot_k) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= batch) return;
  const int64_t start = cu[b], end = cu[b + 1];
  if (start < 0 || end < start || end > tokens) return;  // invalid range: skipped
  const int64_t nk = (end - start + chunk - 1) / chunk;
  for (int64_t k = 0; k < nk; ++k) {
    const int64_t s = b + start / chunk + k;
    if (s >= slots) return;
    slot_seq[s] = static_cast<int>(b);
    slot_k[s] = static_cast<int>(k);
  }
}

// Sum over the warp's lanes (butterfly, the same order every time); every lane gets the total.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// C(m, n) = Σ_k a(m, k)·b(k, n) for m < M, n < Nc over k in order; epi(m, n, value) once per
// element. A warp owns TM rows × 32·TN columns (lane + 32·j), so a() is a broadcast and b() is
// read along consecutive columns. Every thread of the block must call it (no sync inside).
template <int TM = 4, int TN = 2, class FA, class FB, class FE>
__device__ __forceinline__ void block_gemm(int M, int Nc, int K, FA&& a, FB&& b, FE&& epi) {
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  const int nw = static_cast<int>(blockDim.x) >> 5;
  const int nrt = (M + TM - 1) / TM, ncg = (Nc + 32 * TN - 1) / (32 * TN);
  for (int w = warp; w < nrt * ncg; w += nw) {
    const int m0 = (w / ncg) * TM, n0 = (w % ncg) * (32 * TN) + lane;
    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
#pragma unroll 2
    for (int k = 0; k < K; ++k) {
      float av[TM], bv[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) av[i] = m0 + i < M ? a(m0 + i, k) : 0.0f;
#pragma unroll
      for (int j = 0; j < TN; ++j) bv[j] = n0 + 32 * j < Nc ? b(k, n0 + 32 * j) : 0.0f;
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j)
        if (m0 + i < M && n0 + 32 * j < Nc) epi(m0 + i, n0 + 32 * j, acc[i][j]);
  }
}

// dt (bias, softplus with threshold 20, clamp), its derivative w.r.t. the raw dt (0 where
// clamped), csdt_t = Σ_{k≤t} dt_k and cs_t = A·csdt_t for the chunk's L tokens of head h.
// Every thread of the block must call it (it synchronises before and after the prefix sum).
template <class T>
__device__ __forceinline__ void chunk_scalars(const Params<T>& p, const ChunkPos& c, int64_t h, float* s_dt,
                                              float* s_dtg, float* s_csdt, float* s_cs) {
  const float bias = p.dt_bias ? detail::ld(p.dt_bias, h) : 0.0f;
  for (int t = threadIdx.x; t < c.L; t += blockDim.x) {
    const float raw = detail::ld(p.dt, (c.t0 + t) * p.nheads + h) + bias;
    const float sp = detail::softplus_f(raw);
    float dt, grad;
    if (sp < p.dt_min) {
      dt = p.dt_min;
      grad = 0.0f;
    } else if (sp > p.dt_max) {
      dt = p.dt_max;
      grad = 0.0f;
    } else {
      dt = sp;
      grad = raw > 20.0f ? 1.0f : detail::sigmoid_f(raw);
    }
    s_dt[t] = dt;
    s_dtg[t] = grad;
  }
  __syncthreads();
  if (threadIdx.x == 0) {  // in double: cs_t − cs_s then only carries the rounding of cs to float
    const double a = detail::ld(p.A, h);
    double acc = 0.0;
    for (int t = 0; t < c.L; ++t) {
      acc += s_dt[t];
      s_csdt[t] = static_cast<float>(acc);
      s_cs[t] = static_cast<float>(a * acc);
    }
  }
  __syncthreads();
}

// Dynamic shared memory (floats) of chunk_outer for chunk size Q (token rows padded to 16 for WMMA).
inline int64_t outer_floats(int64_t Q, int64_t N, int64_t P) { return (Q + 15) / 16 * 16 * (P + N) + 5 * Q; }

// mode 0 (forward, chunks k < nk − 1): S = Σ_s exp(cs_last − cs_s)·dt_s·x_s ⊗ B_s at boundary k + 1.
// mode 1 (backward, chunks k >= 1): R = Σ_t exp(cs_t)·dy_t ⊗ C_t at boundary k.
// Also the chunk's cs_last at that boundary (ws_dec / ws_decb). Grid (slots, nheads).
template <class T>
__device__ __forceinline__ void chunk_outer_one(const Params<T>& p, int mode, int64_t slot, float* smem) {
  ChunkPos c;
  if (!chunk_pos(p, slot, c)) return;
  if (mode == 0 ? c.k >= c.nk - 1 : c.k == 0) return;
  const int64_t h = blockIdx.y, g = h / p.hpg;
  const int P = p.P, N = p.N, Q = p.Q, L = c.L;
  const int Qp = (Q + 15) / 16 * 16;
  float* s_dt = smem + Qp * (P + N);
  float* s_dtg = s_dt + Q;
  float* s_csdt = s_dtg + Q;
  float* s_cs = s_csdt + Q;
  float* s_coef = s_cs + Q;
  const T* U = mode == 0 ? p.x : p.dy;
  const T* V = mode == 0 ? p.B : p.C;
  chunk_scalars(p, c, h, s_dt, s_dtg, s_csdt, s_cs);
  for (int t = threadIdx.x; t < L; t += blockDim.x)
    s_coef[t] = mode == 0 ? expf(s_cs[L - 1] - s_cs[t]) * s_dt[t] : expf(s_cs[t]);
  __syncthreads();
  const int64_t i = mode == 0 ? boundary(c.start, c.k + 1, Q) : boundary(c.start, c.k, Q);
  float* out = (mode == 0 ? p.ws_H : p.ws_G) + (i * p.nheads + h) * static_cast<int64_t>(P) * N;
  if (threadIdx.x == 0) (mode == 0 ? p.ws_dec : p.ws_decb)[i * p.nheads + h] = s_cs[L - 1];
  if constexpr (std::is_same_v<T, bfloat16>) {
    if (P % 16 == 0 && N % 16 == 0) {
      // Tensor cores (bf16 in, fp32 accumulate): A = (U∘coef)ᵀ (P × Lp, column-major in sA),
      // B = V (Lp × N), tokens padded with zeros to Lp, a multiple of 16.
      namespace wmma = nvcuda::wmma;
      bfloat16* sA = reinterpret_cast<bfloat16*>(smem);
      bfloat16* sBm = sA + Qp * P;
      const int Lp = (L + 15) / 16 * 16;
      for (int e = threadIdx.x; e < Lp * P; e += blockDim.x) {
        const int s = e / P, q = e % P;
        sA[e] = bfloat16(s < L ? detail::ld(U, ((c.t0 + s) * p.nheads + h) * P + q) * s_coef[s] : 0.0f);
      }
      for (int e = threadIdx.x; e < Lp * N; e += blockDim.x) {
        const int s = e / N, n = e % N;
        sBm[e] = s < L ? V[((c.t0 + s) * p.ngroups + g) * N + n] : bfloat16(0.0f);
      }
      __syncthreads();
      const int warp = static_cast<int>(threadIdx.x) >> 5, nw = static_cast<int>(blockDim.x) >> 5;
      const int tn = N / 16;
      for (int tile = warp; tile < (P / 16) * tn; tile += nw) {
        const int q0 = (tile / tn) * 16, n0 = (tile % tn) * 16;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int k0 = 0; k0 < Lp; k0 += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::col_major> fa;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
          wmma::load_matrix_sync(fa, reinterpret_cast<const __nv_bfloat16*>(sA + k0 * P + q0), P);
          wmma::load_matrix_sync(fb, reinterpret_cast<const __nv_bfloat16*>(sBm + k0 * N + n0), N);
          wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(out + q0 * N + n0, acc, N, wmma::mem_row_major);
      }
      return;
    }
  }
  float* sU = smem;
  float* sV = sU + Qp * P;
  for (int e = threadIdx.x; e < L * P; e += blockDim.x)
    sU[e] = detail::ld(U, ((c.t0 + e / P) * p.nheads + h) * P + e % P);
  for (int e = threadIdx.x; e < L * N; e += blockDim.x)
    sV[e] = detail::ld(V, ((c.t0 + e / N) * p.ngroups + g) * N + e % N);
  __syncthreads();
  block_gemm(
      P, N, L, [&](int q, int s) { return sU[s * P + q] * s_coef[s]; }, [&](int s, int n) { return sV[s * N + n]; },
      [&](int q, int n, float v) { out[q * N + n] = v; });
}
// Grid (outer_grid_x, nheads); each block takes slots blockIdx.x, + gridDim.x, ... (most slots
// need no work when sequences are a single chunk: few blocks then skip them cheaply).
template <class T>
__global__ void __launch_bounds__(kThreads) chunk_outer(Params<T> p, int mode) {
  extern __shared__ __align__(128) unsigned char ssd_smem[];  // 32-byte aligned for wmma
  float* smem = reinterpret_cast<float*>(ssd_smem);
  for (int64_t slot = blockIdx.x; slot < p.slots; slot += gridDim.x) {
    __syncthreads();  // the previous slot's readers of shared memory are done
    chunk_outer_one(p, mode, slot, smem);
  }
}

// State passing along each (sequence, head), kPassElems state elements per thread, grid
// (pass_grid_x, ceil(P·N / (kThreads·kPassElems))), (sequence, head) pairs strided over blockIdx.x.
// mode 0: H_in(j) = exp(cs_last(j−1))·H_in(j−1) + S_{j−1} for j = 1 .. nk−1, over S in ws_H;
//         an empty sequence's final_state is its initial state (or 0).
// mode 1: G_end(j−1) = exp(cs_last(j))·G_end(j) + R_j for j = nk−1 .. 1, over R in ws_G, from
//         G_end(nk−1) = dfinal (or 0); an empty sequence's dinitial_state is its dfinal (or 0).
template <class T>
__device__ __forceinline__ void pass_one(const Params<T>& p, int mode, int64_t bh) {
  const int64_t b = bh / p.nheads, h = bh % p.nheads;
  const int64_t PN = static_cast<int64_t>(p.P) * p.N;
  const int64_t start = p.cu[b], end = p.cu[b + 1];
  if (start < 0 || end > p.tokens || end < start) return;
  const int64_t e0 = static_cast<int64_t>(blockIdx.y) * kThreads * kPassElems + threadIdx.x;
  const int64_t sbase = (b * p.nheads + h) * PN;
  const T* src = mode == 0 ? p.init : p.dfinal;
  if (end == start) {
    T* dst = mode == 0 ? p.final_state : p.dinit;
    if (!dst) return;
    for (int r = 0; r < kPassElems; ++r) {
      const int64_t e = e0 + r * kThreads;
      if (e < PN) detail::st(dst, sbase + e, src ? detail::ld(src, sbase + e) : 0.0f);
    }
    return;
  }
  const int64_t nk = (end - start + p.Q - 1) / p.Q;
  if (nk <= 1) return;
  float v[kPassElems];
#pragma unroll
  for (int r = 0; r < kPassElems; ++r) {
    const int64_t e = e0 + r * kThreads;
    v[r] = (src && e < PN) ? detail::ld(src, sbase + e) : 0.0f;
  }
  float* ws = mode == 0 ? p.ws_H : p.ws_G;
  const float* dec = mode == 0 ? p.ws_dec : p.ws_decb;
  // kPassPre boundaries at a time: their loads are all in flight before the dependent chain.
  for (int64_t j0 = 1; j0 < nk; j0 += kPassPre) {
    float f[kPassPre], loc[kPassPre][kPassElems];
#pragma unroll
    for (int d = 0; d < kPassPre; ++d) {
      const int64_t jj = j0 + d;
      if (jj < nk) {
        const int64_t i = boundary(start, mode == 0 ? jj : nk - jj, p.Q);
        f[d] = expf(dec[i * p.nheads + h]);
        const float* row = ws + (i * p.nheads + h) * PN;
#pragma unroll
        for (int r = 0; r < kPassElems; ++r) {
          const int64_t e = e0 + r * kThreads;
          loc[d][r] = e < PN ? row[e] : 0.0f;
        }
      }
    }
#pragma unroll
    for (int d = 0; d < kPassPre; ++d) {
      const int64_t jj = j0 + d;
      if (jj < nk) {
        const int64_t i = boundary(start, mode == 0 ? jj : nk - jj, p.Q);
        float* row = ws + (i * p.nheads + h) * PN;
#pragma unroll
        for (int r = 0; r < kPassElems; ++r) {
          const int64_t e = e0 + r * kThreads;
          v[r] = f[d] * v[r] + loc[d][r];
          if (e < PN) row[e] = v[r];
        }
      }
    }
  }
}
template <class T>
__global__ void __launch_bounds__(kThreads) pass_states(Params<T> p, int mode) {
  for (int64_t bh = blockIdx.x; bh < p.batch * p.nheads; bh += gridDim.x) pass_one(p, mode, bh);
}

// Launch grids of chunk_outer and pass_states (blocks stride over slots / (sequence, head)).
constexpr int64_t kOuterBlocks = 4096, kPassBlocks = 1024;
template <class T>
dim3 outer_grid(const Params<T>& p) {
  const int64_t per_head = kOuterBlocks / p.nheads > 1 ? kOuterBlocks / p.nheads : 1;
  return dim3(static_cast<unsigned>(p.slots < per_head ? p.slots : per_head), static_cast<unsigned>(p.nheads));
}
template <class T>
dim3 pass_grid(const Params<T>& p) {
  const int64_t bh = p.batch * p.nheads, PN = static_cast<int64_t>(p.P) * p.N;
  return dim3(static_cast<unsigned>(bh < kPassBlocks ? bh : kPassBlocks),
              static_cast<unsigned>((PN + kThreads * kPassElems - 1) / (kThreads * kPassElems)));
}

// Shared-memory layouts (in floats) of fwd_out and bwd_main for chunk size Q. Every buffer starts
// 32-byte aligned (sizes rounded to 8 floats) for the tensor-core tiles; `mma` (bf16 storage,
// headdim and d_state multiples of 16) adds the bf16 operand buffers.
__host__ __device__ inline int64_t round8(int64_t n) { return (n + 7) / 8 * 8; }
struct FwdLayout {
  int64_t B, C, CB, M, X, Y, sc, Hb, Ce, Mb, Xb, total;
  int ldN, ldQ, ldP, ldY, Qp;
};
__host__ __device__ inline FwdLayout fwd_layout(int64_t Q, int64_t N, int64_t P, bool mma) {
  FwdLayout l;
  l.ldN = static_cast<int>(N + 1), l.ldQ = static_cast<int>(Q + 1), l.ldP = static_cast<int>(P + 1);
  l.ldY = static_cast<int>(P + 4), l.Qp = static_cast<int>((Q + 15) / 16 * 16);
  int64_t o = 0;
  l.B = o, o += round8(Q * l.ldN);
  l.C = o, o += round8(Q * l.ldN);
  l.CB = o, o += round8(Q * l.ldQ);
  l.M = o, o += round8(Q * l.ldQ);
  l.X = o, o += round8(Q * l.ldP);
  l.Y = o, o += round8(l.Qp * l.ldY);
  l.sc = o, o += round8(6 * Q);
  l.Hb = o, o += mma ? round8(P * N / 2) : 0;
  l.Ce = o, o += mma ? round8(l.Qp * N / 2) : 0;
  l.Mb = o, o += mma ? round8(l.Qp * l.Qp / 2) : 0;
  l.Xb = o, o += mma ? round8(l.Qp * P / 2) : 0;
  l.total = o;
  return l;
}
struct BwdLayout {
  int64_t B, C, E1, E2, CB, M, W, X, dY, T, dB, dC, sc, red, Hb, Gb, Xb, dYe, Bw, dYb, Mtb, Gm, total;
  int ldN, ldQ, ldP, ldE, ldT, ldG, Qp;
};
__host__ __device__ inline BwdLayout bwd_layout(int64_t Q, int64_t N, int64_t P, bool mma) {
  BwdLayout l;
  l.ldN = static_cast<int>(N + 1), l.ldQ = static_cast<int>(Q + 1), l.ldP = static_cast<int>(P + 1);
  l.ldE = static_cast<int>(N + 4), l.ldT = static_cast<int>(P + 4), l.Qp = static_cast<int>((Q + 15) / 16 * 16);
  int64_t o = 0;
  l.B = o, o += round8(Q * l.ldN);
  l.C = o, o += round8(Q * l.ldN);
  l.E1 = o, o += round8(l.Qp * l.ldE);
  l.E2 = o, o += round8(l.Qp * l.ldE);
  l.CB = o, o += round8(Q * l.ldQ);
  l.M = o, o += round8(Q * l.ldQ);
  l.W = o, o += round8(Q * l.ldQ);
  l.X = o, o += round8(Q * l.ldP);
  l.dY = o, o += round8(Q * l.ldP);
  l.T = o, o += round8(l.Qp * l.ldT);
  l.dB = o, o += round8(Q * N);
  l.dC = o, o += round8(Q * N);
  l.sc = o, o += round8(12 * Q);
  l.red = o, o += kThreads / 32;
  o = round8(o);
  l.Hb = o, o += mma ? round8(P * N / 2) : 0;
  l.Gb = o, o += mma ? round8(P * N / 2) : 0;
  l.Xb = o, o += mma ? round8(l.Qp * P / 2) : 0;
  l.dYe = o, o += mma ? round8(l.Qp * P / 2) : 0;
  l.Bw = o, o += mma ? round8(l.Qp * N / 2) : 0;
  l.dYb = o, o += mma ? round8(l.Qp * P / 2) : 0;
  l.Mtb = o, o += mma ? round8(l.Qp * l.Qp / 2) : 0;
  l.ldG = l.Qp + 4;
  l.Gm = o, o += mma ? round8(static_cast<int64_t>(l.Qp) * l.ldG) : 0;
  l.total = o;
  return l;
}
inline int64_t fwd_floats(int64_t Q, int64_t N, int64_t P, bool mma) { return fwd_layout(Q, N, P, mma).total; }
inline int64_t bwd_floats(int64_t Q, int64_t N, int64_t P, bool mma) { return bwd_layout(Q, N, P, mma).total; }
// The tensor-core path: bf16 storage, headdim and d_state multiples of 16.
template <class T>
constexpr bool mma_type() {
  return std::is_same_v<T, bfloat16>;
}
inline bool use_mma(bool bf16, int64_t N, int64_t P) { return bf16 && N % 16 == 0 && P % 16 == 0; }

// D (+)= A·B over 16×16 tiles on tensor cores (bf16 in, fp32 accumulate); warps take the tiles in
// turn. A: M×K bf16 row-major (lda); B: K×N bf16 row-major (ldb), or column-major when kBColMajor
// (element (k, n) at b[k + n·ldb]); D: fp32 row-major (ldd), loaded first when kAccumulate.
// M, N, K multiples of 16; pointers 32-byte aligned, lda/ldb multiples of 8, ldd of 4.
template <bool kBColMajor, bool kAccumulate>
__device__ __forceinline__ void block_mma(int M, int Nc, int K, const bfloat16* a, int lda, const bfloat16* b, int ldb,
                                          float* d, int ldd) {
  namespace wmma = nvcuda::wmma;
  using BLayout = std::conditional_t<kBColMajor, wmma::col_major, wmma::row_major>;
  const int warp = static_cast<int>(threadIdx.x) >> 5, nw = static_cast<int>(blockDim.x) >> 5, tn = Nc / 16;
  for (int tile = warp; tile < (M / 16) * tn; tile += nw) {
    const int m0 = (tile / tn) * 16, n0 = (tile % tn) * 16;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    if constexpr (kAccumulate) wmma::load_matrix_sync(acc, d + m0 * ldd + n0, ldd, wmma::mem_row_major);
    else wmma::fill_fragment(acc, 0.0f);
    for (int k0 = 0; k0 < K; k0 += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, BLayout> fb;
      wmma::load_matrix_sync(fa, reinterpret_cast<const __nv_bfloat16*>(a + m0 * lda + k0), lda);
      const bfloat16* bp = kBColMajor ? b + n0 * ldb + k0 : b + k0 * ldb + n0;
      wmma::load_matrix_sync(fb, reinterpret_cast<const __nv_bfloat16*>(bp), ldb);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(d + m0 * ldd + n0, acc, ldd, wmma::mem_row_major);
  }
}

// A chunk-start state (k > 0: float in the workspace) or a state given by the caller (type T),
// read from global memory: value(q, n) of the (headdim × d_state) matrix.
template <class T>
struct StateRef {
  const float* f = nullptr;
  const T* t = nullptr;
  int N = 0;
  __device__ __forceinline__ float operator()(int q, int n) const {
    return f ? f[q * N + n] : detail::ld(t, static_cast<int64_t>(q) * N + n);
  }
};

// Forward output of one chunk and one group (heads of the group in turn): y, and final_state in
// the sequence's last chunk. Grid (slots, ngroups). The chunk-start state is read from global
// memory (L1/L2); with bf16 storage (mma) the product C·H_inᵀ runs on tensor cores.
template <class T>
__global__ void __launch_bounds__(kThreads) fwd_out(Params<T> p) {
  ChunkPos c;
  if (!chunk_pos(p, blockIdx.x, c)) return;
  const int64_t g = blockIdx.y;
  const int P = p.P, N = p.N, Q = p.Q, L = c.L;
  const FwdLayout lay = fwd_layout(Q, N, P, p.mma);
  const int ldN = lay.ldN, ldP = lay.ldP, ldQ = lay.ldQ, ldY = lay.ldY;
  const int Lp = (L + 15) / 16 * 16;
  const int64_t PN = static_cast<int64_t>(P) * N;
  const int64_t H = p.nheads, t0 = c.t0;
  extern __shared__ __align__(128) unsigned char ssd_smem[];
  float* smem = reinterpret_cast<float*>(ssd_smem);
  float* sB = smem + lay.B;
  float* sC = smem + lay.C;
  float* sCB = smem + lay.CB;
  float* sM = smem + lay.M;
  float* sX = smem + lay.X;
  float* sY = smem + lay.Y;
  float* s_dt = smem + lay.sc;
  float* s_dtg = s_dt + Q;
  float* s_csdt = s_dtg + Q;
  float* s_cs = s_csdt + Q;
  float* s_coef = s_cs + Q;
  float* s_ecs = s_coef + Q;
  bfloat16* sHb = reinterpret_cast<bfloat16*>(smem + lay.Hb);
  bfloat16* sCe = reinterpret_cast<bfloat16*>(smem + lay.Ce);
  bfloat16* sMb = reinterpret_cast<bfloat16*>(smem + lay.Mb);  // M (bf16, Qp × Qp)
  bfloat16* sXbf = reinterpret_cast<bfloat16*>(smem + lay.Xb);
  const int Qp = lay.Qp;
  for (int e = threadIdx.x; e < L * N; e += blockDim.x) {
    const int t = e / N, n = e % N;
    const int64_t src = ((t0 + t) * p.ngroups + g) * N + n;
    sB[t * ldN + n] = detail::ld(p.B, src);
    sC[t * ldN + n] = detail::ld(p.C, src);
  }
  __syncthreads();
  block_gemm(
      L, L, N, [&](int t, int n) { return sC[t * ldN + n]; }, [&](int n, int s) { return sB[s * ldN + n]; },
      [&](int t, int s, float v) { sCB[t * ldQ + s] = v; });
  const bool has_H = c.k > 0 || p.init != nullptr;
  const bool last = c.k == c.nk - 1;
  for (int64_t j = 0; j < p.hpg; ++j) {
    const int64_t h = g * p.hpg + j;
    StateRef<T> hin;
    hin.N = N;
    if (c.k > 0) hin.f = p.ws_H + (boundary(c.start, c.k, Q) * H + h) * PN;
    else if (p.init) hin.t = p.init + (c.b * H + h) * PN;
    __syncthreads();  // CB written; the previous head's readers are done
    for (int e = threadIdx.x; e < L * P; e += blockDim.x)
      sX[(e / P) * ldP + e % P] = detail::ld(p.x, ((t0 + e / P) * H + h) * P + e % P);
    chunk_scalars(p, c, h, s_dt, s_dtg, s_csdt, s_cs);
    for (int t = threadIdx.x; t < L; t += blockDim.x) {
      s_ecs[t] = expf(s_cs[t]);
      s_coef[t] = expf(s_cs[L - 1] - s_cs[t]) * s_dt[t];
    }
    if (!p.mma) {
      for (int e = threadIdx.x; e < L * L; e += blockDim.x) {
        const int t = e / L, s = e % L;
        sM[t * ldQ + s] = s <= t ? sCB[t * ldQ + s] * expf(s_cs[t] - s_cs[s]) * s_dt[s] : 0.0f;
      }
    } else {  // bf16 M and X, padded with zeros to Lp
      for (int e = threadIdx.x; e < Lp * Lp; e += blockDim.x) {
        const int t = e / Lp, s = e % Lp;
        sMb[t * Qp + s] =
            bfloat16(t < L && s <= t ? sCB[t * ldQ + s] * expf(s_cs[t] - s_cs[s]) * s_dt[s] : 0.0f);
      }
      for (int e = threadIdx.x; e < Lp * P; e += blockDim.x) {
        const int t = e / P, q = e % P;
        sXbf[e] = bfloat16(t < L ? sX[t * ldP + q] : 0.0f);
      }
    }
    if (p.mma && has_H) {  // bf16 operands: diag(exp(cs))·C (rows padded with zeros) and H_in
      for (int e = threadIdx.x; e < Lp * N; e += blockDim.x) {
        const int t = e / N, n = e % N;
        sCe[e] = bfloat16(t < L ? expf(s_cs[t]) * sC[t * ldN + n] : 0.0f);
      }
      for (int e = threadIdx.x; e < P * N; e += blockDim.x) sHb[e] = bfloat16(hin(e / N, e % N));
    }
    __syncthreads();
    // Y = M·X (the chunk's own tokens) ...
    {
      bool done = false;
      if constexpr (mma_type<T>()) {
        if (p.mma) {
          block_mma<false, false>(Lp, P, Lp, sMb, Qp, sXbf, P, sY, ldY);
          done = true;
        }
      }
      if (!done)
        block_gemm(
            L, P, L, [&](int t, int s) { return sM[t * ldQ + s]; }, [&](int s, int q) { return sX[s * ldP + q]; },
            [&](int t, int q, float v) { sY[t * ldY + q] = v; });
    }
    __syncthreads();
    // ... + diag(exp(cs))·C·H_inᵀ.
    if (has_H) {
      bool done = false;
      if constexpr (mma_type<T>()) {
        if (p.mma) {
          block_mma<true, true>(Lp, P, N, sCe, N, sHb, N, sY, ldY);
          done = true;
        }
      }
      if (!done)  // SIMT, transposed (rows q) so that H_in is read along its rows
        block_gemm(
            P, L, N, [&](int q, int n) { return hin(q, n); }, [&](int n, int t) { return sC[t * ldN + n]; },
            [&](int q, int t, float v) { sY[t * ldY + q] += s_ecs[t] * v; });
    }
    if (last && p.final_state) {
      const float elast = expf(s_cs[L - 1]);
      T* fin = p.final_state + (c.b * H + h) * PN;
      block_gemm(
          P, N, L, [&](int q, int s) { return sX[s * ldP + q] * s_coef[s]; },
          [&](int s, int n) { return sB[s * ldN + n]; },
          [&](int q, int n, float v) { detail::st(fin, q * N + n, v + (has_H ? elast * hin(q, n) : 0.0f)); });
    }
    __syncthreads();
    const float Dh = p.D ? detail::ld(p.D, h) : 0.0f;
    for (int e = threadIdx.x; e < L * P; e += blockDim.x) {
      const int t = e / P, q = e % P;
      detail::st(p.y, ((t0 + t) * H + h) * P + q, sY[t * ldY + q] + Dh * sX[t * ldP + q]);
    }
  }
}

// Backward of one chunk and one group (heads in turn): dx, ddt, dinitial_state (chunk 0), the
// dA/dD/ddt_bias partials of (slot, head), and dB, dC summed over the group's heads in order.
// Grid (slots, ngroups). With Gm = dY·Xᵀ, W = Gm∘exp(cs_t − cs_s) (s ≤ t), M = CB∘exp(..)·dt_s,
// w_s = exp(cs_last − cs_s), H the chunk-start state and G the adjoint of the chunk-end state:
//   dx = Mᵀ·dY + D·dy + diag(w·dt)·B·Gᵀ,   dC = (W·diag(dt))·B + diag(exp(cs))·dY·H,
//   dB = diag(dt)·(Wᵀ·C + diag(w)·X·G),    and ∂L/∂cs from these (see the per-token sums).
// H and G are read from global memory (L1/L2); with bf16 storage (mma) the products with H or G,
// dY·Xᵀ and Mᵀ·dY run on tensor cores.
template <class T>
__global__ void __launch_bounds__(kThreads, 2) bwd_main(Params<T> p) {
  const int64_t slot = blockIdx.x, g = blockIdx.y;
  const int64_t H = p.nheads;
  ChunkPos c;
  if (!chunk_pos(p, slot, c)) {  // unused slot: zero partials
    for (int e = threadIdx.x; e < 3 * p.hpg; e += blockDim.x)
      p.ws_par[slot * 3 * H + (e / p.hpg) * H + g * p.hpg + e % p.hpg] = 0.0f;
    return;
  }
  const int P = p.P, N = p.N, Q = p.Q, L = c.L;
  const BwdLayout lay = bwd_layout(Q, N, P, p.mma);
  const int ldN = lay.ldN, ldP = lay.ldP, ldQ = lay.ldQ, ldE = lay.ldE, ldT = lay.ldT;
  const int Lp = (L + 15) / 16 * 16;
  const int64_t PN = static_cast<int64_t>(P) * N;
  extern __shared__ __align__(128) unsigned char ssd_smem[];
  float* smem = reinterpret_cast<float*>(ssd_smem);
  float* sB = smem + lay.B;
  float* sC = smem + lay.C;
  float* sE1 = smem + lay.E1;
  float* sE2 = smem + lay.E2;
  float* sCB = smem + lay.CB;
  float* sM = smem + lay.M;
  float* sW = smem + lay.W;
  float* sX = smem + lay.X;
  float* sdY = smem + lay.dY;
  float* sT = smem + lay.T;  // dx staging
  float* sdB = smem + lay.dB;
  float* sdC = smem + lay.dC;
  float* s_dt = smem + lay.sc;
  float* s_dtg = s_dt + Q;
  float* s_csdt = s_dtg + Q;
  float* s_cs = s_csdt + Q;
  float* s_ecs = s_cs + Q;
  float* s_w = s_ecs + Q;
  float* s_pos = s_w + Q;
  float* s_u = s_pos + Q;
  float* s_v = s_u + Q;
  float* s_dD = s_v + Q;
  float* s_ddt = s_dD + Q;
  float* s_red = smem + lay.red;  // kThreads / 32 floats
  bfloat16* sHb = reinterpret_cast<bfloat16*>(smem + lay.Hb);
  bfloat16* sGb = reinterpret_cast<bfloat16*>(smem + lay.Gb);
  bfloat16* sXb = reinterpret_cast<bfloat16*>(smem + lay.Xb);
  bfloat16* sdYe = reinterpret_cast<bfloat16*>(smem + lay.dYe);
  bfloat16* sBw = reinterpret_cast<bfloat16*>(smem + lay.Bw);
  bfloat16* sdYb = reinterpret_cast<bfloat16*>(smem + lay.dYb);  // dY (bf16)
  bfloat16* sMtb = reinterpret_cast<bfloat16*>(smem + lay.Mtb);  // Mᵀ (bf16, Qp × Qp)
  float* sGm = smem + lay.Gm;                                    // dY·Xᵀ (fp32, Qp × ldG)
  const int Qp = lay.Qp, ldG = lay.ldG;
  for (int e = threadIdx.x; e < L * N; e += blockDim.x) {
    const int t = e / N, n = e % N;
    const int64_t src = ((c.t0 + t) * p.ngroups + g) * N + n;
    sB[t * ldN + n] = detail::ld(p.B, src);
    sC[t * ldN + n] = detail::ld(p.C, src);
  }
  __syncthreads();
  block_gemm(
      L, L, N, [&](int t, int n) { return sC[t * ldN + n]; }, [&](int n, int s) { return sB[s * ldN + n]; },
      [&](int t, int s, float v) { sCB[t * ldQ + s] = v; });
  const bool has_H = c.k > 0 || p.init != nullptr;
  const bool last = c.k == c.nk - 1;
  const bool has_G = !last || p.dfinal != nullptr;
  const int64_t t0 = c.t0;
  for (int64_t j = 0; j < p.hpg; ++j) {
    const int64_t h = g * p.hpg + j;
    StateRef<T> hin, gend;
    hin.N = gend.N = N;
    if (c.k > 0) hin.f = p.ws_H + (boundary(c.start, c.k, Q) * H + h) * PN;
    else if (p.init) hin.t = p.init + (c.b * H + h) * PN;
    if (!last) gend.f = p.ws_G + (boundary(c.start, c.k + 1, Q) * H + h) * PN;
    else if (p.dfinal) gend.t = p.dfinal + (c.b * H + h) * PN;
    __syncthreads();  // CB written; the previous head's readers are done
    for (int e = threadIdx.x; e < L * P; e += blockDim.x) {
      const int t = e / P, q = e % P;
      const int64_t src = ((t0 + t) * H + h) * P + q;
      sX[t * ldP + q] = detail::ld(p.x, src);
      sdY[t * ldP + q] = detail::ld(p.dy, src);
    }
    chunk_scalars(p, c, h, s_dt, s_dtg, s_csdt, s_cs);
    for (int t = threadIdx.x; t < L; t += blockDim.x) {
      s_ecs[t] = expf(s_cs[t]);
      s_w[t] = expf(s_cs[L - 1] - s_cs[t]);
    }
    if (!p.mma) {
      for (int e = threadIdx.x; e < L * L; e += blockDim.x) {
        const int t = e / L, s = e % L;
        sM[t * ldQ + s] = s <= t ? sCB[t * ldQ + s] * expf(s_cs[t] - s_cs[s]) * s_dt[s] : 0.0f;
      }
    }
    if (p.mma) {  // bf16 operands, token rows padded with zeros to Lp
      for (int e = threadIdx.x; e < Lp * Lp; e += blockDim.x) {  // Mᵀ: row s, column t
        const int s = e / Lp, t = e % Lp;
        sMtb[s * Qp + t] =
            bfloat16(t < L && s <= t ? sCB[t * ldQ + s] * expf(s_cs[t] - s_cs[s]) * s_dt[s] : 0.0f);
      }
      for (int e = threadIdx.x; e < Lp * P; e += blockDim.x) {
        const int t = e / P, q = e % P;
        sXb[e] = bfloat16(t < L ? sX[t * ldP + q] : 0.0f);
        sdYb[e] = bfloat16(t < L ? sdY[t * ldP + q] : 0.0f);
      }
      if (has_G) {
        for (int e = threadIdx.x; e < P * N; e += blockDim.x) sGb[e] = bfloat16(gend(e / N, e % N));
        for (int e = threadIdx.x; e < Lp * N; e += blockDim.x) {
          const int t = e / N, n = e % N;
          sBw[e] = bfloat16(t < L ? expf(s_cs[L - 1] - s_cs[t]) * s_dt[t] * sB[t * ldN + n] : 0.0f);
        }
      }
      if (has_H) {
        for (int e = threadIdx.x; e < P * N; e += blockDim.x) sHb[e] = bfloat16(hin(e / N, e % N));
        for (int e = threadIdx.x; e < Lp * P; e += blockDim.x) {
          const int t = e / P, q = e % P;
          sdYe[e] = bfloat16(t < L ? expf(s_cs[t]) * sdY[t * ldP + q] : 0.0f);
        }
      }
    }
    __syncthreads();
    // W = (dY·Xᵀ)∘exp(cs_t − cs_s), lower triangle (with mma: dY·Xᵀ into sGm, W formed below).
    {
      bool done = false;
      if constexpr (mma_type<T>()) {
        if (p.mma) {
          block_mma<true, false>(Lp, Lp, P, sdYb, P, sXb, P, sGm, ldG);
          done = true;
        }
      }
      if (!done)
        block_gemm(
            L, L, P, [&](int t, int q) { return sdY[t * ldP + q]; }, [&](int q, int s) { return sX[s * ldP + q]; },
            [&](int t, int s, float v) { sW[t * ldQ + s] = s <= t ? v * expf(s_cs[t] - s_cs[s]) : 0.0f; });
    }
    // E2 = X·G.
    if (has_G) {
      bool done = false;
      if constexpr (mma_type<T>()) {
        if (p.mma) {
          block_mma<false, false>(Lp, N, P, sXb, P, sGb, N, sE2, ldE);
          done = true;
        }
      }
      if (!done)
        block_gemm(
            L, N, P, [&](int s, int q) { return sX[s * ldP + q]; }, [&](int q, int n) { return gend(q, n); },
            [&](int s, int n, float v) { sE2[s * ldE + n] = v; });
    }
    // dx staging: Mᵀ·dY.
    {
      bool done = false;
      if constexpr (mma_type<T>()) {
        if (p.mma) {
          block_mma<false, false>(Lp, P, Lp, sMtb, Qp, sdYb, P, sT, ldT);
          done = true;
        }
      }
      if (!done)
        block_gemm(
            L, P, L, [&](int s, int t) { return sM[t * ldQ + s]; }, [&](int t, int q) { return sdY[t * ldP + q]; },
            [&](int s, int q, float v) { sT[s * ldT + q] = v; });
    }
    __syncthreads();
    // W = Gm∘exp(cs_t − cs_s), lower triangle, kept in fp32: the products with W feed ∂L/∂cs,
    // whose row and column sums cancel (bf16 W there costs ~2e-2 on dA).
    if (p.mma) {
      for (int e = threadIdx.x; e < L * L; e += blockDim.x) {
        const int t = e / L, s = e % L;
        sW[t * ldQ + s] = s <= t ? sGm[t * ldG + s] * expf(s_cs[t] - s_cs[s]) : 0.0f;
      }
    }
    // dx staging += diag(w·dt)·B·Gᵀ.
    if (has_G) {
      bool done = false;
      if constexpr (mma_type<T>()) {
        if (p.mma) {
          block_mma<true, true>(Lp, P, N, sBw, N, sGb, N, sT, ldT);
          done = true;
        }
      }
      if (!done)  // SIMT, transposed (rows q) so that G is read along its rows
        block_gemm(
            P, L, N, [&](int q, int n) { return gend(q, n); }, [&](int n, int s) { return sB[s * ldN + n]; },
            [&](int q, int s, float v) { sT[s * ldT + q] += s_w[s] * s_dt[s] * v; });
    }
    if (p.mma) __syncthreads();  // W complete
    // E1 = this head's dC = (W·diag(dt))·B + diag(exp(cs))·dY·H (the second term below on
    // tensor cores with mma).
    const bool inter_simt = has_H && !p.mma;
    block_gemm(
        L, N, L + (inter_simt ? P : 0),
        [&](int t, int k) { return k < L ? sW[t * ldQ + k] * s_dt[k] : s_ecs[t] * sdY[t * ldP + (k - L)]; },
        [&](int k, int n) { return k < L ? sB[k * ldN + n] : hin(k - L, n); },
        [&](int t, int n, float v) { sE1[t * ldE + n] = v; });
    __syncthreads();
    if constexpr (mma_type<T>()) {
      if (p.mma && has_H) {  // + diag(exp(cs))·dY·H
        block_mma<false, true>(Lp, N, P, sdYe, P, sHb, N, sE1, ldE);
        __syncthreads();
      }
    }
    {
      const float Dh = p.D ? detail::ld(p.D, h) : 0.0f;
      for (int e = threadIdx.x; e < L * P; e += blockDim.x) {
        const int s = e / P, q = e % P;
        detail::st(p.dx, ((t0 + s) * H + h) * P + q, sT[s * ldT + q] + Dh * sdY[s * ldP + q]);
      }
    }
    for (int e = threadIdx.x; e < L * N; e += blockDim.x) {
      const int t = e / N, n = e % N;
      sdC[t * N + n] = (j == 0 ? 0.0f : sdC[t * N + n]) + sE1[t * ldE + n];
    }
    // Per-token sums, one warp per token: lane-strided partial sums, then warp_sum (fixed order).
    for (int t = static_cast<int>(threadIdx.x >> 5); t < L; t += static_cast<int>(blockDim.x >> 5)) {
      const int lane = static_cast<int>(threadIdx.x & 31);
      float pos = 0.0f, dd = 0.0f;
      for (int n = lane; n < N; n += 32) pos += sC[t * ldN + n] * sE1[t * ldE + n];
      for (int q = lane; q < P; q += 32) dd += sdY[t * ldP + q] * sX[t * ldP + q];
      pos = warp_sum(pos);
      dd = warp_sum(dd);
      if (lane == 0) {
        s_pos[t] = pos;  // ∂L/∂cs_t through exp(cs_t − ·) and exp(cs_t)
        s_dD[t] = dd;
      }
    }
    __syncthreads();
    // E1 = Wᵀ·C.
    block_gemm(
        L, N, L, [&](int s, int t) { return sW[t * ldQ + s]; }, [&](int t, int n) { return sC[t * ldN + n]; },
        [&](int s, int n, float v) { sE1[s * ldE + n] = v; });
    __syncthreads();
    for (int e = threadIdx.x; e < L * N; e += blockDim.x) {
      const int s = e / N, n = e % N;
      const float v = s_dt[s] * (sE1[s * ldE + n] + (has_G ? s_w[s] * sE2[s * ldE + n] : 0.0f));
      sdB[s * N + n] = (j == 0 ? 0.0f : sdB[s * N + n]) + v;
    }
    for (int s = static_cast<int>(threadIdx.x >> 5); s < L; s += static_cast<int>(blockDim.x >> 5)) {
      const int lane = static_cast<int>(threadIdx.x & 31);
      float u = 0.0f, vv = 0.0f;
      for (int n = lane; n < N; n += 32) {
        const float e2 = has_G ? sE2[s * ldE + n] : 0.0f;
        u += sB[s * ldN + n] * (sE1[s * ldE + n] + s_w[s] * e2);
        vv += sB[s * ldN + n] * e2;
      }
      u = warp_sum(u);
      vv = warp_sum(vv);
      if (lane == 0) {
        s_u[s] = u;   // ∂L/∂dt_s directly (not through cs)
        s_v[s] = vv;  // x_s·G·B_s
      }
    }
    {  // <G, H_in>: per-thread strided sums, then per-warp shuffles, then the warps in order
      float r = 0.0f;
      if (has_G && has_H)
        for (int e = threadIdx.x; e < P * N; e += blockDim.x) r += gend(e / N, e % N) * hin(e / N, e % N);
      r = warp_sum(r);
      if ((threadIdx.x & 31) == 0) s_red[threadIdx.x >> 5] = r;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      float gh = 0.0f;
      for (int i = 0; i < static_cast<int>(blockDim.x >> 5); ++i) gh += s_red[i];
      float end_term = expf(s_cs[L - 1]) * gh;  // ∂L/∂cs_last through exp(cs_last)·H_in and the w_s
      for (int s = 0; s < L; ++s) end_term += s_w[s] * s_dt[s] * s_v[s];
      const float a = detail::ld(p.A, h);
      float rev = 0.0f, dA = 0.0f, ddb = 0.0f, dD = 0.0f;
      for (int t = L - 1; t >= 0; --t) {
        const float dcs = s_pos[t] - s_dt[t] * s_u[t] + (t == L - 1 ? end_term : 0.0f);
        rev += dcs;
        dA += dcs * s_csdt[t];
        const float d_raw = (s_u[t] + a * rev) * s_dtg[t];
        s_ddt[t] = d_raw;
        ddb += d_raw;
        dD += s_dD[t];
      }
      p.ws_par[slot * 3 * H + h] = dA;
      p.ws_par[slot * 3 * H + H + h] = dD;
      p.ws_par[slot * 3 * H + 2 * H + h] = ddb;
    }
    __syncthreads();
    for (int t = threadIdx.x; t < L; t += blockDim.x) detail::st(p.ddt, (t0 + t) * H + h, s_ddt[t]);
    if (c.k == 0 && p.dinit) {
      const float elast = expf(s_cs[L - 1]);
      T* di = p.dinit + (c.b * H + h) * PN;
      block_gemm(
          P, N, L, [&](int q, int t) { return sdY[t * ldP + q] * s_ecs[t]; },
          [&](int t, int n) { return sC[t * ldN + n]; },
          [&](int q, int n, float v) { detail::st(di, q * N + n, v + (has_G ? elast * gend(q, n) : 0.0f)); });
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < L * N; e += blockDim.x) {
    const int t = e / N, n = e % N;
    const int64_t dst = ((t0 + t) * p.ngroups + g) * N + n;
    detail::st(p.dB, dst, sdB[t * N + n]);
    detail::st(p.dC, dst, sdC[t * N + n]);
  }
}

template <class T>
constexpr void check_type() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bfloat16>,
                "cuda::ssd supports float and bfloat16 storage");
}

inline std::size_t smem_limit() {
  int dev = 0, v = 0;
  MAMBATRACK_CUDA_CHECK(cudaGetDevice(&dev));
  MAMBATRACK_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return static_cast<std::size_t>(v);
}

// The chunk size actually run: the requested one (at most kMaxChunk), halved until the
// kernels' shared memory fits. The results do not depend on it beyond rounding.
inline int64_t pick_chunk(int64_t requested, int64_t N, int64_t P, bool backward, bool mma, std::size_t limit) {
  int64_t Q = requested < kMaxChunk ? requested : kMaxChunk;
  auto bytes = [&](int64_t q) {
    const int64_t f = backward ? bwd_floats(q, N, P, mma) : fwd_floats(q, N, P, mma);
    const int64_t o = outer_floats(q, N, P);
    return static_cast<std::size_t>(f > o ? f : o) * sizeof(float);
  };
  while (Q > 1 && bytes(Q) > limit) Q = (Q + 1) / 2;
  MAMBATRACK_CHECK(bytes(Q) <= limit, ConfigError, "cuda ssd: d_state ", N, " and headdim ", P,
                   " need more shared memory than the device has (", limit, " bytes per block)");
  return Q;
}

inline std::size_t align_up(std::size_t n) { return (n + 255) / 256 * 256; }

template <class T>
Params<T> make_params(const SsdInputs<T, Cuda>& in, const SsdDims& d, int64_t chunk, bool backward) {
  MAMBATRACK_CHECK(d.nheads <= 65535 && d.ngroups <= 65535, ConfigError, "cuda ssd: nheads ", d.nheads,
                   " must be at most 65535");
  // d_state and headdim are run-time sizes of the tiles; only the supported values are accepted.
  dispatch_value(SupportedDState{}, static_cast<int>(d.d_state), "ssd d_state (CUDA)", [](auto) {});
  dispatch_value(SupportedHeadDim{}, static_cast<int>(d.headdim), "ssd headdim (CUDA)", [](auto) {});
  Params<T> p;
  p.x = in.x.data;
  p.dt = in.dt.data;
  p.dt_bias = ssd_detail::given(in.dt_bias) ? in.dt_bias.data : nullptr;
  p.A = in.A.data;
  p.B = in.B.data;
  p.C = in.C.data;
  p.D = ssd_detail::given(in.D) ? in.D.data : nullptr;
  p.init = ssd_detail::given(in.initial_state) ? in.initial_state.data : nullptr;
  p.cu = in.cu_seqlens.data;
  p.tokens = d.tokens;
  p.nheads = d.nheads;
  p.ngroups = d.ngroups;
  p.hpg = d.heads_per_group();
  p.batch = d.batch;
  p.P = static_cast<int>(d.headdim);
  p.N = static_cast<int>(d.d_state);
  p.mma = use_mma(mma_type<T>(), d.d_state, d.headdim);
  p.Q = static_cast<int>(pick_chunk(chunk, d.d_state, d.headdim, backward, p.mma, smem_limit()));
  p.slots = d.batch + d.tokens / p.Q;
  p.nb = d.tokens / p.Q + 1;
  MAMBATRACK_CHECK(p.slots < (int64_t{1} << 31) && d.batch * d.nheads < (int64_t{1} << 31), ConfigError,
                   "cuda ssd: batch ", d.batch, " and ", d.tokens, " tokens are too many for one call; split the batch");
  p.dt_min = static_cast<float>(in.dt_min);
  p.dt_max = static_cast<float>(in.dt_max);
  return p;
}

// Scratch (id 1): slot map, states, adjoints, partials. Builds the slot map on `stream`.
template <class T>
float* prepare(Params<T>& p, bool backward, cudaStream_t stream) {
  const std::size_t PN = static_cast<std::size_t>(p.P) * p.N, H = static_cast<std::size_t>(p.nheads);
  const std::size_t nb = static_cast<std::size_t>(p.nb), slots = static_cast<std::size_t>(p.slots);
  const std::size_t map_b = align_up(2 * slots * sizeof(int));
  const std::size_t st_b = align_up(nb * H * PN * sizeof(float));
  const std::size_t dec_b = align_up(nb * H * sizeof(float));
  const std::size_t par_b = backward ? align_up(slots * 3 * H * sizeof(float)) : 0;
  const std::size_t tmp_b = backward ? align_up(((slots + 63) / 64 * H + 1) * sizeof(float)) : 0;
  const std::size_t total = map_b + st_b + dec_b + (backward ? st_b + dec_b : 0) + par_b + tmp_b;
  char* base = static_cast<char*>(detail::scratch(1, total));
  p.slot_seq = reinterpret_cast<int*>(base);
  p.slot_k = p.slot_seq + slots;
  base += map_b;
  p.ws_H = reinterpret_cast<float*>(base);
  base += st_b;
  p.ws_dec = reinterpret_cast<float*>(base);
  base += dec_b;
  float* tmp = nullptr;
  if (backward) {
    p.ws_G = reinterpret_cast<float*>(base);
    base += st_b;
    p.ws_decb = reinterpret_cast<float*>(base);
    base += dec_b;
    p.ws_par = reinterpret_cast<float*>(base);
    base += par_b;
    tmp = reinterpret_cast<float*>(base);
  }
  MAMBATRACK_CUDA_CHECK(cudaMemsetAsync(p.slot_seq, 0xff, slots * sizeof(int), stream));
  map_slots<<<static_cast<unsigned>((p.batch + 127) / 128), 128, 0, stream>>>(p.cu, p.batch, p.tokens, p.Q, p.slots,
                                                                              p.slot_seq, p.slot_k);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  return tmp;
}

template <class K>
void set_smem(K kernel, std::size_t bytes) {
  MAMBATRACK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

// The forward chunk states and state passing (ws_H holds every chunk-start state after it).
template <class T>
void launch_states(const Params<T>& p, cudaStream_t stream) {
  const std::size_t ob = static_cast<std::size_t>(outer_floats(p.Q, p.N, p.P)) * sizeof(float);
  set_smem(chunk_outer<T>, ob);
  chunk_outer<T><<<outer_grid(p), kThreads, ob, stream>>>(p, 0);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  pass_states<T><<<pass_grid(p), kThreads, 0, stream>>>(p, 0);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
}

}  // namespace ssd_cuda_detail

// Forward on `stream`: y, and final_state when given. cu_seqlens lives on the device and is not
// read by the host: it must be valid (validate it on the host before uploading); sequences with
// impossible ranges are skipped. The chunk size run is a.chunk_size, reduced when the shared
// memory of (d_state, headdim) requires it (at most 256). Scratch id 1.
template <class T>
void ssd_fwd(const SsdFwdArgs<T, Cuda>& a, cudaStream_t stream = nullptr) {
  namespace D = ssd_cuda_detail;
  D::check_type<T>();
  const SsdDims d = validate_ssd_fwd(a);
  D::Params<T> p = D::make_params<T>(a.in, d, a.chunk_size, /*backward=*/false);
  if (d.batch == 0 || d.nheads == 0) return;
  p.y = a.y.data;
  p.final_state = ssd_detail::given(a.final_state) ? a.final_state.data : nullptr;
  D::prepare(p, false, stream);
  D::launch_states(p, stream);
  const std::size_t fb = static_cast<std::size_t>(D::fwd_floats(p.Q, p.N, p.P, p.mma)) * sizeof(float);
  D::set_smem(D::fwd_out<T>, fb);
  D::fwd_out<T><<<dim3(static_cast<unsigned>(p.slots), static_cast<unsigned>(p.ngroups)), D::kThreads, fb, stream>>>(p);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
}

// Backward on `stream` (recomputes the chunk states; no saved state needed): overwrites dx,
// ddt, dB, dC, dinitial_state; accumulates into dA, dD, ddt_bias. No atomics: bit-identical
// from run to run. Scratch id 1.
template <class T>
void ssd_bwd(const SsdBwdArgs<T, Cuda>& a, cudaStream_t stream = nullptr) {
  namespace D = ssd_cuda_detail;
  D::check_type<T>();
  const SsdDims d = validate_ssd_bwd(a);
  D::Params<T> p = D::make_params<T>(a.in, d, a.chunk_size, /*backward=*/true);
  if (d.batch == 0 || d.nheads == 0) return;
  p.dy = a.dy.data;
  p.dfinal = ssd_detail::given(a.dfinal_state) ? a.dfinal_state.data : nullptr;
  p.dx = a.dx.data;
  p.ddt = a.ddt.data;
  p.dB = a.dB.data;
  p.dC = a.dC.data;
  p.dinit = ssd_detail::given(a.dinitial_state) ? a.dinitial_state.data : nullptr;
  float* tmp = D::prepare(p, true, stream);
  D::launch_states(p, stream);
  const std::size_t ob = static_cast<std::size_t>(D::outer_floats(p.Q, p.N, p.P)) * sizeof(float);
  D::chunk_outer<T><<<D::outer_grid(p), D::kThreads, ob, stream>>>(p, 1);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  D::pass_states<T><<<D::pass_grid(p), D::kThreads, 0, stream>>>(p, 1);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  const std::size_t bb = static_cast<std::size_t>(D::bwd_floats(p.Q, p.N, p.P, p.mma)) * sizeof(float);
  D::set_smem(D::bwd_main<T>, bb);
  D::bwd_main<T><<<dim3(static_cast<unsigned>(p.slots), static_cast<unsigned>(p.ngroups)), D::kThreads, bb, stream>>>(p);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  const int64_t H = p.nheads;
  MAMBATRACK_CHECK((p.slots + 63) / 64 < 65536, ConfigError, "cuda ssd: too many chunks (", p.slots, ") for one call");
  detail::sum_rows_accumulate<T>(p.ws_par, p.slots, 3 * H, H, tmp, a.dA.data, stream);
  if (p.D) detail::sum_rows_accumulate<T>(p.ws_par + H, p.slots, 3 * H, H, tmp, a.dD.data, stream);
  if (p.dt_bias) detail::sum_rows_accumulate<T>(p.ws_par + 2 * H, p.slots, 3 * H, H, tmp, a.ddt_bias.data, stream);
}

}  // namespace mambatrack::cuda
