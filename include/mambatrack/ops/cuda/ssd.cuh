// CUDA Mamba2 SSD scan (math and argument structs: ops/ssd.hpp), chunked as in mamba_ssm's
// ssd_combined: per chunk of Q tokens of one sequence, with cs_t = A·Σ_{k≤t} dt_k,
//   y_t   = Σ_{s≤t} (C_t·B_s)·exp(cs_t − cs_s)·dt_s·x_s + exp(cs_t)·H_in·C_t + D·x_t
//   H_out = exp(cs_last)·H_in + Σ_s exp(cs_last − cs_s)·dt_s·x_s ⊗ B_s,
// chunk states passed along each (sequence, head); chunks never cross a sequence start. The
// backward recomputes the states and runs the transposed products. Float or bfloat16 storage,
// float math and state; with bfloat16 and headdim, d_state multiples of 16 the products with the
// chunk states, C·Bᵀ, M·X, dY·Xᵀ, Mᵀ·dY and the backward's dB, dC run on tensor cores (WMMA bf16
// 16x16x16, fp32 accumulate; bwd_mma), the backward's ∂L/∂cs sums (which cancel) from fp32
// W∘(C·Bᵀ) (the previous backward bwd_main, selected by MAMBATRACK_SSD_BWD_V1, keeps C·Bᵀ and
// the products with W fp32 SIMT); float storage runs shared-memory tiled fp32 SIMT products
// throughout (bwd_main). d_state and headdim are run-time tile sizes (one instantiation per
// storage type), restricted to the supported lists of core/supported.hpp. Deterministic: no
// atomics; dA/dD/ddt_bias are per-(chunk, head) partials summed in a fixed order; dB/dC are
// summed over the heads of a group in head order inside one block. With max_seqlen_hint no
// larger than the chunk every sequence is one chunk: no slot map, chunk states or state passing,
// and (bf16, no initial / final states) fwd_short / bwd_short run a warp per head. The forward
// may save its chunk-start states (SsdFwdArgs::saved_states) for the backward, which then skips
// their recompute. Switches for A/B timing: MAMBATRACK_SSD_NO_SINGLE, MAMBATRACK_SSD_NO_SHORT,
// MAMBATRACK_SSD_NO_SAVED, MAMBATRACK_SSD_BWD_V1, MAMBATRACK_SSD_OCCUPANCY_CHUNK.
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
  // Every sequence fits one chunk (max_seqlen_hint <= Q): slot b is sequence b, no slot map, no
  // chunk states or adjoints (the kernels read initial_state / dfinal_state directly).
  bool single = false;
  int Qs = 0;  // chunk of the chunk-start states in ws_H (0: Q; else Q is a multiple of Qs)
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
  if (p.single) {  // slot = sequence; empty ones and ones longer than Q (a wrong hint): single_edges
    if (slot >= p.batch) return false;
    c.b = slot;
    c.k = 0;
    c.start = p.cu[slot];
    c.end = p.cu[slot + 1];
    c.t0 = c.start;
    const int64_t len = c.end - c.start;
    c.L = static_cast<int>(len);
    c.nk = 1;
    return len > 0 && len <= p.Q;
  }
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
// The ws_H boundary of chunk k's start state (k >= 1): states at chunk Qs, chunks at Q = r·Qs.
template <class T>
__device__ __forceinline__ int64_t h_boundary(const Params<T>& p, int64_t start, int64_t k) {
  return p.Qs > 0 ? boundary(start, k * (p.Q / p.Qs), p.Qs) : boundary(start, k, p.Q);
}

// Single-chunk mode (p.single): a sequence that is empty or longer than the chunk (a wrong
// max_seqlen_hint), for group g (the output kernels skip these; single_edges runs after them). Empty: final_state = initial_state (or 0) (forward) /
// dinitial_state = dfinal_state (or 0), zero partials (backward). Too long: NaN outputs (y;
// dx, ddt, dB, dC, partials), so that a wrong hint cannot pass unnoticed. Returns whether it
// handled the slot (the kernel then returns).
template <class T>
__device__ __forceinline__ bool single_edge(const Params<T>& p, const ChunkPos& c, int64_t g, bool backward) {
  if (!p.single || (c.L > 0 && c.L <= p.Q)) return false;
  const int64_t H = p.nheads, PN = static_cast<int64_t>(p.P) * p.N;
  const float nan = bits_float(0x7fc00000u);
  const int nt = static_cast<int>(blockDim.x);
  for (int64_t j = 0; j < p.hpg; ++j) {
    const int64_t h = g * p.hpg + j;
    if (c.L == 0) {
      const T* src = backward ? p.dfinal : p.init;
      T* dst = backward ? p.dinit : p.final_state;
      if (dst)
        for (int64_t e = threadIdx.x; e < PN; e += nt)
          detail::st(dst, (c.b * H + h) * PN + e, src ? detail::ld(src, (c.b * H + h) * PN + e) : 0.0f);
    } else {
      const int64_t rows = c.end - c.start;
      T* out = backward ? p.dx : p.y;
      for (int64_t e = threadIdx.x; e < rows * p.P; e += nt)
        detail::st(out, ((c.t0 + e / p.P) * H + h) * p.P + e % p.P, nan);
      if (backward)
        for (int64_t t = threadIdx.x; t < rows; t += nt) detail::st(p.ddt, (c.t0 + t) * H + h, nan);
      if (!backward && p.final_state)
        for (int64_t e = threadIdx.x; e < PN; e += nt) detail::st(p.final_state, (c.b * H + h) * PN + e, nan);
    }
    if (backward && threadIdx.x < 3) p.ws_par[c.b * 3 * H + threadIdx.x * H + h] = c.L == 0 ? 0.0f : nan;
  }
  if (backward && c.L > 0) {
    const int64_t rows = c.end - c.start;
    for (int64_t e = threadIdx.x; e < rows * p.N; e += nt) {
      const int64_t dst = ((c.t0 + e / p.N) * p.ngroups + g) * p.N + e % p.N;
      detail::st(p.dB, dst, nan);
      detail::st(p.dC, dst, nan);
    }
  }
  return true;
}
// Grid (batch), after the output kernel: single_edge of every group of sequence blockIdx.x.
template <class T>
__global__ void single_edges(Params<T> p, bool backward) {
  const int64_t b = blockIdx.x;
  if (b >= p.batch) return;
  ChunkPos c;
  c.b = b;
  c.k = 0;
  c.start = p.cu[b];
  c.end = p.cu[b + 1];
  c.t0 = c.start;
  const int64_t len = c.end - c.start;
  if (len > 0 && len <= p.Q) return;
  c.L = static_cast<int>(len <= 0 ? 0 : p.Q + 1);
  c.nk = len > 0 ? 1 : 0;
  for (int64_t g = 0; g < p.ngroups; ++g) single_edge(p, c, g, backward);
}

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

// Asks the L2 cache for the `bytes` bytes at `ptr` (16-byte aligned, a multiple of 16; one
// thread issues it, nothing waits for it): a Hopper bulk prefetch, nothing on older devices and
// in the host emulation.
__device__ __forceinline__ void prefetch_l2(const void* ptr, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(ptr), "r"(bytes));
#else
  (void)ptr;
  (void)bytes;
#endif
}

// Sum over the warp's lanes (butterfly, the same order every time); every lane gets the total.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
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

// dst[r·ld + c] = src[r·stride + c] (r < rows, c < cols) as float, for a tile of global memory:
// kLoadBatch elements per thread are loaded before any is stored, so one global-memory latency
// covers them (a plain loop waits for each load in turn). Every thread of the block calls it.
constexpr int kLoadBatch = 4;
template <class T>
__device__ __forceinline__ void load_tile(const T* src, int64_t stride, int rows, int cols, float* dst, int ld) {
  const int n = rows * cols, nt = static_cast<int>(blockDim.x);
  for (int e0 = static_cast<int>(threadIdx.x); e0 < n; e0 += kLoadBatch * nt) {
    float v[kLoadBatch];
#pragma unroll
    for (int u = 0; u < kLoadBatch; ++u) {
      const int e = e0 + u * nt;
      if (e < n) v[u] = detail::ld(src, (e / cols) * stride + e % cols);
    }
#pragma unroll
    for (int u = 0; u < kLoadBatch; ++u) {
      const int e = e0 + u * nt;
      if (e < n) dst[(e / cols) * ld + e % cols] = v[u];
    }
  }
}

// dst[r·cols + c] = src[r·stride + c]·scale[r] (scale null: 1) as bf16 for r < rows, 0 for
// rows <= r < rows_p (the zero padding of a tensor-core operand); batched like load_tile. bf16
// rows that are 16-byte aligned (cols and stride multiples of 8) move 8 elements per 16-byte load
// and store (the same values: bf16 products rounded once, as below).
template <class T>
__device__ __forceinline__ void load_tile_bf16(const T* src, int64_t stride, int rows, int rows_p, int cols,
                                               bfloat16* dst, const float* scale = nullptr) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    if (cols % 8 == 0 && stride % 8 == 0 && (reinterpret_cast<std::uintptr_t>(src) & 15u) == 0) {
      const int c8 = cols / 8, n8 = rows_p * c8, nt = static_cast<int>(blockDim.x);
      for (int e0 = static_cast<int>(threadIdx.x); e0 < n8; e0 += kLoadBatch * nt) {
        uint4 v[kLoadBatch];
#pragma unroll
        for (int u = 0; u < kLoadBatch; ++u) {
          const int e = e0 + u * nt, r = e / c8;
          v[u].x = v[u].y = v[u].z = v[u].w = 0u;
          if (e < n8 && r < rows) v[u] = *reinterpret_cast<const uint4*>(src + r * stride + (e % c8) * 8);
        }
#pragma unroll
        for (int u = 0; u < kLoadBatch; ++u) {
          const int e = e0 + u * nt, r = e / c8;
          if (e >= n8) continue;
          if (scale && r < rows) {
            const float sc = scale[r];
            auto scaled = [sc](unsigned w) {  // two bf16 (low half first) times sc
              const float lo = bits_float(w << 16) * sc, hi = bits_float(w & 0xffff0000u) * sc;
              return static_cast<unsigned>(float_to_bf16_bits(lo)) | (static_cast<unsigned>(float_to_bf16_bits(hi)) << 16);
            };
            v[u].x = scaled(v[u].x);
            v[u].y = scaled(v[u].y);
            v[u].z = scaled(v[u].z);
            v[u].w = scaled(v[u].w);
          }
          *reinterpret_cast<uint4*>(dst + e * 8) = v[u];
        }
      }
      return;
    }
  }
  const int n = rows_p * cols, nt = static_cast<int>(blockDim.x);
  for (int e0 = static_cast<int>(threadIdx.x); e0 < n; e0 += kLoadBatch * nt) {
    float v[kLoadBatch];
#pragma unroll
    for (int u = 0; u < kLoadBatch; ++u) {
      const int e = e0 + u * nt;
      v[u] = e < rows * cols ? detail::ld(src, (e / cols) * stride + e % cols) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kLoadBatch; ++u) {
      const int e = e0 + u * nt;
      if (e < n) dst[e] = bfloat16(scale && e < rows * cols ? v[u] * scale[e / cols] : v[u]);
    }
  }
}

// load_tile_bf16 of two tiles of the same shape (no scale), with the loads of both in flight
// together where the 16-byte path applies.
template <class T>
__device__ __forceinline__ void load_two_tiles_bf16(const T* a, const T* b, int64_t stride, int rows, int rows_p,
                                                    int cols, bfloat16* da, bfloat16* db) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    if (cols % 8 == 0 && stride % 8 == 0 && ((reinterpret_cast<std::uintptr_t>(a) | reinterpret_cast<std::uintptr_t>(b)) & 15u) == 0) {
      const int c8 = cols / 8, n8 = rows_p * c8, nt = static_cast<int>(blockDim.x);
      for (int e0 = static_cast<int>(threadIdx.x); e0 < 2 * n8; e0 += kLoadBatch * nt) {
        uint4 v[kLoadBatch];
#pragma unroll
        for (int u = 0; u < kLoadBatch; ++u) {
          const int e = e0 + u * nt, f = e < n8 ? e : e - n8, r = f / c8;
          v[u].x = v[u].y = v[u].z = v[u].w = 0u;
          if (e < 2 * n8 && r < rows) v[u] = *reinterpret_cast<const uint4*>((e < n8 ? a : b) + r * stride + (f % c8) * 8);
        }
#pragma unroll
        for (int u = 0; u < kLoadBatch; ++u) {
          const int e = e0 + u * nt, f = e < n8 ? e : e - n8;
          if (e < 2 * n8) *reinterpret_cast<uint4*>((e < n8 ? da : db) + f * 8) = v[u];
        }
      }
      return;
    }
  }
  load_tile_bf16(a, stride, rows, rows_p, cols, da);
  load_tile_bf16(b, stride, rows, rows_p, cols, db);
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
  // Inclusive prefix sum in double (cs_t − cs_s then only carries the rounding of cs to float),
  // by warp 0, 32 tokens at a time (shuffle scan: 5 steps instead of 32 dependent adds).
  if (threadIdx.x < 32) {
    const int lane = static_cast<int>(threadIdx.x);
    const double a = detail::ld(p.A, h);
    double carry = 0.0;
    for (int b0 = 0; b0 < c.L; b0 += 32) {
      const int t = b0 + lane;
      double v = t < c.L ? static_cast<double>(s_dt[t]) : 0.0;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const double u = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += u;
      }
      v += carry;
      if (t < c.L) {
        s_csdt[t] = static_cast<float>(v);
        s_cs[t] = static_cast<float>(a * v);
      }
      carry = __shfl_sync(0xffffffffu, v, 31);
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
      load_tile_bf16(U + (c.t0 * p.nheads + h) * P, p.nheads * P, L, Lp, P, sA, s_coef);
      load_tile_bf16(V + (c.t0 * p.ngroups + g) * N, p.ngroups * N, L, Lp, N, sBm);
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
  load_tile(U + (c.t0 * p.nheads + h) * P, p.nheads * P, L, P, sU, P);
  load_tile(V + (c.t0 * p.ngroups + g) * N, p.ngroups * N, L, N, sV, N);
  __syncthreads();
  block_gemm(
      P, N, L, [&](int q, int s) { return sU[s * P + q] * s_coef[s]; }, [&](int s, int n) { return sV[s * N + n]; },
      [&](int q, int n, float v) { out[q * N + n] = v; });
}
// Grid (outer_grid_x, nheads); each block takes slots blockIdx.x, + gridDim.x, ... (most slots
// need no work when sequences are a single chunk: few blocks then skip them cheaply).
// The last warp asks L2 for the x / dy and B / C rows of the block's next slot (one bulk prefetch
// per row) while the block runs this one: their loads then wait for L2 instead of DRAM.
template <class T>
__device__ __forceinline__ void prefetch_outer(const Params<T>& p, int mode, int64_t slot) {
  if (slot >= p.slots || (threadIdx.x >> 5) != (blockDim.x >> 5) - 1) return;
  ChunkPos c;
  if (!chunk_pos(p, slot, c)) return;
  if (mode == 0 ? c.k >= c.nk - 1 : c.k == 0) return;
  const int64_t h = blockIdx.y, g = h / p.hpg;
  for (int r = static_cast<int>(threadIdx.x & 31); r < 2 * c.L; r += 32) {
    const int t = r % c.L;
    const T* row = r < c.L ? (mode == 0 ? p.x : p.dy) + ((c.t0 + t) * p.nheads + h) * p.P
                           : (mode == 0 ? p.B : p.C) + ((c.t0 + t) * p.ngroups + g) * p.N;
    const unsigned bytes = static_cast<unsigned>((r < c.L ? p.P : p.N) * sizeof(T));
    if ((reinterpret_cast<std::uintptr_t>(row) & 15u) == 0 && bytes % 16 == 0) prefetch_l2(row, bytes);
  }
}
template <class T>
__global__ void __launch_bounds__(kThreads) chunk_outer(Params<T> p, int mode) {
  extern __shared__ __align__(128) unsigned char ssd_smem[];  // 32-byte aligned for wmma
  float* smem = reinterpret_cast<float*>(ssd_smem);
  for (int64_t slot = blockIdx.x; slot < p.slots; slot += gridDim.x) {
    __syncthreads();  // the previous slot's readers of shared memory are done
    prefetch_outer(p, mode, slot + gridDim.x);
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
  int64_t B, C, CB, M, X, Y, sc, Hb, Bb, Cb, Mb, Xb, total;
  int ldN, ldQ, ldP, ldY, Qp;
};
// With mma, B, C and x (bf16 storage: exact in bf16) live only as bf16 operands, C·Bᵀ runs on
// tensor cores into CB (Qp × ldQ, ldQ = Qp + 4) and there is no fp32 M, X, B or C: the chunk 64
// layout of headdim 64 / d_state 128 is then 102 KB (two blocks per SM) instead of 184 KB.
__host__ __device__ inline FwdLayout fwd_layout(int64_t Q, int64_t N, int64_t P, bool mma) {
  FwdLayout l;
  l.Qp = static_cast<int>((Q + 15) / 16 * 16);
  l.ldN = static_cast<int>(N + 1), l.ldQ = static_cast<int>(mma ? l.Qp + 4 : Q + 1), l.ldP = static_cast<int>(P + 1);
  l.ldY = static_cast<int>(P + 4);
  const int64_t rows = mma ? l.Qp : Q;
  int64_t o = 0;
  l.B = o, o += mma ? 0 : round8(Q * l.ldN);
  l.C = o, o += mma ? 0 : round8(Q * l.ldN);
  l.CB = o, o += round8(rows * l.ldQ);
  l.M = o, o += mma ? 0 : round8(Q * l.ldQ);
  l.X = o, o += mma ? 0 : round8(Q * l.ldP);
  l.Y = o, o += round8(l.Qp * l.ldY);
  l.sc = o, o += round8(6 * Q);
  l.Hb = o, o += mma ? round8(P * N / 2) : 0;
  l.Bb = o, o += mma ? round8(l.Qp * N / 2) : 0;
  l.Cb = o, o += mma ? round8(l.Qp * N / 2) : 0;
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
inline int64_t bwd_main_floats(int64_t Q, int64_t N, int64_t P, bool mma) { return bwd_layout(Q, N, P, mma).total; }

// The backward's main kernel: bwd_mma (per-head products on tensor cores, 2-3 blocks per SM) for
// the tensor-core path, bwd_main otherwise. Defining MAMBATRACK_SSD_BWD_V1 runs bwd_main for every
// case (the previous backward, kept for A/B timing).
#ifdef MAMBATRACK_SSD_BWD_V1
constexpr bool kBwdMma = false;
#else
constexpr bool kBwdMma = true;
#endif
struct BwdMmaLayout {
  int64_t Bb, Cb, CB, Z, Xb, dYb, E, Sb, Wd, Mb, R1, R2, dB, dC, sc, red, total;
  int ldQ, ldT, ldE, Qp;
};
// Shared memory of bwd_mma (floats): bf16 operands B, C, x, dy, diag(exp(cs))·dy / diag(w·dt)·x
// (E), one state (H, then G: Sb), W·diag(dt) (Wd) and M (Mb); fp32 C·Bᵀ, dY·Xᵀ then W∘C·Bᵀ (Z),
// C·Hᵀ then B·Gᵀ (R1), Mᵀ·dY (R2) and the dB, dC sums over the group's heads. Chunk 32 of headdim
// 64 / d_state 128: 111 KB (two blocks per SM); chunk 16: 61 KB (three).
__host__ __device__ inline BwdMmaLayout bwd_mma_layout(int64_t Q, int64_t N, int64_t P) {
  BwdMmaLayout l;
  l.Qp = static_cast<int>((Q + 15) / 16 * 16);
  const int64_t Qp = l.Qp;
  l.ldQ = l.Qp + 4, l.ldT = static_cast<int>(P + 4), l.ldE = static_cast<int>(N + 4);
  int64_t o = 0;
  l.Bb = o, o += round8(Qp * N / 2);
  l.Cb = o, o += round8(Qp * N / 2);
  l.CB = o, o += round8(Qp * l.ldQ);
  l.Z = o, o += round8(Qp * l.ldQ);
  l.Xb = o, o += round8(Qp * P / 2);
  l.dYb = o, o += round8(Qp * P / 2);
  l.E = o, o += round8(Qp * P / 2);
  l.Sb = o, o += round8(P * N / 2);
  l.Wd = o, o += round8(Qp * Qp / 2);
  l.Mb = o, o += round8(Qp * Qp / 2);
  l.R1 = o, o += round8(Qp * l.ldT);
  l.R2 = o, o += round8(Qp * l.ldT);
  l.dB = o, o += round8(Qp * l.ldE);
  l.dC = o, o += round8(Qp * l.ldE);
  l.sc = o, o += round8(12 * Q);
  l.red = o, o += round8(kThreads / 32);
  l.total = o;
  return l;
}
inline int64_t bwd_mma_floats(int64_t Q, int64_t N, int64_t P) { return bwd_mma_layout(Q, N, P).total; }
// Threads of a bwd_mma block: 128 at chunk 16 (its products are a few 16×16 tiles; the shared
// memory allows three blocks per SM, which the registers of 256-thread blocks do not), 256 else.
// The kernel runs with any multiple of 32 up to kThreads.
inline int bwd_mma_threads(int64_t Q) { return Q <= 16 ? kThreads / 2 : kThreads; }
// Shared memory of the backward kernel that runs (bwd_mma with mma, bwd_main otherwise).
inline int64_t bwd_floats(int64_t Q, int64_t N, int64_t P, bool mma) {
  return mma && kBwdMma ? bwd_mma_floats(Q, N, P) : bwd_main_floats(Q, N, P, mma);
}
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

// acc += A·B over k in [k_lo, k_hi) (16 at a time) for the 16×16 tile (m0, n0). A: row-major
// (a[m·lda + k]) or column-major when kACol (a[m + k·lda]); B: row-major (b[k·ldb + n]) or
// column-major when kBCol (b[k + n·ldb]). bf16 in, fp32 accumulate.
template <bool kACol, bool kBCol>
__device__ __forceinline__ void mma_tile_k(nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>& acc,
                                           int m0, int n0, int k_lo, int k_hi, const bfloat16* a, int lda,
                                           const bfloat16* b, int ldb) {
  namespace wmma = nvcuda::wmma;
  using ALayout = std::conditional_t<kACol, wmma::col_major, wmma::row_major>;
  using BLayout = std::conditional_t<kBCol, wmma::col_major, wmma::row_major>;
  for (int k0 = k_lo; k0 < k_hi; k0 += 16) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, ALayout> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, BLayout> fb;
    const bfloat16* ap = kACol ? a + m0 + k0 * lda : a + m0 * lda + k0;
    const bfloat16* bp = kBCol ? b + n0 * ldb + k0 : b + k0 * ldb + n0;
    wmma::load_matrix_sync(fa, reinterpret_cast<const __nv_bfloat16*>(ap), lda);
    wmma::load_matrix_sync(fb, reinterpret_cast<const __nv_bfloat16*>(bp), ldb);
    wmma::mma_sync(acc, fa, fb, acc);
  }
}

// D (= or +=) A1·B1 + A2·B2 on tensor cores, 16×16 output tiles taken by the warps in turn (each
// tile summed in a fixed order: A1·B1 over k, then A2·B2). M, Nc, K1, K2 multiples of 16 (K2 0:
// no second product); layouts as in mma_tile_k; D fp32 row-major (ldd multiple of 4), read first
// when `accumulate`. kTri1: A1 is lower triangular (A1(m, k) = 0 for k > m: k stops after the
// diagonal tile) when 1, upper (0 for k < m: k starts at the diagonal tile) when 2.
template <int kTri1, bool kACol1, bool kBCol1, bool kACol2 = false, bool kBCol2 = false>
__device__ __forceinline__ void block_mma2(int M, int Nc, bool accumulate, float* d, int ldd, int K1,
                                           const bfloat16* a1, int lda1, const bfloat16* b1, int ldb1, int K2 = 0,
                                           const bfloat16* a2 = nullptr, int lda2 = 0, const bfloat16* b2 = nullptr,
                                           int ldb2 = 0) {
  namespace wmma = nvcuda::wmma;
  const int warp = static_cast<int>(threadIdx.x) >> 5, nw = static_cast<int>(blockDim.x) >> 5, tn = Nc / 16;
  for (int tile = warp; tile < (M / 16) * tn; tile += nw) {
    const int m0 = (tile / tn) * 16, n0 = (tile % tn) * 16;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    if (accumulate) wmma::load_matrix_sync(acc, d + m0 * ldd + n0, ldd, wmma::mem_row_major);
    else wmma::fill_fragment(acc, 0.0f);
    const int lo = kTri1 == 2 ? m0 : 0, hi = kTri1 == 1 ? (m0 + 16 < K1 ? m0 + 16 : K1) : K1;
    mma_tile_k<kACol1, kBCol1>(acc, m0, n0, lo, hi, a1, lda1, b1, ldb1);
    if (K2 > 0) mma_tile_k<kACol2, kBCol2>(acc, m0, n0, 0, K2, a2, lda2, b2, ldb2);
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
  // Elements e .. e + 3 (e a multiple of 4; P·N always is): one 16-byte load from the workspace.
  __device__ __forceinline__ float4 four(int e) const {
    if (f) return *reinterpret_cast<const float4*>(f + e);
    float4 v;
    v.x = detail::ld(t, e);
    v.y = detail::ld(t, e + 1);
    v.z = detail::ld(t, e + 2);
    v.w = detail::ld(t, e + 3);
    return v;
  }
};

// Stages the chunk-start state H into sH and the chunk-end adjoint G into sG (bf16, row-major
// P × N; a null destination skips it) and returns this thread's part of <G, H> when `dot`
// (0 otherwise). kBatch (default kStageBatch) groups of 4 elements per thread are loaded before any is
// used, so
// one global-memory latency covers them instead of one per element. H is read only when sH or dot,
// G only when sG or dot.
constexpr int kStageBatch = 2;
template <class T, int kBatch = kStageBatch>
__device__ __noinline__ float stage_states(const StateRef<T> hs, bfloat16* sH, const StateRef<T> gs, bfloat16* sG,
                                           bool dot, int PN) {
  const int n4 = PN / 4, nt = static_cast<int>(blockDim.x);
  const bool rh = sH || dot, rg = sG || dot;
  float r = 0.0f;
  for (int i0 = static_cast<int>(threadIdx.x); i0 < n4; i0 += kBatch * nt) {
    float4 hv[kBatch], gv[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = i0 + u * nt;
      if (i < n4) {
        if (rh) hv[u] = hs.four(4 * i);
        if (rg) gv[u] = gs.four(4 * i);
      }
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = i0 + u * nt;
      if (i < n4) {
        if (sH) {
          sH[4 * i] = bfloat16(hv[u].x);
          sH[4 * i + 1] = bfloat16(hv[u].y);
          sH[4 * i + 2] = bfloat16(hv[u].z);
          sH[4 * i + 3] = bfloat16(hv[u].w);
        }
        if (sG) {
          sG[4 * i] = bfloat16(gv[u].x);
          sG[4 * i + 1] = bfloat16(gv[u].y);
          sG[4 * i + 2] = bfloat16(gv[u].z);
          sG[4 * i + 3] = bfloat16(gv[u].w);
        }
        if (dot) r += gv[u].x * hv[u].x + gv[u].y * hv[u].y + gv[u].z * hv[u].z + gv[u].w * hv[u].w;
      }
    }
  }
  return r;
}

// The last warp asks L2 for head hh's chunk-start state (workspace, k > 0) and x rows of chunk c,
// and with `backward` also its chunk-end adjoint (workspace, not the last chunk) and dy rows:
// issued for the next head while the block runs this one, their loads then wait for L2, not DRAM.
template <class T>
__device__ __forceinline__ void prefetch_head(const Params<T>& p, const ChunkPos& c, int64_t hh, bool backward) {
  if ((threadIdx.x >> 5) != (blockDim.x >> 5) - 1) return;
  const int lane = static_cast<int>(threadIdx.x & 31);
  const int64_t PN = static_cast<int64_t>(p.P) * p.N, H = p.nheads;
  const unsigned sb = static_cast<unsigned>(PN * sizeof(float));
  if (lane == 0 && c.k > 0) prefetch_l2(p.ws_H + (h_boundary(p, c.start, c.k) * H + hh) * PN, sb);
  if (lane == 1 && backward && c.k < c.nk - 1) prefetch_l2(p.ws_G + (boundary(c.start, c.k + 1, p.Q) * H + hh) * PN, sb);
  const unsigned rb = static_cast<unsigned>(p.P * sizeof(T));
  if (rb % 16 != 0) return;
  for (int r = lane; r < (backward ? 2 : 1) * c.L; r += 32) {
    const T* row = (r < c.L ? p.x : p.dy) + ((c.t0 + r % c.L) * H + hh) * p.P;
    if ((reinterpret_cast<std::uintptr_t>(row) & 15u) == 0) prefetch_l2(row, rb);
  }
}

// Forward output of one chunk and one group (heads of the group in turn): y, and final_state in
// the sequence's last chunk. Grid (slots, ngroups). The chunk-start state is read from global
// memory (L1/L2); with bf16 storage (mma) the product C·H_inᵀ runs on tensor cores.
template <class T>
__global__ void __launch_bounds__(kThreads) fwd_out(Params<T> p) {
  ChunkPos c;
  if (!chunk_pos(p, blockIdx.x, c)) return;
  const int64_t g = blockIdx.y;
  const int P = p.P, N = p.N, Q = p.Q, L = c.L;
  const bool mma = mma_type<T>() && p.mma;  // constant false for float storage
  const FwdLayout lay = fwd_layout(Q, N, P, mma);
  const int ldN = lay.ldN, ldP = lay.ldP, ldQ = lay.ldQ, ldY = lay.ldY;
  const int Lp = (L + 15) / 16 * 16;
  const int64_t PN = static_cast<int64_t>(P) * N;
  const int64_t H = p.nheads, t0 = c.t0;
  extern __shared__ __align__(128) unsigned char ssd_smem[];
  float* smem = reinterpret_cast<float*>(ssd_smem);
  float* sB = smem + lay.B;    // SIMT only
  float* sC = smem + lay.C;    // SIMT only
  float* sCB = smem + lay.CB;
  float* sM = smem + lay.M;    // SIMT only
  float* sX = smem + lay.X;    // SIMT only
  float* sY = smem + lay.Y;
  float* s_dt = smem + lay.sc;
  float* s_dtg = s_dt + Q;
  float* s_csdt = s_dtg + Q;
  float* s_cs = s_csdt + Q;
  float* s_coef = s_cs + Q;
  float* s_ecs = s_coef + Q;
  bfloat16* sHb = reinterpret_cast<bfloat16*>(smem + lay.Hb);
  bfloat16* sBb = reinterpret_cast<bfloat16*>(smem + lay.Bb);  // B (bf16, Lp × N, rows padded with 0)
  bfloat16* sCb = reinterpret_cast<bfloat16*>(smem + lay.Cb);  // C (bf16, Lp × N)
  bfloat16* sMb = reinterpret_cast<bfloat16*>(smem + lay.Mb);  // M (bf16, Qp × Qp)
  bfloat16* sXbf = reinterpret_cast<bfloat16*>(smem + lay.Xb); // x (bf16, Lp × P)
  const int Qp = lay.Qp;
  // x and B of the chunk, whichever buffers hold them.
  auto xv = [&](int t, int q) { return mma ? static_cast<float>(sXbf[t * P + q]) : sX[t * ldP + q]; };
  auto bv = [&](int t, int n) { return mma ? static_cast<float>(sBb[t * N + n]) : sB[t * ldN + n]; };
  const T* gB = p.B + (t0 * p.ngroups + g) * N;
  const T* gC = p.C + (t0 * p.ngroups + g) * N;
  prefetch_head(p, c, g * p.hpg, false);
  if (mma) {
    load_tile_bf16(gB, p.ngroups * N, L, Lp, N, sBb);
    load_tile_bf16(gC, p.ngroups * N, L, Lp, N, sCb);
  } else {
    load_tile(gB, p.ngroups * N, L, N, sB, ldN);
    load_tile(gC, p.ngroups * N, L, N, sC, ldN);
  }
  __syncthreads();
  {  // CB = C·Bᵀ (bf16 B and C are exact: the tensor cores only reorder the fp32 sums)
    bool done = false;
    if constexpr (mma_type<T>()) {
      if (mma) {
        block_mma<true, false>(Lp, Lp, N, sCb, N, sBb, N, sCB, ldQ);
        done = true;
      }
    }
    if (!done)
      block_gemm(
          L, L, N, [&](int t, int n) { return sC[t * ldN + n]; }, [&](int n, int s) { return sB[s * ldN + n]; },
          [&](int t, int s, float v) { sCB[t * ldQ + s] = v; });
  }
  const bool has_H = c.k > 0 || p.init != nullptr;
  const bool last = c.k == c.nk - 1;
  const float* hrow = c.k > 0 ? p.ws_H + h_boundary(p, c.start, c.k) * H * PN : nullptr;  // head 0's state
  for (int64_t j = 0; j < p.hpg; ++j) {
    const int64_t h = g * p.hpg + j;
    StateRef<T> hin;
    hin.N = N;
    if (hrow) hin.f = hrow + h * PN;
    else if (p.init) hin.t = p.init + (c.b * H + h) * PN;
    __syncthreads();  // CB written; the previous head's readers are done
    if (j + 1 < p.hpg) prefetch_head(p, c, h + 1, false);
    if (mma) load_tile_bf16(p.x + (t0 * H + h) * P, H * P, L, Lp, P, sXbf);
    else load_tile(p.x + (t0 * H + h) * P, H * P, L, P, sX, ldP);
    chunk_scalars(p, c, h, s_dt, s_dtg, s_csdt, s_cs);
    for (int t = threadIdx.x; t < L; t += blockDim.x) {
      s_ecs[t] = expf(s_cs[t]);
      s_coef[t] = expf(s_cs[L - 1] - s_cs[t]) * s_dt[t];
    }
    if (!mma) {
      for (int e = threadIdx.x; e < L * L; e += blockDim.x) {
        const int t = e / L, s = e % L;
        sM[t * ldQ + s] = s <= t ? sCB[t * ldQ + s] * expf(s_cs[t] - s_cs[s]) * s_dt[s] : 0.0f;
      }
    } else {  // bf16 M, padded with zeros to Lp
      for (int e = threadIdx.x; e < Lp * Lp; e += blockDim.x) {
        const int t = e / Lp, s = e % Lp;
        sMb[t * Qp + s] =
            bfloat16(t < L && s <= t ? sCB[t * ldQ + s] * expf(s_cs[t] - s_cs[s]) * s_dt[s] : 0.0f);
      }
      if constexpr (mma_type<T>())
        if (has_H) stage_states(hin, sHb, hin, nullptr, false, P * N);
    }
    __syncthreads();
    bool done = false;
    if constexpr (mma_type<T>()) {
      if (mma) {  // Y = diag(exp(cs))·(C·H_inᵀ) + M·X on tensor cores
        if (has_H) {
          block_mma<true, false>(Lp, P, N, sCb, N, sHb, N, sY, ldY);
          __syncthreads();
          for (int e = threadIdx.x; e < L * P; e += blockDim.x) sY[(e / P) * ldY + e % P] *= s_ecs[e / P];
          __syncthreads();
          block_mma<false, true>(Lp, P, Lp, sMb, Qp, sXbf, P, sY, ldY);
        } else {
          block_mma<false, false>(Lp, P, Lp, sMb, Qp, sXbf, P, sY, ldY);
        }
        done = true;
      }
    }
    if (!done) {
      // Y = M·X (the chunk's own tokens) ...
      block_gemm(
          L, P, L, [&](int t, int s) { return sM[t * ldQ + s]; }, [&](int s, int q) { return sX[s * ldP + q]; },
          [&](int t, int q, float v) { sY[t * ldY + q] = v; });
      __syncthreads();
      // ... + diag(exp(cs))·C·H_inᵀ (SIMT, transposed (rows q) so that H_in is read along its rows).
      if (has_H)
        block_gemm(
            P, L, N, [&](int q, int n) { return hin(q, n); }, [&](int n, int t) { return sC[t * ldN + n]; },
            [&](int q, int t, float v) { sY[t * ldY + q] += s_ecs[t] * v; });
    }
    if (last && p.final_state) {
      const float elast = expf(s_cs[L - 1]);
      T* fin = p.final_state + (c.b * H + h) * PN;
      block_gemm(
          P, N, L, [&](int q, int s) { return xv(s, q) * s_coef[s]; }, [&](int s, int n) { return bv(s, n); },
          [&](int q, int n, float v) { detail::st(fin, q * N + n, v + (has_H ? elast * hin(q, n) : 0.0f)); });
    }
    __syncthreads();
    const float Dh = p.D ? detail::ld(p.D, h) : 0.0f;
    for (int e = threadIdx.x; e < L * P; e += blockDim.x) {
      const int t = e / P, q = e % P;
      detail::st(p.y, ((t0 + t) * H + h) * P + q, sY[t * ldY + q] + Dh * xv(t, q));
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
  load_tile(p.B + (c.t0 * p.ngroups + g) * N, p.ngroups * N, L, N, sB, ldN);
  load_tile(p.C + (c.t0 * p.ngroups + g) * N, p.ngroups * N, L, N, sC, ldN);
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
    if (c.k > 0) hin.f = p.ws_H + (h_boundary(p, c.start, c.k) * H + h) * PN;
    else if (p.init) hin.t = p.init + (c.b * H + h) * PN;
    if (!last) gend.f = p.ws_G + (boundary(c.start, c.k + 1, Q) * H + h) * PN;
    else if (p.dfinal) gend.t = p.dfinal + (c.b * H + h) * PN;
    __syncthreads();  // CB written; the previous head's readers are done
    load_tile(p.x + (t0 * H + h) * P, H * P, L, P, sX, ldP);
    load_tile(p.dy + (t0 * H + h) * P, H * P, L, P, sdY, ldP);
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
    {  // H and G to bf16 (mma) and <G, H> (per-thread sums, per-warp shuffles; the warps are
       // summed in order by thread 0 below), in one batched pass over global memory
      float r;
      if constexpr (mma_type<T>())
        r = stage_states(hin, p.mma && has_H ? sHb : nullptr, gend, p.mma && has_G ? sGb : nullptr,
                         has_G && has_H, P * N);
      else
        r = stage_states(hin, nullptr, gend, nullptr, has_G && has_H, P * N);
      r = warp_sum(r);
      if ((threadIdx.x & 31) == 0) s_red[threadIdx.x >> 5] = r;
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
        for (int e = threadIdx.x; e < Lp * N; e += blockDim.x) {
          const int t = e / N, n = e % N;
          sBw[e] = bfloat16(t < L ? expf(s_cs[L - 1] - s_cs[t]) * s_dt[t] * sB[t * ldN + n] : 0.0f);
        }
      }
      if (has_H) {
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
    __syncthreads();
    // The chunk's scalars, by warp 0 in double: ∂L/∂cs_t, its suffix sums (a shuffle scan, 32
    // tokens at a time from the chunk's end), ddt, and the dA / dD / ddt_bias partials (lane sums
    // reduced by warp_sum_d: a fixed order).
    if (threadIdx.x < 32) {
      const int lane = static_cast<int>(threadIdx.x);
      double gh = 0.0, et = 0.0;
      for (int i = 0; i < static_cast<int>(blockDim.x >> 5); ++i) gh += s_red[i];
      for (int s = lane; s < L; s += 32) et += static_cast<double>(s_w[s]) * s_dt[s] * s_v[s];
      // ∂L/∂cs_last through exp(cs_last)·H_in and the w_s
      const double end_term = static_cast<double>(expf(s_cs[L - 1])) * gh + warp_sum_d(et);
      const double a = detail::ld(p.A, h);
      double carry = 0.0, dA = 0.0, ddb = 0.0, dD = 0.0;
      for (int r0 = 0; r0 < L; r0 += 32) {
        const int t = L - 1 - (r0 + lane);
        double dcs = 0.0;
        if (t >= 0)
          dcs = static_cast<double>(s_pos[t]) - static_cast<double>(s_dt[t]) * s_u[t] + (t == L - 1 ? end_term : 0.0);
        double rev = dcs;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
          const double u = __shfl_up_sync(0xffffffffu, rev, o);
          if (lane >= o) rev += u;
        }
        rev += carry;  // Σ_{t' >= t} ∂L/∂cs_t'
        if (t >= 0) {
          dA += dcs * s_csdt[t];
          const float d_raw = static_cast<float>((s_u[t] + a * rev) * s_dtg[t]);
          s_ddt[t] = d_raw;
          ddb += d_raw;
          dD += s_dD[t];
        }
        carry = __shfl_sync(0xffffffffu, rev, 31);
      }
      dA = warp_sum_d(dA);
      ddb = warp_sum_d(ddb);
      dD = warp_sum_d(dD);
      if (lane == 0) {
        p.ws_par[slot * 3 * H + h] = static_cast<float>(dA);
        p.ws_par[slot * 3 * H + H + h] = static_cast<float>(dD);
        p.ws_par[slot * 3 * H + 2 * H + h] = static_cast<float>(ddb);
      }
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

// Backward of one chunk and one group on tensor cores (bf16 storage, headdim and d_state multiples
// of 16), the heads of the group in turn: the same outputs as bwd_main. Every product runs on
// tensor cores (bf16 in, fp32 accumulate): C·Bᵀ, Gm = dY·Xᵀ, Mᵀ·dY, C·Hᵀ, B·Gᵀ, and the dB, dC
// sums over the heads, accumulated in shared memory in head order:
//   dC += (W·diag(dt))·B + diag(exp(cs))·dY·H,   dB += (W·diag(dt))ᵀ·C + diag(w·dt)·X·G,
//   dx  = Mᵀ·dY + D·dy + diag(w·dt)·(B·Gᵀ).
// The per-token sums that feed ∂L/∂cs use no (Q × d_state) product: with Z = W∘(C·Bᵀ) (fp32),
//   Σ_n C_t·dC_h(t, n) = Σ_s Z(t, s)·dt_s + exp(cs_t)·dY_t·(C·Hᵀ)_t,
//   Σ_n B_s·(Wᵀ·C + w·X·G)(s, n) = Σ_t Z(t, s) + w_s·X_s·(B·Gᵀ)_s,
// so W enters the tensor cores (as bf16) only through dB and dC, not through the cancelling sums.
// One state buffer holds H, then G. Grid (slots, ngroups).
template <class T>
__global__ void __launch_bounds__(kThreads, 2) bwd_mma(Params<T> p) {
  const int64_t slot = blockIdx.x, g = blockIdx.y;
  const int64_t H = p.nheads;
  ChunkPos c;
  if (!chunk_pos(p, slot, c)) {  // unused slot: zero partials
    for (int e = threadIdx.x; e < 3 * p.hpg; e += blockDim.x)
      p.ws_par[slot * 3 * H + (e / p.hpg) * H + g * p.hpg + e % p.hpg] = 0.0f;
    return;
  }
  if constexpr (mma_type<T>()) {
    const int P = p.P, N = p.N, Q = p.Q, L = c.L;
    const BwdMmaLayout lay = bwd_mma_layout(Q, N, P);
    const int ldQ = lay.ldQ, ldT = lay.ldT, ldE = lay.ldE, Qp = lay.Qp;
    const int Lp = (L + 15) / 16 * 16;
    const int64_t PN = static_cast<int64_t>(P) * N;
    extern __shared__ __align__(128) unsigned char ssd_smem[];
    float* smem = reinterpret_cast<float*>(ssd_smem);
    bfloat16* sBb = reinterpret_cast<bfloat16*>(smem + lay.Bb);    // B (Lp × N)
    bfloat16* sCb = reinterpret_cast<bfloat16*>(smem + lay.Cb);    // C (Lp × N)
    float* sCB = smem + lay.CB;                                    // C·Bᵀ (Lp × ldQ)
    float* sZ = smem + lay.Z;                                      // dY·Xᵀ, then Z = W∘C·Bᵀ
    bfloat16* sXb = reinterpret_cast<bfloat16*>(smem + lay.Xb);    // x (Lp × P)
    bfloat16* sdYb = reinterpret_cast<bfloat16*>(smem + lay.dYb);  // dy (Lp × P)
    bfloat16* sE = reinterpret_cast<bfloat16*>(smem + lay.E);      // diag(exp(cs))·dy, then diag(w·dt)·x
    bfloat16* sSb = reinterpret_cast<bfloat16*>(smem + lay.Sb);    // H, then G (P × N)
    bfloat16* sWd = reinterpret_cast<bfloat16*>(smem + lay.Wd);    // W·diag(dt) (Lp × Qp)
    bfloat16* sMb = reinterpret_cast<bfloat16*>(smem + lay.Mb);    // M (Lp × Qp)
    float* sR1 = smem + lay.R1;                                    // C·Hᵀ, then B·Gᵀ (Lp × ldT)
    float* sR2 = smem + lay.R2;                                    // Mᵀ·dY (Lp × ldT)
    float* sdB = smem + lay.dB;                                    // Σ_h dB (Lp × ldE)
    float* sdC = smem + lay.dC;                                    // Σ_h dC (Lp × ldE)
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
    float* s_red = smem + lay.red;
    const int64_t t0 = c.t0;
    const bool has_H = c.k > 0 || p.init != nullptr;
    const bool last = c.k == c.nk - 1;
    const bool has_G = !last || p.dfinal != nullptr;
    prefetch_head(p, c, g * p.hpg, true);
    load_tile_bf16(p.B + (t0 * p.ngroups + g) * N, p.ngroups * N, L, Lp, N, sBb);
    load_tile_bf16(p.C + (t0 * p.ngroups + g) * N, p.ngroups * N, L, Lp, N, sCb);
    __syncthreads();
    block_mma2<0, false, true>(Lp, Lp, false, sCB, ldQ, N, sCb, N, sBb, N);  // C·Bᵀ (exact bf16 operands)
    const int warp = static_cast<int>(threadIdx.x >> 5), lane = static_cast<int>(threadIdx.x & 31);
    const int nw = static_cast<int>(blockDim.x >> 5);
    // The chunk's state rows (head 0), computed once: the 64-bit divisions stay out of the loop.
    const float* hrow = c.k > 0 ? p.ws_H + h_boundary(p, c.start, c.k) * H * PN : nullptr;
    const float* grow = !last ? p.ws_G + boundary(c.start, c.k + 1, Q) * H * PN : nullptr;
    for (int64_t j = 0; j < p.hpg; ++j) {
      const int64_t h = g * p.hpg + j;
      StateRef<T> hin, gend;
      hin.N = gend.N = N;
      if (hrow) hin.f = hrow + h * PN;
      else if (p.init) hin.t = p.init + (c.b * H + h) * PN;
      if (grow) gend.f = grow + h * PN;
      else if (p.dfinal) gend.t = p.dfinal + (c.b * H + h) * PN;
      __syncthreads();  // C·Bᵀ written; the previous head's readers are done
      if (j + 1 < p.hpg) prefetch_head(p, c, h + 1, true);
      load_two_tiles_bf16(p.x + (t0 * H + h) * P, p.dy + (t0 * H + h) * P, H * P, L, Lp, P, sXb, sdYb);
      chunk_scalars(p, c, h, s_dt, s_dtg, s_csdt, s_cs);
      for (int t = threadIdx.x; t < L; t += blockDim.x) {
        s_ecs[t] = expf(s_cs[t]);
        s_w[t] = expf(s_cs[L - 1] - s_cs[t]);
      }
      {  // H to bf16 and <G, H> (per-thread sums, per-warp shuffles, warps summed in order below)
        float r = stage_states<T, 4>(hin, has_H ? sSb : nullptr, gend, nullptr, has_G && has_H, P * N);
        r = warp_sum(r);
        if (lane == 0) s_red[warp] = r;
      }
      for (int e = threadIdx.x; e < Lp * Lp; e += blockDim.x) {  // M (row t, column s), zero padded
        const int t = e / Lp, s = e % Lp;
        sMb[t * Qp + s] = bfloat16(t < L && s <= t ? sCB[t * ldQ + s] * expf(s_cs[t] - s_cs[s]) * s_dt[s] : 0.0f);
      }
      __syncthreads();
      block_mma2<0, false, true>(Lp, Lp, false, sZ, ldQ, P, sdYb, P, sXb, P);  // Gm = dY·Xᵀ
      block_mma2<2, true, false>(Lp, P, false, sR2, ldT, Lp, sMb, Qp, sdYb, P);  // Mᵀ·dY
      if (has_H) block_mma2<0, false, true>(Lp, P, false, sR1, ldT, N, sCb, N, sSb, N);  // C·Hᵀ
      __syncthreads();
      // W = Gm∘exp(cs_t − cs_s) (s <= t < L): Wd = bf16(W·dt_s), Z = W∘C·Bᵀ (fp32); zero elsewhere.
      for (int e = threadIdx.x; e < Lp * Lp; e += blockDim.x) {
        const int t = e / Lp, s = e % Lp;
        float wd = 0.0f, z = 0.0f;
        if (t < L && s <= t) {
          const float w = sZ[t * ldQ + s] * expf(s_cs[t] - s_cs[s]);
          wd = w * s_dt[s];
          z = w * sCB[t * ldQ + s];
        }
        sWd[t * Qp + s] = bfloat16(wd);
        sZ[t * ldQ + s] = z;
      }
      if (has_H)
        for (int e = threadIdx.x; e < Lp * P; e += blockDim.x) {
          const int t = e / P;
          sE[e] = bfloat16(t < L ? s_ecs[t] * static_cast<float>(sdYb[e]) : 0.0f);
        }
      // Per-token sums, one warp per token: dY·X (dD) and exp(cs_t)·dY_t·(C·Hᵀ)_t.
      for (int t = warp; t < L; t += nw) {
        float dd = 0.0f, ch = 0.0f;
        for (int q = lane; q < P; q += 32) {
          const float dyv = static_cast<float>(sdYb[t * P + q]);
          dd += dyv * static_cast<float>(sXb[t * P + q]);
          if (has_H) ch += dyv * sR1[t * ldT + q];
        }
        dd = warp_sum(dd);
        ch = warp_sum(ch);
        if (lane == 0) {
          s_dD[t] = dd;
          s_pos[t] = s_ecs[t] * ch;
        }
      }
      __syncthreads();
      // dC (+)= Wd·B + diag(exp(cs))·dY·H.
      block_mma2<1, false, false, false, false>(Lp, N, j > 0, sdC, ldE, Lp, sWd, Qp, sBb, N, has_H ? P : 0, sE, P,
                                                sSb, N);
      // ∂L/∂cs sums of Z: rows (Σ_s Z(t, s)·dt_s, into s_pos) and columns (Σ_t Z(t, s), into s_u).
      for (int i = warp; i < L; i += nw) {
        float r = 0.0f, cl = 0.0f;
        for (int k = lane; k < L; k += 32) {
          r += sZ[i * ldQ + k] * s_dt[k];
          cl += sZ[k * ldQ + i];
        }
        r = warp_sum(r);
        cl = warp_sum(cl);
        if (lane == 0) {
          s_pos[i] += r;
          s_u[i] = cl;
        }
      }
      if (has_G) {
        __syncthreads();  // H and diag(exp(cs))·dY no longer read
        stage_states<T, 4>(gend, nullptr, gend, sSb, false, P * N);
        __syncthreads();
        block_mma2<0, false, true>(Lp, P, false, sR1, ldT, N, sBb, N, sSb, N);  // B·Gᵀ
        __syncthreads();
      }
      // v_s = X_s·(B·Gᵀ)_s, one warp per token; diag(w·dt)·X; dx.
      for (int s = warp; s < L; s += nw) {
        float v = 0.0f;
        if (has_G)
          for (int q = lane; q < P; q += 32) v += static_cast<float>(sXb[s * P + q]) * sR1[s * ldT + q];
        v = warp_sum(v);
        if (lane == 0) s_v[s] = v;
      }
      if (has_G)
        for (int e = threadIdx.x; e < Lp * P; e += blockDim.x) {
          const int t = e / P;
          sE[e] = bfloat16(t < L ? s_w[t] * s_dt[t] * static_cast<float>(sXb[e]) : 0.0f);
        }
      {
        const float Dh = p.D ? detail::ld(p.D, h) : 0.0f;
        for (int e = threadIdx.x; e < L * P; e += blockDim.x) {
          const int s = e / P, q = e % P;
          float v = sR2[s * ldT + q] + Dh * static_cast<float>(sdYb[e]);
          if (has_G) v += s_w[s] * s_dt[s] * sR1[s * ldT + q];
          detail::st(p.dx, ((t0 + s) * H + h) * P + q, v);
        }
      }
      __syncthreads();
      // dB (+)= (W·diag(dt))ᵀ·C + diag(w·dt)·X·G.
      block_mma2<2, true, false, false, false>(Lp, N, j > 0, sdB, ldE, Lp, sWd, Qp, sCb, N, has_G ? P : 0, sE, P,
                                               sSb, N);
      // The chunk's scalars, by warp 0 in double (as in bwd_main), with u_s = Σ_t Z(t, s) + w_s·v_s.
      if (threadIdx.x < 32) {
        double gh = 0.0, et = 0.0;
        for (int i = 0; i < nw; ++i) gh += s_red[i];
        for (int s = lane; s < L; s += 32) et += static_cast<double>(s_w[s]) * s_dt[s] * s_v[s];
        const double end_term = static_cast<double>(expf(s_cs[L - 1])) * gh + warp_sum_d(et);
        const double a = detail::ld(p.A, h);
        double carry = 0.0, dA = 0.0, ddb = 0.0, dD = 0.0;
        for (int r0 = 0; r0 < L; r0 += 32) {
          const int t = L - 1 - (r0 + lane);
          double dcs = 0.0, u = 0.0;
          if (t >= 0) {
            u = static_cast<double>(s_u[t]) + static_cast<double>(s_w[t]) * s_v[t];
            dcs = static_cast<double>(s_pos[t]) - static_cast<double>(s_dt[t]) * u + (t == L - 1 ? end_term : 0.0);
          }
          double rev = dcs;
#pragma unroll
          for (int o = 1; o < 32; o <<= 1) {
            const double y = __shfl_up_sync(0xffffffffu, rev, o);
            if (lane >= o) rev += y;
          }
          rev += carry;  // Σ_{t' >= t} ∂L/∂cs_t'
          if (t >= 0) {
            dA += dcs * s_csdt[t];
            const float d_raw = static_cast<float>((u + a * rev) * s_dtg[t]);
            detail::st(p.ddt, (t0 + t) * H + h, d_raw);
            ddb += d_raw;
            dD += s_dD[t];
          }
          carry = __shfl_sync(0xffffffffu, rev, 31);
        }
        dA = warp_sum_d(dA);
        ddb = warp_sum_d(ddb);
        dD = warp_sum_d(dD);
        if (lane == 0) {
          p.ws_par[slot * 3 * H + h] = static_cast<float>(dA);
          p.ws_par[slot * 3 * H + H + h] = static_cast<float>(dD);
          p.ws_par[slot * 3 * H + 2 * H + h] = static_cast<float>(ddb);
        }
      }
      if (c.k == 0 && p.dinit) {  // (reads only buffers that no thread writes until the next head)
        const float elast = expf(s_cs[L - 1]);
        T* di = p.dinit + (c.b * H + h) * PN;
        block_gemm(
            P, N, L, [&](int q, int t) { return static_cast<float>(sdYb[t * P + q]) * s_ecs[t]; },
            [&](int t, int n) { return static_cast<float>(sCb[t * N + n]); },
            [&](int q, int n, float v) { detail::st(di, q * N + n, v + (has_G ? elast * gend(q, n) : 0.0f)); });
      }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < L * N; e += blockDim.x) {
      const int t = e / N, n = e % N;
      const int64_t dst = ((t0 + t) * p.ngroups + g) * N + n;
      detail::st(p.dB, dst, sdB[t * ldE + n]);
      detail::st(p.dC, dst, sdC[t * ldE + n]);
    }
  }
}

// Short sequences (single-chunk mode, chunk <= 32, bf16 tensor-core path, no initial or final
// state or their gradients): one block per (sequence, group), one warp per head (heads of the
// group strided over the warps), all heads at once instead of in turn. The block stages the
// group's x (and dy), B, C and raw dt in one batch of loads, forms C·Bᵀ, then every warp runs its
// head with warp-level syncs only: scalars (dt, cumulative sum by shuffles), M, and y = M·X + D·x
// (forward), or Gm = dY·Xᵀ, W, Z = W∘C·Bᵀ, dx = Mᵀ·dY + D·dy, the ∂L/∂cs sums and the ddt / dA /
// dD / ddt_bias partials (backward, the same arithmetic as bwd_mma without H and G); the backward
// then sums dC = Σ_h (W_h·diag(dt_h))·B and dB = Σ_h (W_h·diag(dt_h))ᵀ·C over the heads in head
// order inside each 16×16 output tile (tensor cores). Defining MAMBATRACK_SSD_NO_SHORT runs
// fwd_out / bwd_mma instead.
#ifdef MAMBATRACK_SSD_NO_SHORT
constexpr bool kShortKernels = false;
#else
constexpr bool kShortKernels = true;
#endif
struct ShortLayout {
  int64_t X, dY, B, C, dt, CB, Wd, warp, per_warp, total;
  int Qp, ldX, ldQ, ldT;
  // per-warp offsets (floats): Z (Gm, then W∘C·Bᵀ), M (bf16), T (fp32 staging), 7 × 32 scalars
  int64_t wZ, wM, wT, wS;
};
__host__ __device__ inline ShortLayout short_layout(int64_t Q, int64_t N, int64_t P, int64_t hpg, int64_t nw, bool backward) {
  ShortLayout l;
  l.Qp = static_cast<int>((Q + 15) / 16 * 16);
  const int64_t Qp = l.Qp;
  l.ldX = static_cast<int>(hpg * P), l.ldQ = l.Qp + 4, l.ldT = static_cast<int>(P + 4);
  int64_t o = 0;
  l.X = o, o += round8(Qp * hpg * P / 2);
  l.dY = o, o += backward ? round8(Qp * hpg * P / 2) : 0;
  l.B = o, o += round8(Qp * N / 2);
  l.C = o, o += round8(Qp * N / 2);
  l.dt = o, o += round8(Qp * hpg);
  l.CB = o, o += round8(Qp * l.ldQ);
  l.Wd = o, o += backward ? round8(hpg * Qp * Qp / 2) : 0;
  int64_t w = 0;
  l.wZ = w, w += backward ? round8(Qp * l.ldQ) : 0;
  l.wM = w, w += round8(Qp * Qp / 2);
  l.wT = w, w += round8(Qp * l.ldT);
  l.wS = w, w += round8(7 * 32);
  l.per_warp = w;
  l.warp = o, o += nw * w;
  l.total = o;
  return l;
}
// Threads of the short kernels: a warp per head of the group, at most kThreads.
inline int short_threads(int64_t hpg) { return static_cast<int>(32 * (hpg < kThreads / 32 ? hpg : kThreads / 32)); }
inline int64_t short_floats(int64_t Q, int64_t N, int64_t P, int64_t hpg, bool backward) {
  return short_layout(Q, N, P, hpg, short_threads(hpg) / 32, backward).total;
}
// Whether the short kernels run for these parameters (both directions check their own).
template <class T>
bool use_short(const Params<T>& p, bool backward, std::size_t limit) {
  if (!kShortKernels || !p.single || !p.mma || p.Q > 32 || p.init) return false;
  if (backward ? (p.dfinal || p.dinit) : p.final_state != nullptr) return false;
  return static_cast<std::size_t>(short_floats(p.Q, p.N, p.P, p.hpg, backward)) * sizeof(float) <= limit;
}

// The warp's scalars of head h over the chunk's L <= 32 tokens (lane t): dt, its derivative, the
// cumulative sums csdt and cs (double shuffle scan, as chunk_scalars), into s[0..127] (32 each).
template <class T>
__device__ __forceinline__ void short_scalars(const Params<T>& p, int L, int64_t h, const float* s_raw, int ld_raw,
                                              float* s) {
  const int lane = static_cast<int>(threadIdx.x & 31);
  float dt = 0.0f, grad = 0.0f;
  if (lane < L) {
    const float raw = s_raw[lane * ld_raw] + (p.dt_bias ? detail::ld(p.dt_bias, h) : 0.0f);
    const float sp = detail::softplus_f(raw);
    if (sp < p.dt_min) {
      dt = p.dt_min;
    } else if (sp > p.dt_max) {
      dt = p.dt_max;
    } else {
      dt = sp;
      grad = raw > 20.0f ? 1.0f : detail::sigmoid_f(raw);
    }
  }
  double v = lane < L ? static_cast<double>(dt) : 0.0;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const double u = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += u;
  }
  if (lane < L) {
    const double a = detail::ld(p.A, h);
    s[lane] = dt;
    s[32 + lane] = grad;
    s[64 + lane] = static_cast<float>(v);
    s[96 + lane] = static_cast<float>(a * v);
  }
  __syncwarp();
}

// Stages the block's inputs of the short kernels: the group's x (and dy) rows (Lp × hpg·P bf16,
// zero padded), B and C (Lp × N bf16), the group's raw dt (Lp × hpg floats), then C·Bᵀ (fp32,
// Qp × ldQ) by the warps in turn. Ends synchronised.
template <class T>
__device__ __forceinline__ void short_stage(const Params<T>& p, const ChunkPos& c, int64_t g, const ShortLayout& lay,
                                            float* smem, bool backward) {
  const int P = p.P, N = p.N, L = c.L, Lp = (L + 15) / 16 * 16, hpg = static_cast<int>(p.hpg);
  const int64_t H = p.nheads;
  bfloat16* sX = reinterpret_cast<bfloat16*>(smem + lay.X);
  bfloat16* sB = reinterpret_cast<bfloat16*>(smem + lay.B);
  bfloat16* sC = reinterpret_cast<bfloat16*>(smem + lay.C);
  float* sdt = smem + lay.dt;
  const T* xg = p.x + (c.t0 * H + g * hpg) * P;
  if (backward) {
    const T* dyg = p.dy + (c.t0 * H + g * hpg) * P;
    load_two_tiles_bf16(xg, dyg, H * P, L, Lp, lay.ldX, sX, reinterpret_cast<bfloat16*>(smem + lay.dY));
  } else {
    load_tile_bf16(xg, H * P, L, Lp, lay.ldX, sX);
  }
  load_two_tiles_bf16(p.B + (c.t0 * p.ngroups + g) * N, p.C + (c.t0 * p.ngroups + g) * N, p.ngroups * N, L, Lp, N,
                      sB, sC);
  for (int e = threadIdx.x; e < L * hpg; e += blockDim.x)
    sdt[e] = detail::ld(p.dt, (c.t0 + e / hpg) * H + g * hpg + e % hpg);
  __syncthreads();
  block_mma2<0, false, true>(Lp, Lp, false, smem + lay.CB, lay.ldQ, N, sC, N, sB, N);  // C·Bᵀ
  __syncthreads();
}

template <class T>
__global__ void __launch_bounds__(kThreads) fwd_short(Params<T> p) {
  ChunkPos c;
  if (!chunk_pos(p, blockIdx.x, c)) return;
  const int64_t g = blockIdx.y;
  if constexpr (mma_type<T>()) {
    namespace wmma = nvcuda::wmma;
    const int P = p.P, N = p.N, L = c.L, Lp = (L + 15) / 16 * 16, hpg = static_cast<int>(p.hpg);
    const int warp = static_cast<int>(threadIdx.x >> 5), lane = static_cast<int>(threadIdx.x & 31);
    const int nw = static_cast<int>(blockDim.x >> 5);
    const ShortLayout lay = short_layout(p.Q, N, P, hpg, nw, false);
    const int Qp = lay.Qp, ldX = lay.ldX, ldQ = lay.ldQ, ldT = lay.ldT;
    const int64_t H = p.nheads;
    extern __shared__ __align__(128) unsigned char ssd_smem[];
    float* smem = reinterpret_cast<float*>(ssd_smem);
    short_stage(p, c, g, lay, smem, false);
    const bfloat16* sX = reinterpret_cast<const bfloat16*>(smem + lay.X);
    const float* sCB = smem + lay.CB;
    float* wbase = smem + lay.warp + warp * lay.per_warp;
    bfloat16* sM = reinterpret_cast<bfloat16*>(wbase + lay.wM);
    float* sT = wbase + lay.wT;
    float* s = wbase + lay.wS;
    for (int j = warp; j < hpg; j += nw) {
      const int64_t h = g * hpg + j;
      short_scalars(p, L, h, smem + lay.dt + j, hpg, s);
      const float* cs = s + 96;
      for (int e = lane; e < Lp * Lp; e += 32) {  // M (row t, column s), zero padded
        const int t = e / Lp, u = e % Lp;
        sM[t * Qp + u] = bfloat16(t < L && u <= t ? sCB[t * ldQ + u] * expf(cs[t] - cs[u]) * s[u] : 0.0f);
      }
      __syncwarp();
      const bfloat16* xh = sX + j * P;
      for (int tile = 0; tile < (Lp / 16) * (P / 16); ++tile) {  // Y = M·X
        const int m0 = (tile / (P / 16)) * 16, n0 = (tile % (P / 16)) * 16;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.0f);
        mma_tile_k<false, false>(acc, m0, n0, 0, m0 + 16, sM, Qp, xh, ldX);
        wmma::store_matrix_sync(sT + m0 * ldT + n0, acc, ldT, wmma::mem_row_major);
      }
      __syncwarp();
      const float Dh = p.D ? detail::ld(p.D, h) : 0.0f;
      for (int e = lane; e < L * P; e += 32) {
        const int t = e / P, q = e % P;
        detail::st(p.y, ((c.t0 + t) * H + h) * P + q, sT[t * ldT + q] + Dh * static_cast<float>(xh[t * ldX + q]));
      }
      __syncwarp();
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) bwd_short(Params<T> p) {
  const int64_t slot = blockIdx.x, g = blockIdx.y;
  const int64_t H = p.nheads;
  ChunkPos c;
  if (!chunk_pos(p, slot, c)) return;
  if constexpr (mma_type<T>()) {
    namespace wmma = nvcuda::wmma;
    const int P = p.P, N = p.N, L = c.L, Lp = (L + 15) / 16 * 16, hpg = static_cast<int>(p.hpg);
    const int warp = static_cast<int>(threadIdx.x >> 5), lane = static_cast<int>(threadIdx.x & 31);
    const int nw = static_cast<int>(blockDim.x >> 5);
    const ShortLayout lay = short_layout(p.Q, N, P, hpg, nw, true);
    const int Qp = lay.Qp, ldX = lay.ldX, ldQ = lay.ldQ, ldT = lay.ldT;
    extern __shared__ __align__(128) unsigned char ssd_smem[];
    float* smem = reinterpret_cast<float*>(ssd_smem);
    short_stage(p, c, g, lay, smem, true);
    const bfloat16* sX = reinterpret_cast<const bfloat16*>(smem + lay.X);
    const bfloat16* sdY = reinterpret_cast<const bfloat16*>(smem + lay.dY);
    const bfloat16* sB = reinterpret_cast<const bfloat16*>(smem + lay.B);
    const bfloat16* sC = reinterpret_cast<const bfloat16*>(smem + lay.C);
    const float* sCB = smem + lay.CB;
    bfloat16* sWd = reinterpret_cast<bfloat16*>(smem + lay.Wd);  // hpg × (Qp × Qp): W·diag(dt) per head
    float* wbase = smem + lay.warp + warp * lay.per_warp;
    float* sZ = wbase + lay.wZ;
    bfloat16* sM = reinterpret_cast<bfloat16*>(wbase + lay.wM);
    float* sT = wbase + lay.wT;
    float* s = wbase + lay.wS;
    for (int j = warp; j < hpg; j += nw) {
      const int64_t h = g * hpg + j;
      const bfloat16* xh = sX + j * P;
      const bfloat16* dyh = sdY + j * P;
      bfloat16* wd = sWd + j * Qp * Qp;
      short_scalars(p, L, h, smem + lay.dt + j, hpg, s);
      const float *sdt = s, *sdtg = s + 32, *scsdt = s + 64, *cs = s + 96;
      float *spos = s + 128, *su = s + 160, *sdD = s + 192;
      for (int tile = 0; tile < (Lp / 16) * (Lp / 16); ++tile) {  // Gm = dY·Xᵀ
        const int m0 = (tile / (Lp / 16)) * 16, n0 = (tile % (Lp / 16)) * 16;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.0f);
        mma_tile_k<false, true>(acc, m0, n0, 0, P, dyh, ldX, xh, ldX);
        wmma::store_matrix_sync(sZ + m0 * ldQ + n0, acc, ldQ, wmma::mem_row_major);
      }
      __syncwarp();
      // M, Wd = bf16(W·dt_s) and Z = W∘C·Bᵀ (W = Gm∘exp(cs_t − cs_s), s <= t < L), zero elsewhere.
      for (int e = lane; e < Lp * Lp; e += 32) {
        const int t = e / Lp, u = e % Lp;
        float m = 0.0f, w = 0.0f, z = 0.0f;
        if (t < L && u <= t) {
          const float ex = expf(cs[t] - cs[u]);
          m = sCB[t * ldQ + u] * ex * sdt[u];
          const float wv = sZ[t * ldQ + u] * ex;
          w = wv * sdt[u];
          z = wv * sCB[t * ldQ + u];
        }
        sM[t * Qp + u] = bfloat16(m);
        wd[t * Qp + u] = bfloat16(w);
        sZ[t * ldQ + u] = z;
      }
      __syncwarp();
      for (int tile = 0; tile < (Lp / 16) * (P / 16); ++tile) {  // Mᵀ·dY (Mᵀ(s, t) = 0 for t < s)
        const int m0 = (tile / (P / 16)) * 16, n0 = (tile % (P / 16)) * 16;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.0f);
        mma_tile_k<true, false>(acc, m0, n0, m0, Lp, sM, Qp, dyh, ldX);
        wmma::store_matrix_sync(sT + m0 * ldT + n0, acc, ldT, wmma::mem_row_major);
      }
      // Per-token sums (lane t): dD_t = dY_t·X_t, pos_t = Σ_s Z(t, s)·dt_s, u_t = Σ_t' Z(t', t).
      if (lane < L) {
        const int t = lane;
        float dd = 0.0f, pos = 0.0f, u = 0.0f;
        for (int i = 0; i < P; ++i) {
          const int q = (i + 2 * t) % P;  // rotated: the lanes read different banks
          dd += static_cast<float>(dyh[t * ldX + q]) * static_cast<float>(xh[t * ldX + q]);
        }
        for (int k = 0; k <= t; ++k) pos += sZ[t * ldQ + k] * sdt[k];
        for (int k = t; k < L; ++k) u += sZ[k * ldQ + t];
        sdD[t] = dd;
        spos[t] = pos;
        su[t] = u;
      }
      __syncwarp();
      {
        const float Dh = p.D ? detail::ld(p.D, h) : 0.0f;
        for (int e = lane; e < L * P; e += 32) {
          const int t = e / P, q = e % P;
          detail::st(p.dx, ((c.t0 + t) * H + h) * P + q, sT[t * ldT + q] + Dh * static_cast<float>(dyh[t * ldX + q]));
        }
      }
      // The head's scalars in double (as bwd_mma, without H and G): ∂L/∂cs_t = pos_t − dt_t·u_t,
      // its suffix sums, ddt, and the dA / dD / ddt_bias partials.
      {
        const double a = detail::ld(p.A, h);
        const int t = L - 1 - lane;
        double dcs = 0.0, u = 0.0;
        if (t >= 0) {
          u = static_cast<double>(su[t]);
          dcs = static_cast<double>(spos[t]) - static_cast<double>(sdt[t]) * u;
        }
        double rev = dcs;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
          const double y = __shfl_up_sync(0xffffffffu, rev, o);
          if (lane >= o) rev += y;
        }
        double dA = 0.0, ddb = 0.0, dD = 0.0;
        if (t >= 0) {
          dA = dcs * scsdt[t];
          const float d_raw = static_cast<float>((u + a * rev) * sdtg[t]);
          detail::st(p.ddt, (c.t0 + t) * H + h, d_raw);
          ddb = d_raw;
          dD = sdD[t];
        }
        dA = warp_sum_d(dA);
        ddb = warp_sum_d(ddb);
        dD = warp_sum_d(dD);
        if (lane == 0) {
          p.ws_par[slot * 3 * H + h] = static_cast<float>(dA);
          p.ws_par[slot * 3 * H + H + h] = static_cast<float>(dD);
          p.ws_par[slot * 3 * H + 2 * H + h] = static_cast<float>(ddb);
        }
      }
      __syncwarp();
    }
    __syncthreads();  // every head's Wd written
    // dC = Σ_h Wd_h·B (Wd_h(t, s) = 0 for s > t), dB = Σ_h Wd_hᵀ·C (0 for t < s): 16×16 tiles by
    // the warps in turn, each summed over the heads in order.
    const int tn = N / 16, tiles = (Lp / 16) * tn;
    for (int tile = warp; tile < 2 * tiles; tile += nw) {
      const bool is_dB = tile >= tiles;
      const int r = is_dB ? tile - tiles : tile, m0 = (r / tn) * 16, n0 = (r % tn) * 16;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int j = 0; j < hpg; ++j) {
        if (is_dB) mma_tile_k<true, false>(acc, m0, n0, m0, Lp, sWd + j * Qp * Qp, Qp, sC, N);
        else mma_tile_k<false, false>(acc, m0, n0, 0, m0 + 16, sWd + j * Qp * Qp, Qp, sB, N);
      }
      wmma::store_matrix_sync(sT, acc, ldT, wmma::mem_row_major);
      __syncwarp();
      T* out = is_dB ? p.dB : p.dC;
      for (int e = lane; e < 256; e += 32) {
        const int t = m0 + e / 16, n = n0 + e % 16;
        if (t < L) detail::st(out, ((c.t0 + t) * p.ngroups + g) * N + n, sT[(e / 16) * ldT + e % 16]);
      }
      __syncwarp();
    }
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

// The chunk size actually run (the results do not depend on it beyond rounding), from the
// requested one (at most kMaxChunk):
//  - at most the mean sequence length `mean_len` rounded up to a power of two (at least 16; 0:
//    unknown): a chunk longer than the sequences only costs shared memory, i.e. occupancy;
//  - halved until the kernels' shared memory fits the per-block limit;
//  - halved while the kernels would run one block per SM and the half chunk (at least
//    kOccupancyChunk) runs two: the kernels are latency bound, and a second block per SM hides
//    more latency than the longer chunk saves (the per-SM shared memory is the per-block opt-in
//    limit + 1 KB, the per-block reservation, on sm_80/sm_90). Building with
//    -DMAMBATRACK_SSD_OCCUPANCY_CHUNK=64 keeps chunk 64 (bwd_mma: one block per SM, half the chunk
//    states) for timing that choice.
#ifdef MAMBATRACK_SSD_OCCUPANCY_CHUNK
constexpr int64_t kOccupancyChunk = MAMBATRACK_SSD_OCCUPANCY_CHUNK;
#else
constexpr int64_t kOccupancyChunk = 32;
#endif
inline int64_t pick_chunk(int64_t requested, int64_t N, int64_t P, bool backward, bool mma, std::size_t limit,
                          int64_t mean_len = 0) {
  int64_t Q = requested < kMaxChunk ? requested : kMaxChunk;
  if (mean_len > 0) {
    int64_t cap = 16;
    while (cap < mean_len) cap *= 2;
    if (cap < Q) Q = cap;
  }
  auto bytes = [&](int64_t q) {
    const int64_t f = backward ? bwd_floats(q, N, P, mma) : fwd_floats(q, N, P, mma);
    const int64_t o = outer_floats(q, N, P);
    return static_cast<std::size_t>(f > o ? f : o) * sizeof(float);
  };
  while (Q > 1 && bytes(Q) > limit) Q = (Q + 1) / 2;
  MAMBATRACK_CHECK(bytes(Q) <= limit, ConfigError, "cuda ssd: d_state ", N, " and headdim ", P,
                   " need more shared memory than the device has (", limit, " bytes per block)");
  auto per_sm = [&](int64_t q) { return (limit + 1024) / (bytes(q) + 1024); };
  while ((Q + 1) / 2 >= kOccupancyChunk && per_sm(Q) < 2 && per_sm((Q + 1) / 2) >= 2) Q = (Q + 1) / 2;
  return Q;
}

inline std::size_t align_up(std::size_t n) { return (n + 255) / 256 * 256; }

// A/B switches: -DMAMBATRACK_SSD_NO_SINGLE ignores max_seqlen_hint (every call runs the chunk
// states and state passing, chunk capped at the mean length); -DMAMBATRACK_SSD_NO_SAVED makes
// ssd_fwd save no states and ssd_bwd recompute them.
#ifdef MAMBATRACK_SSD_NO_SINGLE
constexpr bool kSingleChunk = false;
#else
constexpr bool kSingleChunk = true;
#endif
#ifdef MAMBATRACK_SSD_NO_SAVED
constexpr bool kSavedStates = false;
#else
constexpr bool kSavedStates = true;
#endif

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
  // The chunk is capped at the longest sequence when the caller bounds it (max_seqlen_hint), else
  // at the mean length; with every sequence in one chunk the state passing is the identity.
  const int64_t hint = kSingleChunk ? in.max_seqlen_hint : 0;
  p.Q = static_cast<int>(pick_chunk(chunk, d.d_state, d.headdim, backward, p.mma, smem_limit(),
                                    hint > 0 ? hint : d.batch > 0 ? (d.tokens + d.batch - 1) / d.batch : 0));
  p.single = hint > 0 && hint <= p.Q;
  p.slots = p.single ? d.batch : d.batch + d.tokens / p.Q;
  p.nb = p.single ? 0 : d.tokens / p.Q + 1;
  MAMBATRACK_CHECK(p.slots < (int64_t{1} << 31) && d.batch * d.nheads < (int64_t{1} << 31), ConfigError,
                   "cuda ssd: batch ", d.batch, " and ", d.tokens, " tokens are too many for one call; split the batch");
  p.dt_min = static_cast<float>(in.dt_min);
  p.dt_max = static_cast<float>(in.dt_max);
  return p;
}

// Scratch (id `scratch_id`, default 1): slot map, states, adjoints, partials. Builds the slot map
// on `stream`. `states` (not null): ws_H is that buffer (saved chunk-start states, read or filled
// by the caller's launches), not scratch. Single-chunk mode needs no slot map, states or adjoints.
template <class T>
float* prepare(Params<T>& p, bool backward, cudaStream_t stream, const float* states = nullptr, int scratch_id = 1) {
  const std::size_t PN = static_cast<std::size_t>(p.P) * p.N, H = static_cast<std::size_t>(p.nheads);
  const std::size_t nb = p.single ? 0 : static_cast<std::size_t>(p.nb), slots = static_cast<std::size_t>(p.slots);
  const std::size_t map_b = p.single ? 0 : align_up(2 * slots * sizeof(int));
  const std::size_t st_b = align_up(nb * H * PN * sizeof(float));
  const std::size_t dec_b = align_up(nb * H * sizeof(float));
  const std::size_t h_b = states ? 0 : st_b;
  const std::size_t par_b = backward ? align_up(slots * 3 * H * sizeof(float)) : 0;
  const std::size_t tmp_b = backward ? align_up(((slots + 63) / 64 * H + 1) * sizeof(float)) : 0;
  const std::size_t total = map_b + h_b + dec_b + (backward ? st_b + dec_b : 0) + par_b + tmp_b;
  char* base = static_cast<char*>(detail::scratch(scratch_id, total > 0 ? total : 256));
  p.slot_seq = map_b ? reinterpret_cast<int*>(base) : nullptr;
  p.slot_k = map_b ? p.slot_seq + slots : nullptr;
  base += map_b;
  p.ws_H = states ? const_cast<float*>(states) : reinterpret_cast<float*>(base);  // read-only when given to ssd_bwd
  base += h_b;
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
  if (map_b) {
    MAMBATRACK_CUDA_CHECK(cudaMemsetAsync(p.slot_seq, 0xff, slots * sizeof(int), stream));
    map_slots<<<static_cast<unsigned>((p.batch + 127) / 128), 128, 0, stream>>>(p.cu, p.batch, p.tokens, p.Q,
                                                                                p.slots, p.slot_seq, p.slot_k);
    MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  }
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

// The backward's main kernel (after the states and adjoints): bwd_mma on the tensor-core path
// (unless MAMBATRACK_SSD_BWD_V1), bwd_main otherwise.
// Single-chunk mode: the sequences the output kernels skipped (empty, or a wrong hint).
template <class T>
void launch_single_edges(const Params<T>& p, bool backward, cudaStream_t stream) {
  if (!p.single) return;
  single_edges<T><<<static_cast<unsigned>(p.batch), 128, 0, stream>>>(p, backward);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void launch_bwd_main(const Params<T>& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.slots), static_cast<unsigned>(p.ngroups));
  if constexpr (mma_type<T>()) {
    if (use_short(p, true, smem_limit())) {
      const std::size_t sb = static_cast<std::size_t>(short_floats(p.Q, p.N, p.P, p.hpg, true)) * sizeof(float);
      set_smem(bwd_short<T>, sb);
      bwd_short<T><<<grid, short_threads(p.hpg), sb, stream>>>(p);
      MAMBATRACK_CUDA_CHECK(cudaGetLastError());
      launch_single_edges(p, true, stream);
      return;
    }
  }
  const std::size_t bb = static_cast<std::size_t>(bwd_floats(p.Q, p.N, p.P, p.mma)) * sizeof(float);
  bool done = false;
  if constexpr (mma_type<T>() && kBwdMma) {
    if (p.mma) {
      set_smem(bwd_mma<T>, bb);
      bwd_mma<T><<<grid, bwd_mma_threads(p.Q), bb, stream>>>(p);
      done = true;
    }
  }
  if (!done) {
    set_smem(bwd_main<T>, bb);
    bwd_main<T><<<grid, kThreads, bb, stream>>>(p);
  }
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  launch_single_edges(p, true, stream);
}

}  // namespace ssd_cuda_detail

// Forward on `stream`: y, and final_state when given. cu_seqlens lives on the device and is not
// read by the host: it must be valid (validate it on the host before uploading); sequences with
// impossible ranges are skipped. The chunk size run is a.chunk_size, reduced when the shared
// memory of (d_state, headdim) requires it (at most 256), capped at max_seqlen_hint (every
// sequence in one chunk: no state passing) or else at the mean length. With a.saved_states the
// chunk-start states are computed at the chunk the backward runs and kept there (fp32, shape
// (tokens / chunk + 1, nheads, headdim, d_state)), or the tensor is emptied when the backward
// needs none (single chunk) or the forward cannot share them. Scratch ids 1 and 0.
template <class T>
void ssd_fwd(const SsdFwdArgs<T, Cuda>& a, cudaStream_t stream = nullptr) {
  namespace D = ssd_cuda_detail;
  D::check_type<T>();
  const SsdDims d = validate_ssd_fwd(a);
  D::Params<T> p = D::make_params<T>(a.in, d, a.chunk_size, /*backward=*/false);
  // States to save: at the backward's chunk (its make_params), shared by the forward's chunks when
  // its chunk is a multiple of that one, else the forward runs at the backward's chunk.
  D::Params<T> ps;
  bool save = false;
  if (a.saved_states) {
    if (D::kSavedStates && d.batch > 0 && d.nheads > 0) {
      ps = D::make_params<T>(a.in, d, a.chunk_size, /*backward=*/true);
      save = !ps.single;
      if (save && p.Q % ps.Q != 0) {
        const std::size_t need = static_cast<std::size_t>(D::fwd_floats(ps.Q, p.N, p.P, p.mma)) * sizeof(float);
        if (need <= D::smem_limit()) {
          p.Q = ps.Q;
          p.single = false;
          p.slots = ps.slots;
          p.nb = ps.nb;
        } else {
          save = false;
        }
      }
    }
    const Shape shape{save ? ps.nb : 0, d.nheads, d.headdim, d.d_state};
    if (!save) {
      if (a.saved_states->data() != nullptr) *a.saved_states = Tensor<float, Cuda>();  // nothing freed when empty (graph capture)
    }
    else if (a.saved_states->shape() != shape) *a.saved_states = Tensor<float, Cuda>(shape);
  }
  if (d.batch == 0 || d.nheads == 0) return;
  p.y = a.y.data;
  p.final_state = ssd_detail::given(a.final_state) ? a.final_state.data : nullptr;
  if (save) {
    ps.final_state = p.final_state;  // pass_states writes the final states of empty sequences
    D::prepare(ps, false, stream, a.saved_states->data(), 1);
    D::launch_states(ps, stream);
    if (p.Q == ps.Q) {
      p.slot_seq = ps.slot_seq;
      p.slot_k = ps.slot_k;
      p.ws_H = ps.ws_H;
    } else {
      D::prepare(p, false, stream, a.saved_states->data(), 0);
      p.Qs = ps.Q;
    }
  } else {
    D::prepare(p, false, stream);
    if (!p.single) D::launch_states(p, stream);
  }
  const dim3 grid(static_cast<unsigned>(p.slots), static_cast<unsigned>(p.ngroups));
  if constexpr (D::mma_type<T>()) {
    if (D::use_short(p, false, D::smem_limit())) {
      const std::size_t sb = static_cast<std::size_t>(D::short_floats(p.Q, p.N, p.P, p.hpg, false)) * sizeof(float);
      D::set_smem(D::fwd_short<T>, sb);
      D::fwd_short<T><<<grid, D::short_threads(p.hpg), sb, stream>>>(p);
      MAMBATRACK_CUDA_CHECK(cudaGetLastError());
      D::launch_single_edges(p, false, stream);
      return;
    }
  }
  const std::size_t fb = static_cast<std::size_t>(D::fwd_floats(p.Q, p.N, p.P, p.mma)) * sizeof(float);
  D::set_smem(D::fwd_out<T>, fb);
  D::fwd_out<T><<<grid, D::kThreads, fb, stream>>>(p);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  D::launch_single_edges(p, false, stream);
}

// Backward on `stream`: overwrites dx, ddt, dB, dC, dinitial_state; accumulates into dA, dD,
// ddt_bias. The chunk-start states come from a.saved_states (the forward's, same inputs and
// chunk_size) or are recomputed; none are needed when every sequence fits one chunk. No atomics:
// bit-identical from run to run (and with or without saved states). Scratch id 1.
template <class T>
void ssd_bwd(const SsdBwdArgs<T, Cuda>& a, cudaStream_t stream = nullptr) {
  namespace D = ssd_cuda_detail;
  D::check_type<T>();
  const SsdDims d = validate_ssd_bwd(a);
  D::Params<T> p = D::make_params<T>(a.in, d, a.chunk_size, /*backward=*/true);
  const bool saved = D::kSavedStates && !p.single && ssd_detail::given(a.saved_states) && a.saved_states.shape.numel() > 0;
  if (saved) {
    const Shape want{p.nb, d.nheads, d.headdim, d.d_state};
    MAMBATRACK_CHECK_SHAPE(a.saved_states.shape == want, "ssd backward: saved_states has shape ", a.saved_states.shape,
                           ", expected ", want, " (pass the saved_states of the forward with the same inputs and chunk_size)");
  }
  if (d.batch == 0 || d.nheads == 0) return;
  p.dy = a.dy.data;
  p.dfinal = ssd_detail::given(a.dfinal_state) ? a.dfinal_state.data : nullptr;
  p.dx = a.dx.data;
  p.ddt = a.ddt.data;
  p.dB = a.dB.data;
  p.dC = a.dC.data;
  p.dinit = ssd_detail::given(a.dinitial_state) ? a.dinitial_state.data : nullptr;
  float* tmp = D::prepare(p, true, stream, saved ? a.saved_states.data : nullptr);
  if (!p.single) {
    if (!saved) D::launch_states(p, stream);
    const std::size_t ob = static_cast<std::size_t>(D::outer_floats(p.Q, p.N, p.P)) * sizeof(float);
    D::set_smem(D::chunk_outer<T>, ob);
    D::chunk_outer<T><<<D::outer_grid(p), D::kThreads, ob, stream>>>(p, 1);
    MAMBATRACK_CUDA_CHECK(cudaGetLastError());
    D::pass_states<T><<<D::pass_grid(p), D::kThreads, 0, stream>>>(p, 1);
    MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  }
  D::launch_bwd_main(p, stream);
  const int64_t H = p.nheads;
  MAMBATRACK_CHECK((p.slots + 63) / 64 < 65536, ConfigError, "cuda ssd: too many chunks (", p.slots, ") for one call");
  detail::sum_rows_accumulate<T>(p.ws_par, p.slots, 3 * H, H, tmp, a.dA.data, stream);
  if (p.D) detail::sum_rows_accumulate<T>(p.ws_par + H, p.slots, 3 * H, H, tmp, a.dD.data, stream);
  if (p.dt_bias) detail::sum_rows_accumulate<T>(p.ws_par + 2 * H, p.slots, 3 * H, H, tmp, a.ddt_bias.data, stream);
}

}  // namespace mambatrack::cuda
