// CUDA Mamba-1 selective scan (math and argument structs: ops/selective_scan.hpp), forward and
// backward, float or bfloat16 storage, float arithmetic. One thread per (chunk of a sequence,
// channel), DState in registers, token-major so a warp reads 32 contiguous channels of one token.
// Chunked path: chunks are combined across time (h_end = exp(A·ΣΔ)·h_start + h_local), so short
// and long sequences both fill the GPU. Sequential path (ScanPath): one block per (sequence,
// channel block) walks whole sequences, one kernel per direction, when the host knows that is
// enough parallelism (max_seqlen_hint). The d_state 16/32 backward splits the states of a
// channel over 4 lanes. Deterministic: every cross-thread sum is a fixed-order reduction.
// Tiled kernels (ScanImpl, the default; MAMBATRACK_SCAN_LEGACY or scan_impl_override() =
// kLegacy select the earlier per-token ones): the forward handles 8 tokens per step with their
// loads issued a group ahead; the backward stages each chunk's per-token scalars and rows in
// shared memory once and splits d_state over lanes 8 states each (chunks <= 16 tokens). With the
// tiled kernels the chunked path's passes run over groups of ~64 tokens of saved chunks
// (grouped_params, chunk_group; chunk_group_override() = 1 or MAMBATRACK_SCAN_NO_CHUNK_GROUP
// restore single-chunk passes): local and combine passes on 4x fewer chunk states.
// Bisection switches (define to restore the earlier code): MAMBATRACK_SCAN_EXPF_DECAY,
// MAMBATRACK_SCAN_PORTABLE_BF16_STORE, MAMBATRACK_SCAN_PARTIAL_SEGMENT_LAST,
// MAMBATRACK_SCAN_NO_L2_PREFETCH, MAMBATRACK_SCAN_PRECISE_GATE, MAMBATRACK_SCAN_PRECISE_SOFTPLUS.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <type_traits>

#include "mambatrack/core/cuda_memory.cuh"
#include "mambatrack/core/dtype.hpp"
#include "mambatrack/core/supported.hpp"
#include "mambatrack/ops/cuda/kernel_util.cuh"
#include "mambatrack/ops/selective_scan.hpp"

namespace mambatrack::cuda {

namespace scan_detail {

constexpr int kThreads = 64;  // channels per block (two warps)

// Tokens per backward segment whose states are kept in shared memory: (kSeg + 1)·N floats/thread.
template <int N>
constexpr int seg_len() {
  return 128 / N > 1 ? 128 / N : 1;
}
// Chunks of up to stage_tokens() tokens have their B and C rows staged in shared memory (read by
// every channel of the block); longer chunks read them from global memory.
template <int N>
constexpr int stage_tokens() {
  return 1024 / N > 1 ? 1024 / N : 1;
}
template <int N>
constexpr std::size_t bwd_smem_bytes() {
  return static_cast<std::size_t>(seg_len<N>() + 1) * N * kThreads * sizeof(float) +
         2 * static_cast<std::size_t>(stage_tokens<N>()) * N * sizeof(float);
}

// Register caps (blocks per SM) where they cost no spills: 64 registers for the d_state <= 16
// forward; the backward is held to ~5 blocks/SM by its shared memory anyway.
template <int N>
constexpr int fwd_min_blocks() {
  return N <= 16 ? 16 : 1;
}
template <int N>
constexpr int bwd_min_blocks() {
  return N <= 16 ? 5 : 1;
}

template <class T>
struct Params {
  using S = scan_state_t<T>;  // states: float for bfloat16 storage
  const T *u = nullptr, *delta = nullptr, *A = nullptr, *B = nullptr, *C = nullptr;
  const T *D = nullptr, *delta_bias = nullptr, *z = nullptr;
  const S* init = nullptr;
  const int64_t* cu = nullptr;
  T* out = nullptr;
  S *final_state = nullptr, *saved = nullptr;
  const S* saved_in = nullptr;
  const T* dout = nullptr;
  const S* dfinal = nullptr;
  T *du = nullptr, *ddelta = nullptr, *dz = nullptr;
  S* dinit = nullptr;
  int64_t tokens = 0, dim = 0, ngroups = 1, batch = 0, chunk = 64, slots = 0, per_group = 0, bpg = 0;
  // The chunk of saved_states (SelectiveScanInputs::chunk). `chunk` above is the chunked path's
  // pass length: save_chunk, or a multiple of it (grouped_params: each pass block walks several
  // saved chunks in order).
  int64_t save_chunk = 64;
  bool softplus = true;
  bool vec_bc = false;  // B, C rows 16-byte aligned: vector loads
  int64_t max_len_hint = 0;  // SelectiveScanInputs::max_seqlen_hint (host only)
  int* slot_seq = nullptr;  // slot -> sequence (-1: unused)
  int* slot_k = nullptr;    // slot -> chunk index in its sequence
  float* ws_state = nullptr;  // (slots, dim, N): local end states / chunk-start states / adjoints
  float* ws_sd = nullptr;     // (slots, dim): Σ Δ over the chunk
  float* ws_par = nullptr;    // (slots, dim·N + 2·dim): dA, dD, ddelta_bias partials
  float* ws_bc = nullptr;     // (tokens, G, 2·bpg, 2N): dB, dC partials per warp
};

struct ChunkPos {
  int64_t b, k, start, end, t0, t1, nk;
};

// selective_scan_slot(b, start, 0, chunk) on the device.
__device__ __forceinline__ int64_t selective_scan_slot_d(int64_t b, int64_t start, int64_t chunk) {
  return b + start / chunk;
}

template <class T>
__device__ __forceinline__ bool chunk_pos(const Params<T>& p, int64_t slot, ChunkPos& c) {
  const int b = p.slot_seq[slot];
  if (b < 0) return false;
  c.b = b;
  c.k = p.slot_k[slot];
  c.start = p.cu[b];
  c.end = p.cu[b + 1];
  c.t0 = c.start + c.k * p.chunk;
  c.t1 = c.t0 + p.chunk < c.end ? c.t0 + p.chunk : c.end;
  c.nk = (c.end - c.start + p.chunk - 1) / p.chunk;
  return true;
}

// This thread's channel: blocks never straddle a group (B and C differ between groups).
struct Lane {
  int64_t g, d;
  bool active;
  int warp_in_group;
};
template <class T>
__device__ __forceinline__ Lane lane_of(const Params<T>& p) {
  Lane l;
  const uint32_t bpg = static_cast<uint32_t>(p.bpg);
  l.g = blockIdx.y / bpg;
  const int64_t local = (blockIdx.y % bpg) * kThreads + threadIdx.x;
  l.d = l.g * p.per_group + local;
  l.active = local < p.per_group;
  l.warp_in_group = static_cast<int>((blockIdx.y % bpg) * (kThreads / 32) + threadIdx.x / 32);
  return l;
}

// slot_seq/slot_k: each sequence's chunks at selective_scan_slot(b, start, k, chunk). Sequences
// with invalid cu_seqlens ranges are skipped (the host cannot see device values).
template <int kUnused = 0>
__global__ void map_slots(const int64_t* __restrict cu, int64_t batch, int64_t tokens, int64_t chunk, int64_t slots,
                          int* __restrict slot_seq, int* __restrict slot_k) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= batch) return;
  const int64_t start = cu[b], end = cu[b + 1];
  if (start < 0 || end < start || end > tokens) return;
  const int64_t nk = (end - start + chunk - 1) / chunk;
  for (int64_t k = 0; k < nk; ++k) {
    const int64_t s = b + start / chunk + k;
    if (s >= slots) return;
    slot_seq[s] = static_cast<int>(b);
    slot_k[s] = static_cast<int>(k);
  }
}

// One token's inputs for one channel (zeros on inactive lanes), loaded ahead of their use.
// The per-channel scalars are prefetched one token ahead; the B and C rows (the same for every
// channel of the group, so mostly cache hits) are loaded at the token itself to keep registers
// (and so occupancy) down.
template <int N>
struct Tok {
  float delta, u, dout, z;
  float B[N], C[N];
};
template <class T, int N, bool kDout, bool kZ, bool kC>
__device__ __forceinline__ void load_tok(const Params<T>& p, int64_t t, int64_t d, int64_t g, bool active, Tok<N>& x) {
  const int64_t i = t * p.dim + d;
  x.delta = active ? detail::ldg(p.delta + i) : 0.0f;
  x.u = active ? detail::ldg(p.u + i) : 0.0f;
  if constexpr (kDout) x.dout = active ? detail::ldg(p.dout + i) : 0.0f;
  if constexpr (kZ) x.z = (active && p.z) ? detail::ldg(p.z + i) : 0.0f;
}
template <class T, int N, bool kC>
__device__ __forceinline__ void load_rows(const Params<T>& p, int64_t t, int64_t g, Tok<N>& x) {
  const int64_t row = (t * p.ngroups + g) * N;
  detail::load_row<T, N>(p.B + row, p.vec_bc, x.B);
  if constexpr (kC) detail::load_row<T, N>(p.C + row, p.vec_bc, x.C);
}

// Stage the chunk's B (and C) rows of this block's group in shared memory when the chunk fits;
// block-uniform result. Every thread of the block must call it (it synchronises).
template <class T, int N>
__device__ __forceinline__ bool stage_rows(const Params<T>& p, const ChunkPos& c, int64_t g, float* sB, float* sC) {
  const int64_t L = c.t1 - c.t0;
  const bool staged = L <= stage_tokens<N>();
  if (staged) {
    for (int64_t e = threadIdx.x; e < L * N; e += blockDim.x) {
      const int64_t src = ((c.t0 + e / N) * p.ngroups + g) * N + e % N;
      sB[e] = detail::ldg(p.B + src);
      if (sC) sC[e] = detail::ldg(p.C + src);
    }
  }
  __syncthreads();
  return staged;
}
template <class T, int N, bool kC>
__device__ __forceinline__ void get_rows(const Params<T>& p, int64_t t, int64_t g, const ChunkPos& c, bool staged,
                                         const float* sB, const float* sC, Tok<N>& x) {
  if (staged) {
    const int64_t o = (t - c.t0) * N;
#pragma unroll
    for (int n = 0; n < N; ++n) {
      x.B[n] = sB[o + n];
      if constexpr (kC) x.C[n] = sC[o + n];
    }
  } else {
    load_rows<T, N, kC>(p, t, g, x);
  }
}

// Stores a float as T. bfloat16: one cvt.rn.bf16.f32 (round to nearest even, the bits of
// bfloat16(float) for every non-NaN value) instead of the ~8 integer instructions of the portable
// conversion; NaN becomes the canonical 0x7fff. Defining MAMBATRACK_SCAN_PORTABLE_BF16_STORE
// restores detail::st (bisection).
template <class T>
__device__ __forceinline__ void store(T* p, int64_t i, float v) {
  detail::st(p, i, v);
}
#ifndef MAMBATRACK_SCAN_PORTABLE_BF16_STORE
__device__ __forceinline__ void store(bfloat16* p, int64_t i, float v) {
  unsigned short b;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(b) : "f"(v));
  reinterpret_cast<unsigned short*>(p)[i] = b;
}
#endif

// K consecutive states of one (slot, channel) from or to float memory: 16-byte accesses where q is
// 16-byte aligned (a warp's 16-float rows then take 4 wide accesses instead of 16 scalar ones,
// each touching 32 sectors), scalar ones otherwise. The same values either way.
template <int K>
__device__ __forceinline__ void store_states(float* q, const float (&h)[K]) {
  if constexpr (K % 4 == 0) {
    if ((reinterpret_cast<std::uintptr_t>(q) & 15) == 0) {
#pragma unroll
      for (int i = 0; i < K / 4; ++i)
        reinterpret_cast<float4*>(q)[i] = make_float4(h[4 * i], h[4 * i + 1], h[4 * i + 2], h[4 * i + 3]);
      return;
    }
  }
#pragma unroll
  for (int n = 0; n < K; ++n) q[n] = h[n];
}
template <int K>
__device__ __forceinline__ void load_states(const float* q, float (&h)[K]) {
  if constexpr (K % 4 == 0) {
    if ((reinterpret_cast<std::uintptr_t>(q) & 15) == 0) {
#pragma unroll
      for (int i = 0; i < K / 4; ++i) {
        const float4 w = reinterpret_cast<const float4*>(q)[i];
        h[4 * i] = w.x;
        h[4 * i + 1] = w.y;
        h[4 * i + 2] = w.z;
        h[4 * i + 3] = w.w;
      }
      return;
    }
  }
#pragma unroll
  for (int n = 0; n < K; ++n) h[n] = q[n];
}
// The saved chunk-start state h of (slot, channel d) (saved_states is float for every CUDA storage type).
template <class S, int N>
__device__ __forceinline__ void save_state(S* saved, int64_t slot, int64_t dim, int64_t d, const float (&h)[N]) {
  if constexpr (std::is_same_v<S, float>) {
    store_states<N>(saved + (slot * dim + d) * N, h);
  } else {
#pragma unroll
    for (int n = 0; n < N; ++n) store(saved, (slot * dim + d) * N + n, h[n]);
  }
}
// K saved states from element i on (zeros on inactive lanes).
template <class S, int K>
__device__ __forceinline__ void load_saved(const S* saved, int64_t i, bool active, float (&h)[K]) {
  if constexpr (std::is_same_v<S, float>) {
    if (active) {
      load_states<K>(saved + i, h);
      return;
    }
  }
#pragma unroll
  for (int n = 0; n < K; ++n) h[n] = active ? detail::ld(saved, i + n) : 0.0f;
}

template <class T>
__device__ __forceinline__ float dt_of(const Params<T>& p, float delta, float bias, float& raw) {
  raw = delta + bias;
  return p.softplus ? detail::softplus_f(raw) : raw;
}

// The state decay exp(Δ·a), as decay(scale_dt(Δ), a): by default ex2.approx.ftz((Δ·log2 e)·a),
// with log2 e folded into Δ once per token, so one FMUL + one MUFU per state instead of __expf's
// FMUL, FMUL, FSETP, MUFU and two predicated FMULs (its scaling for results below 2^-126, which
// here only turns decays < 1.2e-38 into 0). Same MUFU approximation (2 ulp) as __expf; the
// argument is rounded twice either way. Defining MAMBATRACK_SCAN_EXPF_DECAY restores __expf(Δ·a)
// (bisection). Every kernel uses these two, so the paths' states still agree bit for bit.
#ifdef MAMBATRACK_SCAN_EXPF_DECAY
__device__ __forceinline__ float scale_dt(float dt) { return dt; }
__device__ __forceinline__ float decay(float s, float a) { return __expf(s * a); }
#else
constexpr float kLog2e = 1.4426950408889634f;
__device__ __forceinline__ float scale_dt(float dt) { return dt * kLog2e; }
__device__ __forceinline__ float decay(float s, float a) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(s * a));
  return y;
}
#endif

// One forward step: h = exp(Δ·A)·h + B·(Δu). Shared by every kernel so states agree bit for bit.
template <int N, class Row>
__device__ __forceinline__ void fwd_step(float (&h)[N], const float (&A)[N], const Row& B, float dt, float dtu) {
  const float s = scale_dt(dt);
#pragma unroll
  for (int n = 0; n < N; ++n) h[n] = decay(s, A[n]) * h[n] + B[n] * dtu;
}

// Forward pass 1 (chunks that are not their sequence's last): local end state from h = 0, and ΣΔ.
// kTiled: with fwd_tokens_tiled's local pass (defined below).
template <class T, int N, bool kTiled>
__device__ void fwd_local_tiled(const Params<T>& p, const ChunkPos& c, int64_t slot);
template <class T, int N, bool kTiled = false>
__global__ void __launch_bounds__(kThreads, kTiled ? 8 : fwd_min_blocks<N>()) fwd_local(Params<T> p) {
  const int64_t slot = blockIdx.x;
  ChunkPos c;
  if (!chunk_pos(p, slot, c) || c.k == c.nk - 1) return;
  if constexpr (kTiled) {
    fwd_local_tiled<T, N, true>(p, c, slot);
    return;
  }
  const Lane l = lane_of(p);
  __shared__ float sB[stage_tokens<N>() * N];
  const bool staged = stage_rows<T, N>(p, c, l.g, sB, nullptr);
  if (!l.active) return;
  float A[N], h[N];
#pragma unroll
  for (int n = 0; n < N; ++n) {
    A[n] = detail::ld(p.A, l.d * N + n);
    h[n] = 0.0f;
  }
  const float bias = p.delta_bias ? detail::ld(p.delta_bias, l.d) : 0.0f;
  float sd = 0.0f, raw;
  Tok<N> cur, nxt;
  load_tok<T, N, false, false, false>(p, c.t0, l.d, l.g, true, nxt);
  #pragma unroll 1
  for (int64_t t = c.t0; t < c.t1; ++t) {
    cur = nxt;
    if (t + 1 < c.t1) load_tok<T, N, false, false, false>(p, t + 1, l.d, l.g, true, nxt);
    const float dt = dt_of(p, cur.delta, bias, raw);
    sd += dt;
    if (staged) {  // block-uniform; the row read in the state loop (no register copy)
      fwd_step<N>(h, A, sB + (t - c.t0) * N, dt, dt * cur.u);
    } else {
      load_rows<T, N, false>(p, t, l.g, cur);
      fwd_step<N>(h, A, cur.B, dt, dt * cur.u);
    }
  }
#pragma unroll
  for (int n = 0; n < N; ++n) p.ws_state[(slot * p.dim + l.d) * N + n] = h[n];
  p.ws_sd[slot * p.dim + l.d] = sd;
}

// Forward pass 2, one thread per (sequence, channel, state): chunk-start states in order,
// h_start[k+1] = exp(A·ΣΔ_k)·h_start[k] + h_local[k], written over h_local in ws_state.
template <class T, int N>
__global__ void fwd_combine(Params<T> p) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= p.batch * p.dim * N) return;
  const uint32_t i32 = static_cast<uint32_t>(i), dim32 = static_cast<uint32_t>(p.dim);  // < 2^31 (host check)
  const int64_t n = i32 % N, d = (i32 / N) % dim32, b = i32 / (N * dim32);
  const int64_t start = p.cu[b], end = p.cu[b + 1];
  float h = p.init ? detail::ld(p.init, (b * p.dim + d) * N + n) : 0.0f;
  if (end <= start) {
    if (p.final_state) store(p.final_state, (b * p.dim + d) * N + n, h);
    return;
  }
  const float a = detail::ld(p.A, d * N + n);
  const int64_t nk = (end - start + p.chunk - 1) / p.chunk, s0 = b + start / p.chunk;
  constexpr int kPre = 16;  // loads in flight ahead of the dependent chain
  for (int64_t k0 = 0; k0 < nk; k0 += kPre) {
    float loc[kPre], sd[kPre];
#pragma unroll
    for (int j = 0; j < kPre; ++j) {
      const int64_t k = k0 + j;
      if (k < nk - 1) {
        loc[j] = p.ws_state[((s0 + k) * p.dim + d) * N + n];
        sd[j] = p.ws_sd[(s0 + k) * p.dim + d];
      }
    }
#pragma unroll
    for (int j = 0; j < kPre; ++j) {
      const int64_t k = k0 + j;
      if (k < nk) p.ws_state[((s0 + k) * p.dim + d) * N + n] = h;  // start of chunk k (same slot as loaded)
      if (k < nk - 1) h = decay(scale_dt(sd[j]), a) * h + loc[j];
    }
  }
}

// The forward's output gate σ(z) = 1 / (1 + e^-z) with the MUFU approximations (ex2.approx of
// -z·log2 e, rcp.approx; ~3e-7 relative, z -> ±inf give 0 and 1) in 4 instructions instead of the
// ~20 of detail::sigmoid_f (IEEE expf and division). Defining MAMBATRACK_SCAN_PRECISE_GATE
// restores detail::sigmoid_f. The earlier backward kernels keep detail::sigmoid_f; the tiled
// backward uses this one for σ(z) and the softplus derivative σ(Δ + bias).
__device__ __forceinline__ float gate_sigmoid(float z) {
#ifdef MAMBATRACK_SCAN_PRECISE_GATE
  return detail::sigmoid_f(z);
#else
  float e;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(z * -1.4426950408889634f));
  return __fdividef(1.0f, 1.0f + e);
#endif
}

// prefetch.global.L2: brings the line holding q into L2, no register, no wait.
template <class T>
__device__ __forceinline__ void prefetch_l2(const T* q) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(q));
}

// B and C rows of tokens [t0, t0 + L) (L <= stage_tokens<N>()) of group g into sB, sC as floats,
// every thread of the block loading: 16-byte loads where the rows allow (vec_bc and N·sizeof(T) a
// multiple of 16), several in flight per thread. The caller synchronises before and after.
template <class T, int N>
__device__ __forceinline__ void stage_tile(const Params<T>& p, int64_t t0, int L, int64_t g, float* sB, float* sC) {
  constexpr int kPer = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte piece
  if constexpr (N % kPer == 0) {
    if (p.vec_bc) {
      constexpr int kPieces = N / kPer;
      const int total = L * kPieces;
#pragma unroll 2
      for (int e = threadIdx.x; e < total; e += blockDim.x) {
        const int tok = e / kPieces, pc = e % kPieces;
        const int64_t row = ((t0 + tok) * p.ngroups + g) * N + pc * kPer;
        float fb[kPer], fc[kPer];
        detail::load_row<T, kPer>(p.B + row, true, fb);
        detail::load_row<T, kPer>(p.C + row, true, fc);
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
          sB[tok * N + pc * kPer + i] = fb[i];
          sC[tok * N + pc * kPer + i] = fc[i];
        }
      }
      return;
    }
  }
#pragma unroll 2
  for (int e = threadIdx.x; e < L * N; e += blockDim.x) {
    const int64_t src = ((t0 + e / N) * p.ngroups + g) * N + e % N;
    sB[e] = detail::ldg(p.B + src);
    sC[e] = detail::ldg(p.C + src);
  }
}

// Tokens [c.t0, c.t1) from the state h (updated in place): writes out. Block-uniform: every
// thread of the block calls it (inactive lanes compute on zeros and store nothing); the B and C
// rows are staged in shared memory tile by tile (stage_tokens<N>() tokens), so a long range reads
// them with a few block-wide 16-byte loads per tile instead of one dependent load (and unpacking)
// per token and thread (and the next tile's Δ, u, z are prefetched into L2; defining
// MAMBATRACK_SCAN_NO_L2_PREFETCH turns that off). kSaveChunks (the sequential path, where the
// range is a whole sequence):
// also saves h at every chunk start of the sequence, in slot `slot0 + k`, as fwd_chunk does for
// one chunk.
template <class T, int N, bool kSaveChunks>
__device__ __forceinline__ void fwd_tokens(const Params<T>& p, const ChunkPos& c, const Lane& l, float* sB, float* sC,
                                           const float (&A)[N], float (&h)[N], int64_t slot0) {
  constexpr int kTile = stage_tokens<N>();
  const int64_t d = l.d;
  const bool active = l.active;
  const float bias = (active && p.delta_bias) ? detail::ld(p.delta_bias, d) : 0.0f;
  const float Dd = (active && p.D) ? detail::ld(p.D, d) : 0.0f;
  float raw;
  int64_t next_save = c.t0, save_slot = slot0;
  Tok<N> cur, nxt;
  if (c.t0 < c.t1) load_tok<T, N, false, true, true>(p, c.t0, d, l.g, active, nxt);
  #pragma unroll 1
  for (int64_t tt = c.t0; tt < c.t1; tt += kTile) {  // block-uniform
    const int L = static_cast<int>(c.t1 - tt < kTile ? c.t1 - tt : kTile);
    __syncthreads();  // the previous tile's reads of sB / sC are done
    stage_tile<T, N>(p, tt, L, l.g, sB, sC);
    __syncthreads();
#ifndef MAMBATRACK_SCAN_NO_L2_PREFETCH
    if (tt + kTile < c.t1) {
      // Long range: the next tile's Δ, u, z rows of this warp's channels (one 64- or 128-byte
      // piece per token: lane k takes tokens k, k + 32, ...) are fetched into L2 while this tile
      // runs, so the per-token loads (issued one token ahead) wait for L2, not DRAM.
      const int lane = static_cast<int>(threadIdx.x % 32);
      if (__shfl_sync(0xffffffffu, active ? 1 : 0, 0)) {  // the warp's first channel exists
        const int64_t d0 = d - lane;
        for (int k = lane; k < kTile; k += 32) {
          const int64_t t = tt + kTile + k;
          if (t < c.t1) {
            prefetch_l2(p.delta + t * p.dim + d0);
            prefetch_l2(p.u + t * p.dim + d0);
            if (p.z) prefetch_l2(p.z + t * p.dim + d0);
          }
        }
      }
    }
#endif
    #pragma unroll 1
    for (int i = 0; i < L; ++i) {
      const int64_t t = tt + i;
      if constexpr (kSaveChunks) {
        if (t == next_save) {
          if (p.saved && active) {
#pragma unroll
            for (int n = 0; n < N; ++n) store(p.saved, (save_slot * p.dim + d) * N + n, h[n]);
          }
          next_save += p.save_chunk;
          ++save_slot;
        }
      }
      cur = nxt;
      if (t + 1 < c.t1) load_tok<T, N, false, true, true>(p, t + 1, d, l.g, active, nxt);
      const float* rowB = sB + i * N;  // read in the state loops: no B/C copies live in registers
      const float* rowC = sC + i * N;
      const float dt = dt_of(p, cur.delta, bias, raw);
      fwd_step<N>(h, A, rowB, dt, dt * cur.u);
      float y = Dd * cur.u;
#pragma unroll
      for (int n = 0; n < N; ++n) y += rowC[n] * h[n];
      if (p.z) y *= cur.z * gate_sigmoid(cur.z);
      if (active) store(p.out, t * p.dim + d, y);
    }
  }
}

// ---- Tiled forward (ScanImpl::kTiled) ---------------------------------------------------------
// fwd_tokens with the per-token work of a thread's channel done kFwdSub tokens at a time, fully
// unrolled: the Δ, u, z values of the next kFwdSub tokens are loaded (3·kFwdSub independent
// loads) before this group's state updates run, their softplus / Δu / gate computed in one
// batch, and the state updates, the C·h sums (4 partial sums) and the output stores of the group
// run with constant shared-memory offsets and no per-token loop overhead. The same recurrence
// (fwd_step's expression) as the other kernels; y is summed in a different order (rounding only).
constexpr int kFwdSub = 8;

// softplus for the tiled kernels: max(x, 0) + log1p(e^-|x|) with e^-|x| from one MUFU ex2 and
// log1p(e) = 2·atanh(e / (2 + e)) by its odd series to the s^13 term (|s| <= 1/3: truncation
// below 1e-8 relative), ~15 instructions instead of the ~45 of log1pf(expf(x)); a few ulp of
// relative error. x > 20 gives x as softplus_f does. Defining MAMBATRACK_SCAN_PRECISE_SOFTPLUS
// restores detail::softplus_f (bisection).
__device__ __forceinline__ float softplus_tiled(float x) {
#ifdef MAMBATRACK_SCAN_PRECISE_SOFTPLUS
  return detail::softplus_f(x);
#else
  if (x > 20.0f) return x;
  const float e = decay(scale_dt(-fabsf(x)), 1.0f);  // e^-|x|
  const float q = __fdividef(e, 2.0f + e), q2 = q * q;
  float r = 1.0f / 13.0f;
  r = r * q2 + 1.0f / 11.0f;
  r = r * q2 + 1.0f / 9.0f;
  r = r * q2 + 1.0f / 7.0f;
  r = r * q2 + 1.0f / 5.0f;
  r = r * q2 + 1.0f / 3.0f;
  r = r * q2 + 1.0f;
  return fmaxf(x, 0.0f) + 2.0f * q * r;
#endif
}
template <class T>
__device__ __forceinline__ float dt_of_tiled(const Params<T>& p, float delta, float bias, float& raw) {
  raw = delta + bias;
  return p.softplus ? softplus_tiled(raw) : raw;
}

template <int N>
constexpr int fwd_tiled_min_blocks() {
  return N <= 16 ? 8 : 1;
}
// kLocal: fwd_local's pass (the state from h and ΣΔ into sd only: no C, z, outputs or saves).
template <class T, int N, bool kSaveChunks, bool kLocal = false>
__device__ __forceinline__ void fwd_tokens_tiled(const Params<T>& p, const ChunkPos& c, const Lane& l, float* sB,
                                                 float* sC, const float (&A)[N], float (&h)[N], int64_t slot0,
                                                 float* sd = nullptr) {
  constexpr int kU = kFwdSub;
  constexpr int kTile = stage_tokens<N>() / kU * kU;  // whole token groups per staging tile
  static_assert(kTile >= kU, "the staging tile must hold a token group");
  const int64_t d = l.d;
  const bool active = l.active, has_z = !kLocal && p.z != nullptr;
  float sum_dt = 0.0f;
  const float bias = (active && p.delta_bias) ? detail::ld(p.delta_bias, d) : 0.0f;
  const float Dd = (active && p.D) ? detail::ld(p.D, d) : 0.0f;
  int64_t next_save = c.t0, save_slot = slot0;
  // Inactive lanes load the group's first channel (valid memory) and store nothing: no per-load
  // predicate on whole groups.
  const int64_t dl = active ? d : l.g * p.per_group;
  float rd[kU], ru[kU], rz[kU];  // raw Δ, u, z of the next token group (zeros past the range)
  const auto load_group = [&](int64_t t) {
    const int64_t o = t * p.dim + dl;
    if (t + kU <= c.t1) {  // uniform
#pragma unroll
      for (int j = 0; j < kU; ++j) {
        const int64_t i = o + j * p.dim;
        rd[j] = detail::ldg(p.delta + i);
        ru[j] = detail::ldg(p.u + i);
        rz[j] = has_z ? detail::ldg(p.z + i) : 0.0f;
      }
    } else {
#pragma unroll
      for (int j = 0; j < kU; ++j) {
        const bool ok = t + j < c.t1;
        const int64_t i = o + j * p.dim;
        rd[j] = ok ? detail::ldg(p.delta + i) : 0.0f;
        ru[j] = ok ? detail::ldg(p.u + i) : 0.0f;
        rz[j] = (ok && has_z) ? detail::ldg(p.z + i) : 0.0f;
      }
    }
  };
  load_group(c.t0);
  #pragma unroll 1
  for (int64_t tt = c.t0; tt < c.t1; tt += kTile) {  // block-uniform
    const int L = static_cast<int>(c.t1 - tt < kTile ? c.t1 - tt : kTile);
    __syncthreads();  // the previous tile's reads of sB / sC are done
    if constexpr (kLocal) {
      for (int e = static_cast<int>(threadIdx.x); e < L * N; e += static_cast<int>(blockDim.x))
        sB[e] = detail::ldg(p.B + ((tt + e / N) * p.ngroups + l.g) * N + e % N);
    } else {
      stage_tile<T, N>(p, tt, L, l.g, sB, sC);
    }
    __syncthreads();
#ifndef MAMBATRACK_SCAN_NO_L2_PREFETCH
    if (tt + kTile < c.t1) {  // the next tile's Δ, u, z rows of this warp's channels into L2
      const int lane = static_cast<int>(threadIdx.x % 32);
      if (__shfl_sync(0xffffffffu, active ? 1 : 0, 0)) {
        const int64_t d0 = d - lane;
        for (int k = lane; k < kTile; k += 32) {
          const int64_t t = tt + kTile + k;
          if (t < c.t1) {
            prefetch_l2(p.delta + t * p.dim + d0);
            prefetch_l2(p.u + t * p.dim + d0);
            if (has_z) prefetch_l2(p.z + t * p.dim + d0);
          }
        }
      }
    }
#endif
    #pragma unroll 1
    for (int i0 = 0; i0 < L; i0 += kU) {
      float s[kU], x[kU], yd[kU], gz[kU];
#pragma unroll
      for (int j = 0; j < kU; ++j) {
        float raw;
        const float dt = dt_of_tiled(p, rd[j], bias, raw);
        s[j] = scale_dt(dt);
        x[j] = dt * ru[j];
        if constexpr (kLocal) {
          if (j < L - i0) sum_dt += dt;  // tokens of the range only, in order
          yd[j] = gz[j] = 0.0f;
        } else {
          yd[j] = Dd * ru[j];
          gz[j] = has_z ? rz[j] * gate_sigmoid(rz[j]) : 1.0f;
        }
      }
      load_group(tt + i0 + kU);  // in flight during this group's state updates
      const int n_here = L - i0 < kU ? L - i0 : kU;
      const auto token = [&](int j) {
          const int64_t t = tt + i0 + j;
          if constexpr (kSaveChunks) {
            if (t == next_save) {
              if (p.saved && active) save_state<scan_state_t<T>, N>(p.saved, save_slot, p.dim, d, h);
              next_save += p.save_chunk;
              ++save_slot;
            }
          }
          const float* rowB = sB + (i0 + j) * N;
#pragma unroll
          for (int n = 0; n < N; ++n) h[n] = decay(s[j], A[n]) * h[n] + rowB[n] * x[j];
          if constexpr (kLocal) return;
          const float* rowC = sC + (i0 + j) * N;
          float y4[4] = {yd[j], 0.0f, 0.0f, 0.0f};
#pragma unroll
          for (int n = 0; n < N; ++n) y4[n % 4] += rowC[n] * h[n];
          float y = (y4[0] + y4[1]) + (y4[2] + y4[3]);
          if (has_z) y *= gz[j];
          if (active) store(p.out, t * p.dim + d, y);
      };
      if (n_here == kU) {  // uniform: a whole group, no per-token guard
#pragma unroll
        for (int j = 0; j < kU; ++j) token(j);
      } else {
#pragma unroll
        for (int j = 0; j < kU; ++j)
          if (j < n_here) token(j);
      }
    }
  }
  if constexpr (kLocal) *sd = sum_dt;
}

template <class T, int N, bool kTiled>
__device__ void fwd_local_tiled(const Params<T>& p, const ChunkPos& c, int64_t slot) {
  const Lane l = lane_of(p);
  __shared__ __align__(16) float sB[stage_tokens<N>() * N];
  float A[N], h[N];
#pragma unroll
  for (int n = 0; n < N; ++n) {
    A[n] = l.active ? detail::ld(p.A, l.d * N + n) : 0.0f;
    h[n] = 0.0f;
  }
  float sd = 0.0f;
  fwd_tokens_tiled<T, N, false, true>(p, c, l, sB, nullptr, A, h, slot, &sd);
  if (!l.active) return;
#pragma unroll
  for (int n = 0; n < N; ++n) p.ws_state[(slot * p.dim + l.d) * N + n] = h[n];
  p.ws_sd[slot * p.dim + l.d] = sd;
}

// Which implementation the forward and backward use: kAuto = kTiled, unless MAMBATRACK_SCAN_LEGACY
// is defined (then the earlier per-token kernels). The tiled forward covers d_state <= 32, the
// tiled backward d_state 16 and 32 with chunks of up to kTiledMaxChunk tokens; other cases take
// the earlier kernels either way. The local passes of the chunked path (fwd_local, bwd_local) and
// the combines are the earlier kernels in both.
enum class ScanImpl { kAuto, kLegacy, kTiled };
inline ScanImpl& scan_impl_override() {
  static ScanImpl impl = ScanImpl::kAuto;
  return impl;
}
// The tiled forward covers d_state <= 32 (larger states: the earlier kernels, whose registers
// already hold 2·d_state floats).
template <int N>
constexpr bool tiled_fwd_supported() {
  return N <= 32;
}
inline bool tiled_impl() {
  switch (scan_impl_override()) {
    case ScanImpl::kLegacy: return false;
    case ScanImpl::kTiled: return true;
    case ScanImpl::kAuto: break;
  }
#ifdef MAMBATRACK_SCAN_LEGACY
  return false;
#else
  return true;
#endif
}


// Forward pass 3: each chunk from its start state; writes out, saved_states and final_state.
// kGroup (grouped_params: p.chunk a multiple of p.save_chunk): saves the state at every saved
// chunk start of the pass chunk, as fwd_seq does for a whole sequence.
template <class T, int N, bool kTiled = false, bool kGroup = false>
__global__ void __launch_bounds__(kThreads, kTiled ? fwd_tiled_min_blocks<N>() : fwd_min_blocks<N>())
    fwd_chunk(Params<T> p) {
  const int64_t slot = blockIdx.x;
  ChunkPos c;
  if (!chunk_pos(p, slot, c)) return;  // block-uniform
  const Lane l = lane_of(p);
  __shared__ __align__(16) float sB[stage_tokens<N>() * N];
  __shared__ __align__(16) float sC[stage_tokens<N>() * N];
  const int64_t d = l.d;
  float A[N], h[N];
#pragma unroll
  for (int n = 0; n < N; ++n) {
    A[n] = l.active ? detail::ld(p.A, d * N + n) : 0.0f;
    if (!l.active) h[n] = 0.0f;
    else if (c.k == 0) h[n] = p.init ? detail::ld(p.init, (c.b * p.dim + d) * N + n) : 0.0f;
    else h[n] = p.ws_state[(slot * p.dim + d) * N + n];
    if (!kTiled && !kGroup && p.saved && l.active) store(p.saved, (slot * p.dim + d) * N + n, h[n]);
  }
  if (kTiled && !kGroup && p.saved && l.active) save_state<scan_state_t<T>, N>(p.saved, slot, p.dim, d, h);
  // kGroup: the saved slot of the pass chunk's first saved chunk (selective_scan_slot at save_chunk).
  const int64_t slot0 = kGroup ? c.b + c.start / p.save_chunk + (c.t0 - c.start) / p.save_chunk : slot;
  if constexpr (kTiled) fwd_tokens_tiled<T, N, kGroup>(p, c, l, sB, sC, A, h, slot0);
  else fwd_tokens<T, N, kGroup>(p, c, l, sB, sC, A, h, slot0);
  if (l.active && c.k == c.nk - 1 && p.final_state) {
#pragma unroll
    for (int n = 0; n < N; ++n) store(p.final_state, (c.b * p.dim + d) * N + n, h[n]);
  }
}

// The whole sequence c.b as one range (block-uniform). False for impossible cu_seqlens ranges,
// which are skipped as map_slots skips them.
template <class T>
__device__ __forceinline__ bool seq_pos(const Params<T>& p, int64_t b, ChunkPos& c) {
  c.b = b;
  c.k = 0;
  c.start = p.cu[b];
  c.end = p.cu[b + 1];
  if (c.start < 0 || c.end < c.start || c.end > p.tokens) return false;
  c.t0 = c.start;
  c.t1 = c.end;
  c.nk = (c.end - c.start + p.chunk - 1) / p.chunk;
  return true;
}

// Sequential forward, one block per (sequence, channel block): the whole sequence from its
// initial state in one pass (no fwd_local / fwd_combine), saving the state at every chunk start
// in the same slots as the chunked path. Used when every sequence fits in one chunk (then each
// block does exactly what fwd_chunk does for chunk 0, bit for bit); correct for any length.
template <class T, int N, bool kTiled = false>
__global__ void __launch_bounds__(kThreads, kTiled ? fwd_tiled_min_blocks<N>() : fwd_min_blocks<N>())
    fwd_seq(Params<T> p) {
  const int64_t b = blockIdx.x;
  ChunkPos c;
  if (!seq_pos(p, b, c)) return;
  const Lane l = lane_of(p);
  __shared__ __align__(16) float sB[stage_tokens<N>() * N];
  __shared__ __align__(16) float sC[stage_tokens<N>() * N];
  const int64_t d = l.d;
  float A[N], h[N];
#pragma unroll
  for (int n = 0; n < N; ++n) {
    A[n] = l.active ? detail::ld(p.A, d * N + n) : 0.0f;
    h[n] = (l.active && p.init) ? detail::ld(p.init, (b * p.dim + d) * N + n) : 0.0f;
  }
  if constexpr (kTiled) fwd_tokens_tiled<T, N, true>(p, c, l, sB, sC, A, h, selective_scan_slot_d(b, c.start, p.chunk));
  else fwd_tokens<T, N, true>(p, c, l, sB, sC, A, h, selective_scan_slot_d(b, c.start, p.chunk));
  if (l.active && p.final_state) {  // empty sequences: the initial state (or zeros)
#pragma unroll
    for (int n = 0; n < N; ++n) store(p.final_state, (b * p.dim + d) * N + n, h[n]);
  }
}

// Backward pass 1 (chunks k >= 1): the adjoint at the chunk start from a zero adjoint at its end,
// g = (g + dy·C)·exp(Δ·A) in reverse, and ΣΔ. B/C rows staged in shared memory as in fwd_local.
template <class T, int N>
__global__ void __launch_bounds__(kThreads) bwd_local(Params<T> p) {
  const int64_t slot = blockIdx.x;
  ChunkPos c;
  if (!chunk_pos(p, slot, c) || c.k == 0) return;
  const Lane l = lane_of(p);
  __shared__ float sB[stage_tokens<N>() * N];
  __shared__ float sC[stage_tokens<N>() * N];
  const bool staged = stage_rows<T, N>(p, c, l.g, sB, sC);
  if (!l.active) return;
  float A[N], g[N];
#pragma unroll
  for (int n = 0; n < N; ++n) {
    A[n] = detail::ld(p.A, l.d * N + n);
    g[n] = 0.0f;
  }
  const float bias = p.delta_bias ? detail::ld(p.delta_bias, l.d) : 0.0f;
  float sd = 0.0f, raw;
  Tok<N> cur, nxt;
  load_tok<T, N, true, true, true>(p, c.t1 - 1, l.d, l.g, true, nxt);
  #pragma unroll 1
  for (int64_t t = c.t1 - 1; t >= c.t0; --t) {
    cur = nxt;
    get_rows<T, N, true>(p, t, l.g, c, staged, sB, sC, cur);
    if (t - 1 >= c.t0) load_tok<T, N, true, true, true>(p, t - 1, l.d, l.g, true, nxt);
    const float dt = dt_of(p, cur.delta, bias, raw);
    sd += dt;
    const float dy = p.z ? cur.dout * cur.z * detail::sigmoid_f(cur.z) : cur.dout;
    const float s = scale_dt(dt);
#pragma unroll
    for (int n = 0; n < N; ++n) g[n] = (g[n] + dy * cur.C[n]) * decay(s, A[n]);
  }
#pragma unroll
  for (int n = 0; n < N; ++n) p.ws_state[(slot * p.dim + l.d) * N + n] = g[n];
  p.ws_sd[slot * p.dim + l.d] = sd;
}

// Backward pass 2, one thread per (sequence, channel, state): the adjoint entering each chunk's
// end, in reverse chunk order, written over the local adjoints in ws_state.
template <class T, int N>
__global__ void bwd_combine(Params<T> p) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= p.batch * p.dim * N) return;
  const uint32_t i32 = static_cast<uint32_t>(i), dim32 = static_cast<uint32_t>(p.dim);  // < 2^31 (host check)
  const int64_t n = i32 % N, d = (i32 / N) % dim32, b = i32 / (N * dim32);
  const int64_t start = p.cu[b], end = p.cu[b + 1];
  float g = p.dfinal ? detail::ld(p.dfinal, (b * p.dim + d) * N + n) : 0.0f;
  if (end <= start) {
    if (p.dinit) store(p.dinit, (b * p.dim + d) * N + n, g);
    return;
  }
  const float a = detail::ld(p.A, d * N + n);
  const int64_t nk = (end - start + p.chunk - 1) / p.chunk, s0 = b + start / p.chunk;
  constexpr int kPre = 16;
  for (int64_t k0 = nk - 1; k0 >= 0; k0 -= kPre) {
    float loc[kPre], sd[kPre];
#pragma unroll
    for (int j = 0; j < kPre; ++j) {
      const int64_t k = k0 - j;
      if (k >= 1) {
        loc[j] = p.ws_state[((s0 + k) * p.dim + d) * N + n];
        sd[j] = p.ws_sd[(s0 + k) * p.dim + d];
      }
    }
#pragma unroll
    for (int j = 0; j < kPre; ++j) {
      const int64_t k = k0 - j;
      if (k >= 0) {
        p.ws_state[((s0 + k) * p.dim + d) * N + n] = g;  // adjoint at the end of chunk k
        if (k >= 1) g = decay(scale_dt(sd[j]), a) * g + loc[j];
      }
    }
  }
}

// Sums V (a multiple of 32) values over the warp's lanes with V - 1 shuffles; afterwards lane L
// holds the sums of values L·(V/32) + i, i < V/32, in v[0 .. V/32). Fixed order.
template <int O, int Cnt, int V>
__device__ __forceinline__ void transpose_sum_step(float (&v)[V], int lane) {
  const bool upper = (lane & O) != 0;
#pragma unroll
  for (int i = 0; i < Cnt / 2; ++i) {
    const float send = upper ? v[i] : v[i + Cnt / 2];
    const float keep = upper ? v[i + Cnt / 2] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
  }
  if constexpr (O > 1) transpose_sum_step<O / 2, Cnt / 2, V>(v, lane);
}
template <int V>
__device__ __forceinline__ void warp_transpose_sum(float (&v)[V], int lane) {
  static_assert(V % 32 == 0, "V must be a multiple of 32");
  transpose_sum_step<16, V, V>(v, lane);
}

// Segment seg of nseg (kSeg tokens each) of chunk c: [ss, se). The partial segment (when the
// chunk length is not a multiple of kSeg) comes first, so the recomputation from the chunk start
// (se - c.t0 forward steps per segment) is as short as it can be: 12 tokens in segments of 8 cost
// 4 + 12 forward steps instead of 8 + 12. MAMBATRACK_SCAN_PARTIAL_SEGMENT_LAST restores the old
// order (bisection). Only the grouping of tokens changes, not any value.
template <int kSeg>
__device__ __forceinline__ void segment_bounds(const ChunkPos& c, int64_t nseg, int64_t seg, int64_t& ss, int64_t& se) {
#ifdef MAMBATRACK_SCAN_PARTIAL_SEGMENT_LAST
  (void)nseg;
  ss = c.t0 + seg * kSeg;
  se = ss + kSeg < c.t1 ? ss + kSeg : c.t1;
#else
  const int64_t first = (c.t1 - c.t0) - (nseg - 1) * kSeg;  // 1 .. kSeg tokens
  ss = seg == 0 ? c.t0 : c.t0 + first + (seg - 1) * kSeg;
  se = c.t0 + first + seg * kSeg;
#endif
}

// The reverse pass over one chunk c (block-uniform; every thread of the block calls it, inactive
// lanes with zeros): recompute the states from the chunk-start state h0 (a segment of kSeg tokens
// at a time kept in shared memory, walking the segments in reverse), then the reverse recurrence
// from the adjoint g at the chunk end (updated in place to the adjoint at the chunk start).
// Writes du, ddelta, dz and the dB/dC partials; accumulates dA, dD, ddelta_bias in registers.
template <class T, int N>
__device__ __forceinline__ void bwd_tokens(const Params<T>& p, const ChunkPos& c, const Lane& l, bool staged,
                                           const float* sB, const float* sC, float* smem, const float (&A)[N],
                                           const float (&h0)[N], float bias, float Dd, float (&g)[N],
                                           float (&dA)[N], float& dD, float& ddb) {
  constexpr int kSeg = seg_len<N>();
  constexpr int kTile = N < 16 ? N : 16;  // states per dB/dC warp reduction
  static_assert(N % kTile == 0, "d_state must be a multiple of the reduction tile");
  const int lane = threadIdx.x % 32;
  const int64_t d = l.d;
  float raw = 0.0f;
  float* hist = smem + threadIdx.x;  // hist[(i·N + n)·kThreads]: state after segment token i - 1
  auto hs = [&](int i, int n) -> float& { return hist[(i * N + n) * kThreads]; };
  const int64_t wpg = 2 * p.bpg;
  const int64_t L = c.t1 - c.t0, nseg = (L + kSeg - 1) / kSeg;
  for (int64_t seg = nseg - 1; seg >= 0; --seg) {
    int64_t ss, se;
    segment_bounds<kSeg>(c, nseg, seg, ss, se);
    float h[N];
#pragma unroll
    for (int n = 0; n < N; ++n) h[n] = h0[n];
    {
      Tok<N> cur, nxt;
      load_tok<T, N, false, false, false>(p, c.t0, d, l.g, l.active, nxt);
      #pragma unroll 1
      for (int64_t t = c.t0; t < se; ++t) {
        cur = nxt;
        get_rows<T, N, false>(p, t, l.g, c, staged, sB, sC, cur);
        if (t + 1 < se) load_tok<T, N, false, false, false>(p, t + 1, d, l.g, l.active, nxt);
        if (t == ss) {
#pragma unroll
          for (int n = 0; n < N; ++n) hs(0, n) = h[n];
        }
        const float dt = l.active ? dt_of(p, cur.delta, bias, raw) : 0.0f;
        fwd_step<N>(h, A, cur.B, dt, dt * cur.u);
        if (t >= ss) {
#pragma unroll
          for (int n = 0; n < N; ++n) hs(static_cast<int>(t - ss) + 1, n) = h[n];
        }
      }
    }
    // h holds the state after token se - 1.
    Tok<N> cur, nxt;
    load_tok<T, N, true, true, true>(p, se - 1, d, l.g, l.active, nxt);
    #pragma unroll 1
    for (int64_t t = se - 1; t >= ss; --t) {
      cur = nxt;
      get_rows<T, N, true>(p, t, l.g, c, staged, sB, sC, cur);
      if (t - 1 >= ss) load_tok<T, N, true, true, true>(p, t - 1, d, l.g, l.active, nxt);
      const int i = static_cast<int>(t - ss);
      const float dt = l.active ? dt_of(p, cur.delta, bias, raw) : 0.0f;
      const float u = cur.u;
      const float s = scale_dt(dt);
      const int64_t o = t * p.dim + d;  // this channel's element of token t (one index for 3 stores)
      float dy = cur.dout, sg = 0.0f;
      if (p.z) {
        sg = detail::sigmoid_f(cur.z);
        dy = cur.dout * cur.z * sg;
        float y = Dd * u;
#pragma unroll
        for (int n = 0; n < N; ++n) y += cur.C[n] * h[n];
        if (l.active) store(p.dz, o, cur.dout * y * sg * (1.0f + cur.z * (1.0f - sg)));
      }
      float du = Dd * dy, ddt = 0.0f;
      dD += dy * u;
      const int64_t bc_row = ((t * p.ngroups + l.g) * wpg + l.warp_in_group) * (2 * N);
#pragma unroll
      for (int n0 = 0; n0 < N; n0 += kTile) {
        float v[32];
#pragma unroll
        for (int j = 0; j < 32; ++j) v[j] = 0.0f;
#pragma unroll
        for (int j = 0; j < kTile; ++j) {
          const int n = n0 + j;
          const float Bn = cur.B[n], Cn = cur.C[n];
          const float hp = hs(i, n);
          const float dec = decay(s, A[n]);
          const float gv = g[n] + dy * Cn;
          const float x = gv * dec * hp;  // ∂L/∂(Δ·A) for this state
          ddt += x * A[n] + gv * Bn * u;
          dA[n] += x * dt;
          du += gv * Bn * dt;
          v[j] = gv * dt * u;        // dB partial
          v[kTile + j] = dy * h[n];  // dC partial
          g[n] = gv * dec;
          h[n] = hp;  // becomes the state after token t - 1
        }
        warp_transpose_sum<32>(v, lane);
        const int idx = lane;  // lane L now holds the warp sum of v[L]
        if (idx < 2 * kTile) {
          const int n = n0 + (idx < kTile ? idx : idx - kTile);
          p.ws_bc[bc_row + (idx < kTile ? 0 : N) + n] = v[0];
        }
      }
      if (p.softplus && raw <= 20.0f) ddt *= detail::sigmoid_f(raw);
      if (l.active) {
        store(p.du, o, du);
        store(p.ddelta, o, ddt);
      }
      ddb += ddt;
    }
  }
}

// Backward pass 3, one block per (slot, channel block): one chunk from the adjoint at its end
// (bwd_combine's) and its saved start state. Writes du, ddelta, dz, dinitial_state and the
// dA/dD/ddelta_bias partials of its slot (row `slot` of ws_par) and the dB/dC partials.
template <class T, int N>
__global__ void __launch_bounds__(kThreads, bwd_min_blocks<N>()) bwd_chunk(Params<T> p) {
  extern __shared__ float smem[];
  constexpr int kSeg = seg_len<N>();
  const int64_t slot = blockIdx.x;
  const Lane l = lane_of(p);
  const int64_t d = l.d;
  const int64_t W = p.dim * N + 2 * p.dim;
  ChunkPos c;
  if (!chunk_pos(p, slot, c)) {  // unused slot: zero partials (uniform over the block)
    if (l.active) {
      for (int n = 0; n < N; ++n) p.ws_par[slot * W + d * N + n] = 0.0f;
      p.ws_par[slot * W + p.dim * N + d] = 0.0f;
      p.ws_par[slot * W + p.dim * N + p.dim + d] = 0.0f;
    }
    return;
  }
  float A[N], g[N], h0[N], dA[N];
#pragma unroll
  for (int n = 0; n < N; ++n) {
    A[n] = l.active ? detail::ld(p.A, d * N + n) : 0.0f;
    g[n] = l.active ? p.ws_state[(slot * p.dim + d) * N + n] : 0.0f;
    h0[n] = l.active ? detail::ld(p.saved_in, (slot * p.dim + d) * N + n) : 0.0f;
    dA[n] = 0.0f;
  }
  const float bias = (l.active && p.delta_bias) ? detail::ld(p.delta_bias, d) : 0.0f;
  const float Dd = (l.active && p.D) ? detail::ld(p.D, d) : 0.0f;
  float dD = 0.0f, ddb = 0.0f;
  float* sB = smem + (kSeg + 1) * N * kThreads;
  float* sC = sB + stage_tokens<N>() * N;
  const bool staged = stage_rows<T, N>(p, c, l.g, sB, sC);
  bwd_tokens<T, N>(p, c, l, staged, sB, sC, smem, A, h0, bias, Dd, g, dA, dD, ddb);
  if (!l.active) return;
  if (c.k == 0 && p.dinit) {
#pragma unroll
    for (int n = 0; n < N; ++n) store(p.dinit, (c.b * p.dim + d) * N + n, g[n]);
  }
#pragma unroll
  for (int n = 0; n < N; ++n) p.ws_par[slot * W + d * N + n] = dA[n];
  p.ws_par[slot * W + p.dim * N + d] = dD;
  p.ws_par[slot * W + p.dim * N + p.dim + d] = ddb;
}

// Sequential backward: each block (a fixed set of sequences b = blockIdx.x + j·gridDim.x, in
// order, for its channel block) walks every sequence's chunks in reverse, carrying the adjoint
// from chunk to chunk in registers (no bwd_local / bwd_combine, no slot map), and writes one
// dA/dD/ddelta_bias partial row per block (row blockIdx.x of ws_par) instead of one per slot.
// With every sequence in one chunk each chunk is exactly bwd_chunk's; correct for any length.
template <class T, int N>
__global__ void __launch_bounds__(kThreads, bwd_min_blocks<N>()) bwd_seq(Params<T> p) {
  extern __shared__ float smem[];
  constexpr int kSeg = seg_len<N>();
  const Lane l = lane_of(p);
  const int64_t d = l.d;
  const int64_t W = p.dim * N + 2 * p.dim;
  float A[N], dA[N];
#pragma unroll
  for (int n = 0; n < N; ++n) {
    A[n] = l.active ? detail::ld(p.A, d * N + n) : 0.0f;
    dA[n] = 0.0f;
  }
  const float bias = (l.active && p.delta_bias) ? detail::ld(p.delta_bias, d) : 0.0f;
  const float Dd = (l.active && p.D) ? detail::ld(p.D, d) : 0.0f;
  float dD = 0.0f, ddb = 0.0f;
  float* sB = smem + (kSeg + 1) * N * kThreads;
  float* sC = sB + stage_tokens<N>() * N;
  for (int64_t b = blockIdx.x; b < p.batch; b += gridDim.x) {
    float g[N];
#pragma unroll
    for (int n = 0; n < N; ++n) g[n] = (l.active && p.dfinal) ? detail::ld(p.dfinal, (b * p.dim + d) * N + n) : 0.0f;
    ChunkPos c;
    if (seq_pos(p, b, c)) {  // block-uniform
      const int64_t slot0 = selective_scan_slot_d(b, c.start, p.chunk);
      for (int64_t k = c.nk - 1; k >= 0; --k) {
        c.k = k;
        c.t0 = c.start + k * p.chunk;
        c.t1 = c.t0 + p.chunk < c.end ? c.t0 + p.chunk : c.end;
        float h0[N];
#pragma unroll
        for (int n = 0; n < N; ++n)
          h0[n] = l.active ? detail::ld(p.saved_in, ((slot0 + k) * p.dim + d) * N + n) : 0.0f;
        __syncthreads();  // the previous chunk's reads of sB / sC are done
        const bool staged = stage_rows<T, N>(p, c, l.g, sB, sC);
        bwd_tokens<T, N>(p, c, l, staged, sB, sC, smem, A, h0, bias, Dd, g, dA, dD, ddb);
      }
    }
    if (l.active && p.dinit) {  // the adjoint at the sequence start (dfinal for empty sequences)
#pragma unroll
      for (int n = 0; n < N; ++n) store(p.dinit, (b * p.dim + d) * N + n, g[n]);
    }
  }
  if (!l.active) return;
  const int64_t row = blockIdx.x;
#pragma unroll
  for (int n = 0; n < N; ++n) p.ws_par[row * W + d * N + n] = dA[n];
  p.ws_par[row * W + p.dim * N + d] = dD;
  p.ws_par[row * W + p.dim * N + p.dim + d] = ddb;
}

// ---- Backward with d_state split over lanes ------------------------------------------------
// S lanes per channel (adjacent in the warp), each holding N/S consecutive states: the same
// shared-memory state history as bwd_chunk (so the same blocks per SM by shared memory) but S
// times the threads, each with N/S states live, so ~S× the resident warps to hide the latency of
// the exponentials, shuffles and loads. Per-channel sums (y for dz, du, ddelta) are butterfly
// sums over the S lanes (identical bits on every lane: float addition commutes); the dB/dC sums
// over the warp's channels are transposing shuffle sums, then over the block's warps in shared
// memory (fixed order), so ws_bc holds one partial row per block instead of one per warp.
template <int N>
constexpr int split_lanes() {
  return (N == 16 || N == 32) ? 4 : 1;
}
template <int N, int S>
constexpr std::size_t bwd_split_smem_bytes() {
  return bwd_smem_bytes<N>() + static_cast<std::size_t>(seg_len<N>()) * (kThreads * S / 32) * 2 * N * sizeof(float);
}
template <int N>
constexpr int bwd_split_min_blocks() {
  return N <= 16 ? 4 : 3;
}

// Which backward kernel the chunked and the sequential path use (tests and bisection may force
// the per-channel one): kAuto = the split kernel where split_lanes<N>() > 1.
enum class BwdKernel { kAuto, kPerChannel, kSplit };
inline BwdKernel& bwd_kernel_override() {
  static BwdKernel kernel = BwdKernel::kAuto;
  return kernel;
}
template <int N>
bool use_split_bwd() {
  if constexpr (split_lanes<N>() == 1) {
    return false;
  } else {
    return bwd_kernel_override() != BwdKernel::kPerChannel;
  }
}

// The tiled backward (bwd_tiled) for this d_state and chunk (it replaces the split kernels).
template <int N>
bool use_tiled_bwd(int64_t chunk);
// This thread's channel and state lane for the split kernels (block = kThreads channels × S).
template <int S, class T>
__device__ __forceinline__ Lane lane_of_split(const Params<T>& p) {
  Lane l;
  const uint32_t bpg = static_cast<uint32_t>(p.bpg);
  l.g = blockIdx.y / bpg;
  const int64_t local = (blockIdx.y % bpg) * kThreads + threadIdx.x / S;
  l.d = l.g * p.per_group + local;
  l.active = local < p.per_group;
  l.warp_in_group = 0;  // unused: dB/dC partials are per block
  return l;
}

// Like warp_transpose_sum, over the lane bits O, O/2, ..., Stop only (the lanes of one state lane
// sub = lane % Stop): afterwards lane L holds in v[0 .. R) the sums over those lanes of values
// (L / Stop)·R + r, R = V·Stop / 32.
template <int O, int Stop, int Cnt, int V>
__device__ __forceinline__ void transpose_sum_to(float (&v)[V], int lane) {
  static_assert(Cnt >= 2, "too few values for the lanes");
  const bool upper = (lane & O) != 0;
#pragma unroll
  for (int i = 0; i < Cnt / 2; ++i) {
    const float send = upper ? v[i] : v[i + Cnt / 2];
    const float keep = upper ? v[i + Cnt / 2] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
  }
  if constexpr (O / 2 >= Stop) transpose_sum_to<O / 2, Stop, Cnt / 2, V>(v, lane);
}
// Sum over the S lanes of one channel; every one of them gets the same bits.
template <int S>
__device__ __forceinline__ float lanes_sum(float x) {
#pragma unroll
  for (int o = 1; o < S; o <<= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// States [n0, n0 + NS) of the B (and C) row of token t.
template <class T, int N, int NS, bool kC>
__device__ __forceinline__ void get_rows_s(const Params<T>& p, int64_t t, int64_t g, int n0, const ChunkPos& c,
                                           bool staged, const float* sB, const float* sC, float (&Bv)[NS],
                                           float (&Cv)[NS]) {
  if (staged) {
    const int64_t o = (t - c.t0) * N + n0;
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      Bv[j] = sB[o + j];
      if constexpr (kC) Cv[j] = sC[o + j];
    }
  } else {
    const int64_t row = (t * p.ngroups + g) * N + n0;
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      Bv[j] = detail::ldg(p.B + row + j);
      if constexpr (kC) Cv[j] = detail::ldg(p.C + row + j);
    }
  }
}

// bwd_tokens with d_state split over S lanes: this lane's states are [sub·N/S, (sub+1)·N/S).
// Every thread of the block calls it (it synchronises after every segment). sbc: kSeg tokens ×
// warps × 2N floats of shared memory for the dB/dC warp sums.
template <class T, int N, int S>
__device__ __forceinline__ void bwd_tokens_split(const Params<T>& p, const ChunkPos& c, const Lane& l, int sub,
                                                 bool staged, const float* sB, const float* sC, float* smem,
                                                 float* sbc, const float (&A)[N / S], const float (&h0)[N / S],
                                                 float bias, float Dd, float (&g)[N / S], float (&dA)[N / S],
                                                 float& dD, float& ddb) {
  constexpr int NS = N / S, kSeg = seg_len<N>(), kBlock = kThreads * S, kWarps = kBlock / 32, R = N / 16;
  static_assert(N % 16 == 0 && S >= 2 && 32 % S == 0 && N % S == 0, "unsupported d_state split");
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t d = l.d;
  const int n0 = sub * NS;
  const int64_t block_in_group = blockIdx.y % static_cast<uint32_t>(p.bpg);
  // hist[(i·kBlock + thread)·NS + j]: state j after segment token i - 1, each thread's NS states
  // contiguous so that they move with 16-byte shared-memory accesses: a quarter of the
  // instructions; at NS = 4 also the same 4 wavefronts per warp as the NS scalar accesses of a
  // strided layout (at NS = 8, 16 instead of 8: far below the issue time of a token).
  float* hist = smem + threadIdx.x * NS;
  auto save_h = [&](int i, const float(&hv)[NS]) {
    float* r = hist + i * kBlock * NS;
    if constexpr (NS % 4 == 0) {
#pragma unroll
      for (int q = 0; q < NS / 4; ++q)
        reinterpret_cast<float4*>(r)[q] = make_float4(hv[4 * q], hv[4 * q + 1], hv[4 * q + 2], hv[4 * q + 3]);
    } else {
#pragma unroll
      for (int j = 0; j < NS; ++j) r[j] = hv[j];
    }
  };
  auto load_h = [&](int i, float(&hv)[NS]) {
    const float* r = hist + i * kBlock * NS;
    if constexpr (NS % 4 == 0) {
#pragma unroll
      for (int q = 0; q < NS / 4; ++q) {
        const float4 w = reinterpret_cast<const float4*>(r)[q];
        hv[4 * q] = w.x;
        hv[4 * q + 1] = w.y;
        hv[4 * q + 2] = w.z;
        hv[4 * q + 3] = w.w;
      }
    } else {
#pragma unroll
      for (int j = 0; j < NS; ++j) hv[j] = r[j];
    }
  };
  const int64_t L = c.t1 - c.t0, nseg = (L + kSeg - 1) / kSeg;
  for (int64_t seg = nseg - 1; seg >= 0; --seg) {
    int64_t ss, se;
    segment_bounds<kSeg>(c, nseg, seg, ss, se);
    float h[NS], Bv[NS], Cv[NS];
#pragma unroll
    for (int j = 0; j < NS; ++j) h[j] = h0[j];
    // The per-channel scalars of a token (Δ and its softplus, u; in the reverse pass also dy, the
    // dz factor and the softplus derivative) are computed once per channel: lane sub of the
    // channel owns every S-th token from the start of the pass (sub, S + sub, ...), computes
    // them one group of S tokens ahead of their use, and the S lanes read them with shuffles.
    const int base_lane = lane & ~(S - 1);
    {
      float nd = 0.0f, nu = 0.0f;  // raw inputs of this lane's next owned token (prefetched)
      const auto load_own = [&](int64_t tt) {
        const bool ok = l.active && tt < se;
        nd = ok ? detail::ldg(p.delta + tt * p.dim + d) : 0.0f;
        nu = ok ? detail::ldg(p.u + tt * p.dim + d) : 0.0f;
      };
      load_own(c.t0 + sub);
      float own_dt = 0.0f, own_u = 0.0f;
      #pragma unroll 1
      for (int64_t t = c.t0; t < se; ++t) {
        const int q = static_cast<int>(t - c.t0) & (S - 1);  // uniform over the warp
        if (q == 0) {
          float own_raw = 0.0f;
          own_dt = (l.active && t + sub < se) ? dt_of(p, nd, bias, own_raw) : 0.0f;
          own_u = nu;
          load_own(t + S + sub);
        }
        const float dt = __shfl_sync(0xffffffffu, own_dt, base_lane + q);
        const float u = __shfl_sync(0xffffffffu, own_u, base_lane + q);
        get_rows_s<T, N, NS, false>(p, t, l.g, n0, c, staged, sB, sC, Bv, Cv);
        if (t == ss) save_h(0, h);
        fwd_step<NS>(h, A, Bv, dt, dt * u);
        if (t >= ss) save_h(static_cast<int>(t - ss) + 1, h);
      }
    }
    // h holds this lane's states after token se - 1.
    float nd = 0.0f, nu = 0.0f, no = 0.0f, nz = 0.0f;  // raw inputs of the next owned token
    const auto load_own = [&](int64_t tt) {
      const bool ok = l.active && tt >= ss;
      nd = ok ? detail::ldg(p.delta + tt * p.dim + d) : 0.0f;
      nu = ok ? detail::ldg(p.u + tt * p.dim + d) : 0.0f;
      no = ok ? detail::ldg(p.dout + tt * p.dim + d) : 0.0f;
      nz = (ok && p.z) ? detail::ldg(p.z + tt * p.dim + d) : 0.0f;
    };
    load_own(se - 1 - sub);
    float own_dt = 0.0f, own_u = 0.0f, own_dy = 0.0f, own_fz = 0.0f, own_dsp = 1.0f;
    #pragma unroll 1
    for (int64_t t = se - 1; t >= ss; --t) {
      const int q = static_cast<int>(se - 1 - t) & (S - 1);  // uniform over the warp
      if (q == 0) {
        float own_raw = 0.0f;
        own_dt = (l.active && t - sub >= ss) ? dt_of(p, nd, bias, own_raw) : 0.0f;
        own_dsp = (p.softplus && own_raw <= 20.0f) ? detail::sigmoid_f(own_raw) : 1.0f;
        own_u = nu;
        if (p.z) {
          const float sg = detail::sigmoid_f(nz);
          own_dy = no * nz * sg;
          own_fz = no * sg * (1.0f + nz * (1.0f - sg));  // dz = y · own_fz
        } else {
          own_dy = no;
        }
        load_own(t - S - sub);
      }
      const int src = base_lane + q;
      const float dt = __shfl_sync(0xffffffffu, own_dt, src);
      const float u = __shfl_sync(0xffffffffu, own_u, src);
      const float dy = __shfl_sync(0xffffffffu, own_dy, src);
      const float s = scale_dt(dt);
      const int64_t o = t * p.dim + d;  // this channel's element of token t (one index for 3 stores)
      get_rows_s<T, N, NS, true>(p, t, l.g, n0, c, staged, sB, sC, Bv, Cv);
      const int i = static_cast<int>(t - ss);
      if (p.z) {  // uniform
        const float fz = __shfl_sync(0xffffffffu, own_fz, src);
        float yp = 0.0f;
#pragma unroll
        for (int j = 0; j < NS; ++j) yp += Cv[j] * h[j];
        const float y = Dd * u + lanes_sum<S>(yp);
        if (l.active && sub == 0) store(p.dz, o, y * fz);
      }
      float dup = 0.0f, ddtp = 0.0f;
      float v[2 * NS], hpv[NS];
      load_h(i, hpv);
#pragma unroll
      for (int j = 0; j < NS; ++j) {
        const float hp = hpv[j];
        const float dec = decay(s, A[j]);
        const float gv = g[j] + dy * Cv[j];
        const float x = gv * dec * hp;  // ∂L/∂(Δ·A) for this state
        ddtp += x * A[j] + gv * Bv[j] * u;
        dA[j] += x * dt;
        dup += gv * Bv[j] * dt;
        v[j] = gv * dt * u;     // dB partial
        v[NS + j] = dy * h[j];  // dC partial
        g[j] = gv * dec;
        h[j] = hp;  // becomes the state after token t - 1
      }
      transpose_sum_to<16, S, 2 * NS, 2 * NS>(v, lane);
      float* row = sbc + (i * kWarps + warp) * (2 * N);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int idx = (lane / S) * R + r;  // value idx of state lane sub, summed over the warp's channels
        row[idx < NS ? n0 + idx : N + n0 + idx - NS] = v[r];
      }
      const float ddt = lanes_sum<S>(ddtp) * __shfl_sync(0xffffffffu, own_dsp, src);
      const float du = Dd * dy + lanes_sum<S>(dup);
      if (l.active && sub == 0) {
        store(p.du, o, du);
        store(p.ddelta, o, ddt);
      }
      ddb += ddt;
      dD += dy * u;
    }
    // dB/dC: the warps' sums of this segment's tokens, added over the warps in order.
    __syncthreads();
    const int64_t n_seg = (se - ss) * 2 * N;
    for (int64_t e = threadIdx.x; e < n_seg; e += kBlock) {
      const int64_t i = e / (2 * N), j = e % (2 * N);
      float sum = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) sum += sbc[(i * kWarps + w) * (2 * N) + j];
      p.ws_bc[(((ss + i) * p.ngroups + l.g) * p.bpg + block_in_group) * (2 * N) + j] = sum;
    }
    __syncthreads();  // sbc is free for the next segment
  }
}

// bwd_chunk with d_state split over S lanes (ws_bc: one partial row per block).
template <class T, int N, int S>
__global__ void __launch_bounds__(kThreads * S, bwd_split_min_blocks<N>()) bwd_chunk_split(Params<T> p) {
  extern __shared__ __align__(16) float smem[];
  constexpr int kSeg = seg_len<N>(), NS = N / S;
  const int64_t slot = blockIdx.x;
  const Lane l = lane_of_split<S>(p);
  const int sub = threadIdx.x % S, n0 = sub * NS;
  const int64_t d = l.d;
  const int64_t W = p.dim * N + 2 * p.dim;
  ChunkPos c;
  if (!chunk_pos(p, slot, c)) {  // unused slot: zero partials (uniform over the block)
    if (l.active) {
      for (int j = 0; j < NS; ++j) p.ws_par[slot * W + d * N + n0 + j] = 0.0f;
      if (sub == 0) {
        p.ws_par[slot * W + p.dim * N + d] = 0.0f;
        p.ws_par[slot * W + p.dim * N + p.dim + d] = 0.0f;
      }
    }
    return;
  }
  float A[NS], g[NS], h0[NS], dA[NS];
#pragma unroll
  for (int j = 0; j < NS; ++j) {
    A[j] = l.active ? detail::ld(p.A, d * N + n0 + j) : 0.0f;
    g[j] = l.active ? p.ws_state[(slot * p.dim + d) * N + n0 + j] : 0.0f;
    h0[j] = l.active ? detail::ld(p.saved_in, (slot * p.dim + d) * N + n0 + j) : 0.0f;
    dA[j] = 0.0f;
  }
  const float bias = (l.active && p.delta_bias) ? detail::ld(p.delta_bias, d) : 0.0f;
  const float Dd = (l.active && p.D) ? detail::ld(p.D, d) : 0.0f;
  float dD = 0.0f, ddb = 0.0f;
  float* sB = smem + (kSeg + 1) * N * kThreads;
  float* sC = sB + stage_tokens<N>() * N;
  float* sbc = sC + stage_tokens<N>() * N;
  const bool staged = stage_rows<T, N>(p, c, l.g, sB, sC);
  bwd_tokens_split<T, N, S>(p, c, l, sub, staged, sB, sC, smem, sbc, A, h0, bias, Dd, g, dA, dD, ddb);
  if (!l.active) return;
  if (c.k == 0 && p.dinit) {
#pragma unroll
    for (int j = 0; j < NS; ++j) store(p.dinit, (c.b * p.dim + d) * N + n0 + j, g[j]);
  }
#pragma unroll
  for (int j = 0; j < NS; ++j) p.ws_par[slot * W + d * N + n0 + j] = dA[j];
  if (sub == 0) {
    p.ws_par[slot * W + p.dim * N + d] = dD;
    p.ws_par[slot * W + p.dim * N + p.dim + d] = ddb;
  }
}

// bwd_seq with d_state split over S lanes.
template <class T, int N, int S>
__global__ void __launch_bounds__(kThreads * S, bwd_split_min_blocks<N>()) bwd_seq_split(Params<T> p) {
  extern __shared__ __align__(16) float smem[];
  constexpr int kSeg = seg_len<N>(), NS = N / S;
  const Lane l = lane_of_split<S>(p);
  const int sub = threadIdx.x % S, n0 = sub * NS;
  const int64_t d = l.d;
  const int64_t W = p.dim * N + 2 * p.dim;
  float A[NS], dA[NS];
#pragma unroll
  for (int j = 0; j < NS; ++j) {
    A[j] = l.active ? detail::ld(p.A, d * N + n0 + j) : 0.0f;
    dA[j] = 0.0f;
  }
  const float bias = (l.active && p.delta_bias) ? detail::ld(p.delta_bias, d) : 0.0f;
  const float Dd = (l.active && p.D) ? detail::ld(p.D, d) : 0.0f;
  float dD = 0.0f, ddb = 0.0f;
  float* sB = smem + (kSeg + 1) * N * kThreads;
  float* sC = sB + stage_tokens<N>() * N;
  float* sbc = sC + stage_tokens<N>() * N;
  for (int64_t b = blockIdx.x; b < p.batch; b += gridDim.x) {
    float g[NS];
#pragma unroll
    for (int j = 0; j < NS; ++j)
      g[j] = (l.active && p.dfinal) ? detail::ld(p.dfinal, (b * p.dim + d) * N + n0 + j) : 0.0f;
    ChunkPos c;
    if (seq_pos(p, b, c)) {  // block-uniform
      const int64_t slot0 = selective_scan_slot_d(b, c.start, p.chunk);
      for (int64_t k = c.nk - 1; k >= 0; --k) {
        c.k = k;
        c.t0 = c.start + k * p.chunk;
        c.t1 = c.t0 + p.chunk < c.end ? c.t0 + p.chunk : c.end;
        float h0[NS];
#pragma unroll
        for (int j = 0; j < NS; ++j)
          h0[j] = l.active ? detail::ld(p.saved_in, ((slot0 + k) * p.dim + d) * N + n0 + j) : 0.0f;
        __syncthreads();  // the previous chunk's reads of sB / sC are done
        const bool staged = stage_rows<T, N>(p, c, l.g, sB, sC);
        bwd_tokens_split<T, N, S>(p, c, l, sub, staged, sB, sC, smem, sbc, A, h0, bias, Dd, g, dA, dD, ddb);
      }
    }
    if (l.active && p.dinit) {  // the adjoint at the sequence start (dfinal for empty sequences)
#pragma unroll
      for (int j = 0; j < NS; ++j) store(p.dinit, (b * p.dim + d) * N + n0 + j, g[j]);
    }
  }
  if (!l.active) return;
  const int64_t row = blockIdx.x;
#pragma unroll
  for (int j = 0; j < NS; ++j) p.ws_par[row * W + d * N + n0 + j] = dA[j];
  if (sub == 0) {
    p.ws_par[row * W + p.dim * N + d] = dD;
    p.ws_par[row * W + p.dim * N + p.dim + d] = ddb;
  }
}

// ---- Tiled backward (ScanImpl::kTiled) --------------------------------------------------------
// bwd_tokens_split reorganised so that the state loops do state work only: at each chunk start the
// block computes every per-(token, channel) scalar of the chunk once (Δ and its softplus
// derivative, u, the gated dy and the dz factor: one thread per pair, coalesced loads) into
// shared memory, next to the chunk's B and C rows, so the recomputation and the reverse pass read
// them with broadcast shared loads instead of loading, converting, owning and shuffling them per
// token; x = (g'·e^{ΔA})·h_{t-1} and g = g'·e^{ΔA} share one product; ddelta and du need two
// S-lane sums instead of three. Needs the chunk's scalars in shared memory, so it covers chunks of
// up to kTiledMaxChunk tokens (the layer picks the chunk; larger ones run bwd_*_split).
constexpr int kTiledMaxChunk = 16;
constexpr int kTiledSeg = 8;       // tokens per segment of kept states
constexpr int kTiledScalars = 6;   // s = Δ·log2 e, Δ, u, dy, dz factor, softplus derivative
// Lanes per channel of the tiled backward: 8 states per lane (d_state 16: 2 lanes, 32: 4), so the
// per-token work that is not per state (shared loads, the lane sums, addressing, stores) is
// spread over 8 states and the lane sums take 1 (or 2) butterfly steps.
template <int N>
constexpr int tiled_lanes() {
  return N / 8 >= 1 ? N / 8 : 1;
}
template <int N>
constexpr bool tiled_bwd_supported() {
  return N == 16 || N == 32;
}
// Tuning switch (bench, A/B): 4 forces 4 lanes per channel (4 states each: twice the threads and
// resident warps, more lane sums per state) in the tiled backward; 0 = tiled_lanes<N>().
inline int& tiled_lanes_override() {
  static int lanes = 0;
  return lanes;
}
template <int N>
int tiled_lanes_now() {
  return tiled_lanes_override() == 4 ? 4 : tiled_lanes<N>();
}
template <int N>
constexpr int bwd_tiled_min_blocks() {
  return N <= 16 ? 4 : 2;  // d_state 16: 128 registers (4 blocks of 128 threads), no spills
}
// Dynamic shared memory of the tiled backward for a chunk length (floats: kept states, dB/dC warp
// sums, B and C rows, the per-token scalars).
template <int N, int S>
constexpr std::size_t bwd_tiled_smem_bytes(int64_t chunk) {
  const std::size_t lc = static_cast<std::size_t>(chunk < kTiledMaxChunk ? chunk : kTiledMaxChunk);
  return (static_cast<std::size_t>(kTiledSeg) * kThreads * S * (N / S) + kTiledSeg * (kThreads * S / 32) * 2 * N +
          2 * static_cast<std::size_t>(kTiledMaxChunk) * N + kTiledScalars * lc * kThreads) *
         sizeof(float);
}

// The chunk's per-(token, channel) scalars into sc[(i·kTiledScalars + k)·kThreads + channel] (i:
// token in the chunk, k: kTiledScalars kinds; the sigmoids with gate_sigmoid's MUFU approximation) and its B and C rows into sB, sC; every thread of the block calls it
// (it synchronises at the end). With kPrefetch (the sequential kernel, which walks chunks in
// reverse and then the sequence gridDim.x further), also the rows of the chunk it takes next into
// L2: the previous chunk, or at a sequence's first chunk the next sequence's last chunk. The
// chunked kernel over grouped passes prefetches the previous chunk while `prefetch` (its pass
// chunk has one).
template <class T, int N, int S, bool kPrefetch>
__device__ __forceinline__ void stage_chunk_tiled(const Params<T>& p, const ChunkPos& c, int64_t g, int ld,
                                                  float* sB, float* sC, float* sc, bool prefetch = true) {
  constexpr int kBlock = kThreads * S;
  const int L = static_cast<int>(c.t1 - c.t0);
  const int cl = static_cast<int>(threadIdx.x % kThreads);  // fixed: kBlock is a multiple of kThreads
  const int64_t local = (blockIdx.y % static_cast<uint32_t>(p.bpg)) * kThreads + cl;
  const bool active = local < p.per_group;
  const int64_t d = g * p.per_group + local;
  const float bias = (active && p.delta_bias) ? detail::ld(p.delta_bias, d) : 0.0f;
  for (int i = static_cast<int>(threadIdx.x / kThreads); i < L; i += kBlock / kThreads) {
    const int64_t o = (c.t0 + i) * p.dim + d;
    float dt = 0.0f, u = 0.0f, dy = 0.0f, fz = 0.0f, dsp = 1.0f;
    if (active) {
      const float dl = detail::ldg(p.delta + o);
      u = detail::ldg(p.u + o);
      const float dout = detail::ldg(p.dout + o);
      float raw = 0.0f;
      dt = dt_of_tiled(p, dl, bias, raw);
      dsp = (p.softplus && raw <= 20.0f) ? gate_sigmoid(raw) : 1.0f;
      if (p.z) {
        const float z = detail::ldg(p.z + o);
        const float sg = gate_sigmoid(z);
        dy = dout * z * sg;
        fz = dout * sg * (1.0f + z * (1.0f - sg));
      } else {
        dy = dout;
      }
    }
    float* q = sc + i * kTiledScalars * kThreads + cl;
    q[0] = scale_dt(dt);
    q[kThreads] = dt;
    q[2 * kThreads] = u;
    q[3 * kThreads] = dy;
    q[4 * kThreads] = fz;
    q[5 * kThreads] = dsp;
  }
  for (int e = static_cast<int>(threadIdx.x); e < L * N; e += kBlock) {
    const int64_t src = ((c.t0 + e / N) * p.ngroups + g) * N + e % N;
    sB[e] = detail::ldg(p.B + src);
    sC[e] = detail::ldg(p.C + src);
  }
#ifndef MAMBATRACK_SCAN_NO_L2_PREFETCH
  if (kPrefetch && prefetch) {
    // Rows [pt0, pt1) of Δ, u, dout, z for this block's channels: one prefetch per (token,
    // tensor, 32-channel half).
    int64_t pt0 = c.t0 - p.save_chunk > c.start ? c.t0 - p.save_chunk : c.start, pt1 = c.t0;
    if (c.k == 0) {
      pt0 = pt1 = 0;
      const int64_t nb = c.b + gridDim.x;
      if (nb < p.batch) {
        const int64_t s1 = p.cu[nb], e1 = p.cu[nb + 1];
        if (s1 >= 0 && e1 > s1 && e1 <= p.tokens) {
          pt0 = s1 + (e1 - s1 - 1) / p.chunk * p.chunk;
          pt1 = e1;
        }
      }
    }
    const int n_pf = static_cast<int>(pt1 - pt0) * 8;
    const int64_t dblock = g * p.per_group + (blockIdx.y % static_cast<uint32_t>(p.bpg)) * kThreads;
    for (int e = static_cast<int>(threadIdx.x); e < n_pf; e += kBlock) {
      const int64_t t = pt0 + e / 8;
      const int which = e % 4, half = (e / 4) % 2;
      const T* base = which == 0 ? p.delta : which == 1 ? p.u : which == 2 ? p.dout : p.z;
      if (base && half * 32 < p.per_group - (dblock - g * p.per_group)) prefetch_l2(base + t * p.dim + dblock + half * 32);
    }
  }
#endif
  __syncthreads();
}

// The reverse pass over chunk c for this lane's states [sub·N/S, (sub+1)·N/S) (block-uniform;
// every thread calls it): per segment of kTiledSeg tokens (last first), recompute the states from
// the chunk-start state h0 keeping the segment's in shared memory, then the reverse recurrence
// from the adjoint g (updated in place to the adjoint at the chunk start). The chunk's scalars and
// rows must be staged (stage_chunk_tiled).
template <class T, int N, int S>
__device__ __forceinline__ void bwd_tokens_tiled(const Params<T>& p, const ChunkPos& c, const Lane& l, int sub, int ld,
                                                 const float* sB, const float* sC, const float* sc, float* hist_base,
                                                 float* sbc, const float (&A)[N / S], const float (&h0)[N / S], float Dd,
                                                 float (&g)[N / S], float (&dA)[N / S], float& dD, float& ddb) {
  constexpr int NS = N / S, kSeg = kTiledSeg, kBlock = kThreads * S, kWarps = kBlock / 32, R = N / 16;
  static_assert(NS % 4 == 0 && N % 16 == 0 && 32 % S == 0, "unsupported d_state split");
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int n0 = sub * NS;
  const int64_t block_in_group = blockIdx.y % static_cast<uint32_t>(p.bpg);
  const bool has_z = p.z != nullptr;
  const bool writer = l.active && sub == 0;
  // Scalars of token i (in the chunk) of this lane's channel.
  const float* qs = sc + threadIdx.x / S;
  constexpr int kQ = kTiledScalars * kThreads;  // scalars of one token
  (void)ld;
  float4* hist = reinterpret_cast<float4*>(hist_base) + threadIdx.x * (NS / 4);
  const auto row4 = [&](const float* r, int i, float(&v)[NS]) {
#pragma unroll
    for (int q = 0; q < NS / 4; ++q) {
      const float4 w = reinterpret_cast<const float4*>(r + i * N + n0)[q];
      v[4 * q] = w.x;
      v[4 * q + 1] = w.y;
      v[4 * q + 2] = w.z;
      v[4 * q + 3] = w.w;
    }
  };
  const int L = static_cast<int>(c.t1 - c.t0), nseg = (L + kSeg - 1) / kSeg;
  for (int seg = nseg - 1; seg >= 0; --seg) {
    int64_t ss64, se64;
    segment_bounds<kSeg>(c, nseg, seg, ss64, se64);
    const int is = static_cast<int>(ss64 - c.t0), ie = static_cast<int>(se64 - c.t0);
    float h[NS], Bv[NS], Cv[NS];
#pragma unroll
    for (int j = 0; j < NS; ++j) h[j] = h0[j];
    #pragma unroll 1
    for (int i = 0; i < ie; ++i) {
      const float* q = qs + i * kQ;
      const float s = q[0], dtu = q[kThreads] * q[2 * kThreads];
      row4(sB, i, Bv);
      if (i >= is) {
#pragma unroll
        for (int q = 0; q < NS / 4; ++q)
          hist[(i - is) * kBlock * (NS / 4) + q] = make_float4(h[4 * q], h[4 * q + 1], h[4 * q + 2], h[4 * q + 3]);
      }
#pragma unroll
      for (int j = 0; j < NS; ++j) h[j] = decay(s, A[j]) * h[j] + Bv[j] * dtu;
    }
    // h holds this lane's states after token ie - 1.
    #pragma unroll 2
    for (int i = ie - 1; i >= is; --i) {
      const float* q = qs + i * kQ;
      const float s = q[0], dt = q[kThreads], u = q[2 * kThreads], dy = q[3 * kThreads];
      const float dtu = dt * u;
      const int64_t o = (c.t0 + i) * p.dim + l.d;
      row4(sB, i, Bv);
      row4(sC, i, Cv);
      if (has_z) {  // uniform
        float yp = 0.0f;
#pragma unroll
        for (int j = 0; j < NS; ++j) yp += Cv[j] * h[j];
        const float y = Dd * u + lanes_sum<S>(yp);
        if (writer) store(p.dz, o, y * q[4 * kThreads]);
      }
      float hp[NS], v[2 * NS];
#pragma unroll
      for (int q = 0; q < NS / 4; ++q) {
        const float4 w = hist[(i - is) * kBlock * (NS / 4) + q];
        hp[4 * q] = w.x;
        hp[4 * q + 1] = w.y;
        hp[4 * q + 2] = w.z;
        hp[4 * q + 3] = w.w;
      }
      float q1 = 0.0f, q2 = 0.0f;
#pragma unroll
      for (int j = 0; j < NS; ++j) {
        const float gv = g[j] + dy * Cv[j];
        const float gd = gv * decay(s, A[j]);
        const float x = gd * hp[j];  // ∂L/∂(Δ·A) for this state
        q1 += x * A[j];
        q2 += gv * Bv[j];
        dA[j] += x * dt;
        v[j] = gv * dtu;        // dB partial
        v[NS + j] = dy * h[j];  // dC partial
        g[j] = gd;
        h[j] = hp[j];  // becomes the state after token i - 1
      }
      transpose_sum_to<16, S, 2 * NS, 2 * NS>(v, lane);
      float* row = sbc + ((i - is) * kWarps + warp) * (2 * N);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int idx = (lane / S) * R + r;
        row[idx < NS ? n0 + idx : N + n0 + idx - NS] = v[r];
      }
      const float ddt = lanes_sum<S>(q1 + q2 * u) * q[5 * kThreads];
      const float gb = lanes_sum<S>(q2);
      if (writer) {
        store(p.du, o, Dd * dy + gb * dt);
        store(p.ddelta, o, ddt);
      }
      ddb += ddt;
      dD += dy * u;
    }
    // dB/dC: the warps' sums of this segment's tokens, added over the warps in order.
    __syncthreads();
    const int n_seg = (ie - is) * 2 * N;
    for (int e = static_cast<int>(threadIdx.x); e < n_seg; e += kBlock) {
      const int i = e / (2 * N), j = e % (2 * N);
      float sum = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) sum += sbc[(i * kWarps + w) * (2 * N) + j];
      p.ws_bc[(((ss64 + i) * p.ngroups + l.g) * p.bpg + block_in_group) * (2 * N) + j] = sum;
    }
    __syncthreads();  // sbc is free for the next segment
  }
}

// The tiled backward kernel: kSeq = false, one block per (slot, channel block) as bwd_chunk_split;
// kSeq = true, one block per (sequence set, channel block) walking chunks in reverse as
// bwd_seq_split. Same outputs and partial rows as those.
template <class T, int N, int S, bool kSeq>
__global__ void __launch_bounds__(kThreads * S, bwd_tiled_min_blocks<N>()) bwd_tiled(Params<T> p) {
  extern __shared__ __align__(16) float smem[];
  constexpr int NS = N / S, kBlock = kThreads * S;
  const Lane l = lane_of_split<S>(p);
  const int sub = threadIdx.x % S, n0 = sub * NS;
  const int64_t d = l.d;
  const int64_t W = p.dim * N + 2 * p.dim;
  const int ld = static_cast<int>(p.save_chunk < kTiledMaxChunk ? p.save_chunk : kTiledMaxChunk);
  float* hist = smem;
  float* sbc = hist + kTiledSeg * kBlock * NS;
  float* sB = sbc + kTiledSeg * (kBlock / 32) * 2 * N;
  float* sC = sB + kTiledMaxChunk * N;
  float* sc = sC + kTiledMaxChunk * N;
  float A[NS], dA[NS];
#pragma unroll
  for (int j = 0; j < NS; ++j) {
    A[j] = l.active ? detail::ld(p.A, d * N + n0 + j) : 0.0f;
    dA[j] = 0.0f;
  }
  const float Dd = (l.active && p.D) ? detail::ld(p.D, d) : 0.0f;
  float dD = 0.0f, ddb = 0.0f;
  int64_t row = blockIdx.x;  // ws_par partial row
  if constexpr (!kSeq) {
    const int64_t slot = blockIdx.x;
    ChunkPos c;
    if (!chunk_pos(p, slot, c)) {  // unused slot: zero partials (uniform over the block)
      if (l.active) {
        for (int j = 0; j < NS; ++j) p.ws_par[slot * W + d * N + n0 + j] = 0.0f;
        if (sub == 0) {
          p.ws_par[slot * W + p.dim * N + d] = 0.0f;
          p.ws_par[slot * W + p.dim * N + p.dim + d] = 0.0f;
        }
      }
      return;
    }
    float g[NS];
#pragma unroll
    for (int j = 0; j < NS; ++j) g[j] = l.active ? p.ws_state[(slot * p.dim + d) * N + n0 + j] : 0.0f;
    // The saved chunks of this pass chunk in reverse (one when p.chunk == p.save_chunk; several
    // with grouped_params), the adjoint carried from one to the next as in the kSeq kernel.
    const int64_t cs = p.save_chunk, slot0 = c.b + c.start / cs;
    const int64_t k0 = (c.t0 - c.start) / cs, k1 = (c.t1 - c.start + cs - 1) / cs;
    for (int64_t k = k1 - 1; k >= k0; --k) {  // block-uniform
      ChunkPos cc = c;
      cc.k = k;
      cc.t0 = c.start + k * cs;
      cc.t1 = cc.t0 + cs < c.t1 ? cc.t0 + cs : c.t1;
      float h0[NS];
      load_saved<scan_state_t<T>, NS>(p.saved_in, ((slot0 + k) * p.dim + d) * N + n0, l.active, h0);
      if (k != k1 - 1) __syncthreads();  // the previous chunk's reads of the staged rows and scalars are done
      // The next one into L2 (not with 4 lanes per channel: its 64 registers would spill).
      stage_chunk_tiled<T, N, S, S == tiled_lanes<N>()>(p, cc, l.g, ld, sB, sC, sc, k > k0);
      bwd_tokens_tiled<T, N, S>(p, cc, l, sub, ld, sB, sC, sc, hist, sbc, A, h0, Dd, g, dA, dD, ddb);
    }
    if (l.active && c.k == 0 && p.dinit) {
#pragma unroll
      for (int j = 0; j < NS; ++j) store(p.dinit, (c.b * p.dim + d) * N + n0 + j, g[j]);
    }
  } else {
    for (int64_t b = blockIdx.x; b < p.batch; b += gridDim.x) {
      float g[NS];
#pragma unroll
      for (int j = 0; j < NS; ++j)
        g[j] = (l.active && p.dfinal) ? detail::ld(p.dfinal, (b * p.dim + d) * N + n0 + j) : 0.0f;
      ChunkPos c;
      if (seq_pos(p, b, c)) {  // block-uniform
        const int64_t slot0 = selective_scan_slot_d(b, c.start, p.chunk);
        for (int64_t k = c.nk - 1; k >= 0; --k) {
          c.k = k;
          c.t0 = c.start + k * p.chunk;
          c.t1 = c.t0 + p.chunk < c.end ? c.t0 + p.chunk : c.end;
          float h0[NS];
          load_saved<scan_state_t<T>, NS>(p.saved_in, ((slot0 + k) * p.dim + d) * N + n0, l.active, h0);
          __syncthreads();  // the previous chunk's reads of the staged rows and scalars are done
          stage_chunk_tiled<T, N, S, true>(p, c, l.g, ld, sB, sC, sc);
          bwd_tokens_tiled<T, N, S>(p, c, l, sub, ld, sB, sC, sc, hist, sbc, A, h0, Dd, g, dA, dD, ddb);
        }
      }
      if (l.active && p.dinit) {  // the adjoint at the sequence start (dfinal for empty sequences)
#pragma unroll
        for (int j = 0; j < NS; ++j) store(p.dinit, (b * p.dim + d) * N + n0 + j, g[j]);
      }
    }
  }
  if (!l.active) return;
#pragma unroll
  for (int j = 0; j < NS; ++j) p.ws_par[row * W + d * N + n0 + j] = dA[j];
  if (sub == 0) {
    p.ws_par[row * W + p.dim * N + d] = dD;
    p.ws_par[row * W + p.dim * N + p.dim + d] = ddb;
  }
}

// dB[t, g, n] = Σ_w partial[t, g, w, n] and dC likewise, warps in order (overwrites dB, dC).
template <class T>
__global__ void bwd_reduce_bc(const float* __restrict part, int64_t rows, int64_t wpg, int64_t N, T* __restrict dB,
                              T* __restrict dC) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * 2 * N) return;
  const int64_t row = i / (2 * N), j = i % (2 * N);
  float s = 0.0f;
  for (int64_t w = 0; w < wpg; ++w) s += part[(row * wpg + w) * 2 * N + j];
  if (j < N) dB[row * N + j] = T(s);
  else dC[row * N + j - N] = T(s);
}

template <class T, class In>
Params<T> make_params(const In& in, const SelectiveScanSizes& s) {
  Params<T> p;
  p.u = in.u.data;
  p.delta = in.delta.data;
  p.A = in.A.data;
  p.B = in.B.data;
  p.C = in.C.data;
  p.D = is_given(in.D) ? in.D.data : nullptr;
  p.delta_bias = is_given(in.delta_bias) ? in.delta_bias.data : nullptr;
  p.z = is_given(in.z) ? in.z.data : nullptr;
  p.init = is_given(in.initial_state) ? in.initial_state.data : nullptr;
  p.cu = in.cu_seqlens.data;
  p.tokens = s.tokens;
  p.dim = s.dim;
  p.ngroups = s.ngroups;
  p.batch = s.batch;
  p.chunk = in.chunk;
  p.save_chunk = in.chunk;
  p.slots = s.batch + s.tokens / in.chunk;
  p.per_group = s.dim / s.ngroups;
  p.bpg = (p.per_group + kThreads - 1) / kThreads;
  p.softplus = in.delta_softplus;
  p.max_len_hint = in.max_seqlen_hint;
  const auto aligned = [](const void* q) { return reinterpret_cast<std::uintptr_t>(q) % 16 == 0; };
  p.vec_bc = aligned(p.B) && aligned(p.C);
  return p;
}

// The chunked path's passes over chunks of m saved chunks (m·save_chunk tokens): fewer, longer
// local / combine / chunk blocks (the local and combine passes read and write m times fewer chunk
// states), while the chunk pass saves the state at every saved chunk start and the tiled backward
// walks its saved chunks in reverse. m = 1: the passes of the saved chunks themselves.
template <class T>
Params<T> grouped_params(const Params<T>& p, int64_t m) {
  Params<T> q = p;
  q.chunk = p.save_chunk * (m > 1 ? m : 1);
  q.slots = p.batch + p.tokens / q.chunk;
  return q;
}

// Slot map and the chunk-state workspaces (scratch ids 0..2).
template <class T, int N>
void prepare(Params<T>& p, cudaStream_t stream) {
  MAMBATRACK_CHECK(p.batch * p.dim * N < (int64_t{1} << 31) && p.slots < (int64_t{1} << 31), ConfigError,
                   "cuda selective_scan: batch · dim · d_state = ", p.batch, " · ", p.dim, " · ", N,
                   " must stay below 2^31; split the batch");
  int* map = static_cast<int*>(detail::scratch(0, static_cast<std::size_t>(2 * p.slots) * sizeof(int)));
  p.slot_seq = map;
  p.slot_k = map + p.slots;
  p.ws_state = static_cast<float*>(detail::scratch(1, static_cast<std::size_t>(p.slots * p.dim * N) * sizeof(float)));
  p.ws_sd = static_cast<float*>(detail::scratch(2, static_cast<std::size_t>(p.slots * p.dim) * sizeof(float)));
  MAMBATRACK_CUDA_CHECK(cudaMemsetAsync(map, 0xff, static_cast<std::size_t>(p.slots) * sizeof(int), stream));
  map_slots<<<static_cast<unsigned>((p.batch + 127) / 128), 128, 0, stream>>>(p.cu, p.batch, p.tokens, p.chunk, p.slots,
                                                                              p.slot_seq, p.slot_k);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
}

// One-time (per device) backward kernel set-up: their dynamic shared memory limits, and how many
// bwd_seq (and bwd_seq_split) blocks one SM holds.
struct BwdSetup {
  int seq_blocks_per_sm = 1, seq_split_blocks_per_sm = 1;
  int seq_tiled_blocks_per_sm[kTiledMaxChunk + 1] = {};   // by chunk length, tiled_lanes<N>() lanes
  int seq_tiled4_blocks_per_sm[kTiledMaxChunk + 1] = {};  // the same with 4 lanes (tiled_lanes_override)
};
template <class T, int N>
BwdSetup bwd_setup() {
  constexpr int kMaxDevices = 64;
  static std::once_flag once[kMaxDevices];
  static BwdSetup per_device[kMaxDevices];
  int dev = 0;
  MAMBATRACK_CUDA_CHECK(cudaGetDevice(&dev));
  const auto setup = [](BwdSetup* r) {
    constexpr int kSmem = static_cast<int>(bwd_smem_bytes<N>());
    MAMBATRACK_CUDA_CHECK(cudaFuncSetAttribute(bwd_chunk<T, N>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    MAMBATRACK_CUDA_CHECK(cudaFuncSetAttribute(bwd_seq<T, N>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    MAMBATRACK_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&r->seq_blocks_per_sm, bwd_seq<T, N>, kThreads, kSmem));
    if constexpr (split_lanes<N>() > 1) {
      constexpr int S = split_lanes<N>();
      constexpr int kSplitSmem = static_cast<int>(bwd_split_smem_bytes<N, S>());
      MAMBATRACK_CUDA_CHECK(cudaFuncSetAttribute(bwd_chunk_split<T, N, S>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, kSplitSmem));
      MAMBATRACK_CUDA_CHECK(cudaFuncSetAttribute(bwd_seq_split<T, N, S>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 kSplitSmem));
      MAMBATRACK_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
          &r->seq_split_blocks_per_sm, bwd_seq_split<T, N, S>, kThreads * S, kSplitSmem));
    }
    if constexpr (tiled_bwd_supported<N>()) {
      constexpr int S = tiled_lanes<N>();
      constexpr int kMax = static_cast<int>(bwd_tiled_smem_bytes<N, S>(kTiledMaxChunk));
      MAMBATRACK_CUDA_CHECK(
          cudaFuncSetAttribute(bwd_tiled<T, N, S, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, kMax));
      MAMBATRACK_CUDA_CHECK(
          cudaFuncSetAttribute(bwd_tiled<T, N, S, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, kMax));
      for (int lc = 1; lc <= kTiledMaxChunk; ++lc) {
        MAMBATRACK_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
            &r->seq_tiled_blocks_per_sm[lc], bwd_tiled<T, N, S, true>, kThreads * S,
            static_cast<int>(bwd_tiled_smem_bytes<N, S>(lc))));
        if (r->seq_tiled_blocks_per_sm[lc] < 1) r->seq_tiled_blocks_per_sm[lc] = 1;
        r->seq_tiled4_blocks_per_sm[lc] = r->seq_tiled_blocks_per_sm[lc];
      }
      if constexpr (S != 4) {
        constexpr int kMax4 = static_cast<int>(bwd_tiled_smem_bytes<N, 4>(kTiledMaxChunk));
        MAMBATRACK_CUDA_CHECK(
            cudaFuncSetAttribute(bwd_tiled<T, N, 4, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, kMax4));
        MAMBATRACK_CUDA_CHECK(
            cudaFuncSetAttribute(bwd_tiled<T, N, 4, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, kMax4));
        for (int lc = 1; lc <= kTiledMaxChunk; ++lc) {
          MAMBATRACK_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
              &r->seq_tiled4_blocks_per_sm[lc], bwd_tiled<T, N, 4, true>, kThreads * 4,
              static_cast<int>(bwd_tiled_smem_bytes<N, 4>(lc))));
          if (r->seq_tiled4_blocks_per_sm[lc] < 1) r->seq_tiled4_blocks_per_sm[lc] = 1;
        }
      }
    }
    if (r->seq_blocks_per_sm < 1) r->seq_blocks_per_sm = 1;
    if (r->seq_split_blocks_per_sm < 1) r->seq_split_blocks_per_sm = 1;
  };
  if (dev < 0 || dev >= kMaxDevices) {
    BwdSetup r;
    setup(&r);
    return r;
  }
  std::call_once(once[dev], setup, &per_device[dev]);
  return per_device[dev];
}

// Which path the scan takes. kChunked: chunk-parallel (local pass, cross-chunk combine, chunk
// pass; 3 kernels a direction + the slot map). kSequential: one block per (sequence, channel
// block) walks whole sequences (1 kernel a direction, no combine, no slot map, and each state
// recurrence computed once instead of twice). kAuto picks the sequential path when the host knows
// it is no slower: every sequence fits in one chunk (tokens <= chunk, or max_seqlen_hint <= chunk),
// or the sequences alone fill the GPU (batch × channel blocks >= the backward blocks resident on
// it) and are balanced (max_seqlen_hint <= 2 × the mean length). Tests and bisection may force
// either; both are correct for any input and differ only in speed and, for sequences longer than
// a chunk, in the float rounding of the chunk-start states.
enum class ScanPath { kAuto, kChunked, kSequential };
inline ScanPath& scan_path_override() {
  static ScanPath path = ScanPath::kAuto;
  return path;
}
inline int device_sm_count() {
  int dev = 0, sms = 1;
  MAMBATRACK_CUDA_CHECK(cudaGetDevice(&dev));
  MAMBATRACK_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms > 0 ? sms : 1;
}
template <int N>
bool use_tiled_bwd(int64_t chunk) {
  if constexpr (!tiled_bwd_supported<N>()) {
    (void)chunk;
    return false;
  } else {
    return tiled_impl() && chunk >= 1 && chunk <= kTiledMaxChunk && bwd_kernel_override() != BwdKernel::kPerChannel;
  }
}
// Backward blocks of the sequential path that the GPU holds at once.
template <class T, int N>
int64_t seq_resident_blocks(int64_t chunk) {
  const BwdSetup setup = bwd_setup<T, N>();
  const int per_sm = use_tiled_bwd<N>(chunk) ? (tiled_lanes_now<N>() == 4 ? setup.seq_tiled4_blocks_per_sm[chunk]
                                                                           : setup.seq_tiled_blocks_per_sm[chunk])
                     : use_split_bwd<N>()    ? setup.seq_split_blocks_per_sm
                                             : setup.seq_blocks_per_sm;
  return static_cast<int64_t>(device_sm_count()) * per_sm;
}
template <class T, int N>
bool sequential_path(const Params<T>& p) {
  switch (scan_path_override()) {
    case ScanPath::kChunked: return false;
    case ScanPath::kSequential: return true;
    case ScanPath::kAuto: break;
  }
  if (p.tokens <= p.chunk || (p.max_len_hint > 0 && p.max_len_hint <= p.chunk)) return true;
  if (p.max_len_hint <= 0 || p.batch <= 0) return false;
  const int64_t mean = p.tokens / p.batch;
  return p.batch * p.ngroups * p.bpg >= seq_resident_blocks<T, N>(p.chunk) && p.max_len_hint <= 2 * mean;
}

// dA/dD/ddelta_bias: out += Σ_r ws_par[r, ·] over `rows` partial rows, all three in one pair of
// launches (stage 1 of detail::sum_rows_accumulate over the whole row, then this stage 2); the
// same fixed summation order per column as three separate sum_rows_accumulate calls.
template <class T>
__global__ void sum_params_stage2(const float* __restrict tmp, int64_t groups, int64_t dimN, int64_t dim,
                                  T* __restrict dA, T* __restrict dD, T* __restrict ddb) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t cols = dimN + 2 * dim;
  if (c >= cols) return;
  float s = 0.0f;
  for (int64_t g = 0; g < groups; ++g) s += tmp[g * cols + c];
  T* out = c < dimN ? dA : (c < dimN + dim ? dD : ddb);
  const int64_t i = c < dimN ? c : (c < dimN + dim ? c - dimN : c - dimN - dim);
  if (out) out[i] = T(static_cast<float>(out[i]) + s);
}
template <class T, int N>
void sum_params(const Params<T>& p, int64_t rows, const SelectiveScanBwdArgs<T, Cuda>& a, cudaStream_t stream) {
  const int64_t W = p.dim * N + 2 * p.dim, groups = (rows + 63) / 64;
  MAMBATRACK_CHECK(groups < 65536, Error, "cuda selective_scan: ", rows, " partial rows is too many");
  float* tmp = static_cast<float*>(detail::scratch(5, static_cast<std::size_t>(groups * W) * sizeof(float) + 4));
  const int threads = 256;
  const unsigned bx = static_cast<unsigned>((W + threads - 1) / threads);
  if (groups > 0) {
    const dim3 grid(bx, static_cast<unsigned>(groups));
    detail::sum_rows_stage1<0><<<grid, threads, 0, stream>>>(p.ws_par, rows, W, W, tmp);
  }
  sum_params_stage2<T><<<bx, threads, 0, stream>>>(tmp, groups, p.dim * N, p.dim, a.dA.data, p.D ? a.dD.data : nullptr,
                                                   p.delta_bias ? a.ddelta_bias.data : nullptr);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
}

// Saved chunks per pass chunk of the chunked path (grouped_params) with the tiled kernels: about
// kGroupTokens tokens per pass chunk, halved while the pass would have fewer than 4 waves of
// forward blocks. chunk_group_override(): 0 = this choice, 1 = the earlier passes over single
// chunks, m > 1 = m chunks; MAMBATRACK_SCAN_NO_CHUNK_GROUP = 1 (bisection). The legacy kernels
// always take 1. Rounding only: the chunk-start states are combined over longer ranges.
constexpr int64_t kGroupTokens = 64;
inline int& chunk_group_override() {
  static int m = 0;
  return m;
}
template <class T>
int64_t chunk_group(const Params<T>& p) {
  if (!tiled_impl()) return 1;
  if (chunk_group_override() > 0) return chunk_group_override();
#ifdef MAMBATRACK_SCAN_NO_CHUNK_GROUP
  return 1;
#else
  int64_t m = p.chunk >= kGroupTokens ? 1 : kGroupTokens / p.chunk;
  const int64_t want = 4 * 8 * static_cast<int64_t>(device_sm_count());  // 4 waves of 8 blocks/SM
  while (m > 1 && (p.batch + p.tokens / (p.chunk * m)) * p.ngroups * p.bpg < want) m /= 2;
  return m;
#endif
}

template <class T, int N>
void launch_fwd(Params<T> p, cudaStream_t stream) {
  const unsigned gy = static_cast<unsigned>(p.ngroups * p.bpg);
  if (sequential_path<T, N>(p)) {
    MAMBATRACK_CHECK(p.batch < (int64_t{1} << 31), ConfigError, "cuda selective_scan: batch ", p.batch,
                     " must stay below 2^31");
    if (tiled_fwd_supported<N>() && tiled_impl())
      fwd_seq<T, N, tiled_fwd_supported<N>()><<<dim3(static_cast<unsigned>(p.batch), gy), kThreads, 0, stream>>>(p);
    else fwd_seq<T, N><<<dim3(static_cast<unsigned>(p.batch), gy), kThreads, 0, stream>>>(p);
    MAMBATRACK_CUDA_CHECK(cudaGetLastError());
    return;
  }
  const bool grouped = tiled_fwd_supported<N>() && tiled_impl() && chunk_group(p) > 1;
  if (grouped) p = grouped_params(p, chunk_group(p));
  prepare<T, N>(p, stream);
  const dim3 grid(static_cast<unsigned>(p.slots), gy);
  if (tiled_fwd_supported<N>() && tiled_impl()) fwd_local<T, N, tiled_fwd_supported<N>()><<<grid, kThreads, 0, stream>>>(p);
  else fwd_local<T, N><<<grid, kThreads, 0, stream>>>(p);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  const int64_t n_comb = p.batch * p.dim * N;
  fwd_combine<T, N><<<static_cast<unsigned>((n_comb + 255) / 256), 256, 0, stream>>>(p);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  if constexpr (tiled_fwd_supported<N>()) {  // no grouped instantiation for the others
    if (grouped) fwd_chunk<T, N, true, true><<<grid, kThreads, 0, stream>>>(p);
    else if (tiled_impl()) fwd_chunk<T, N, true><<<grid, kThreads, 0, stream>>>(p);
    else fwd_chunk<T, N><<<grid, kThreads, 0, stream>>>(p);
  } else {
    fwd_chunk<T, N><<<grid, kThreads, 0, stream>>>(p);
  }
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
}

template <class T, int N>
void launch_bwd(Params<T> p, const SelectiveScanBwdArgs<T, Cuda>& a, cudaStream_t stream) {
  constexpr int S = split_lanes<N>();
  const bool tiled = use_tiled_bwd<N>(p.chunk);
  const bool split = tiled || use_split_bwd<N>();
  const int64_t W = p.dim * N + 2 * p.dim;
  const int64_t wpg = split ? p.bpg : 2 * p.bpg;  // dB/dC partial rows per (token, group)
  const int64_t gy = p.ngroups * p.bpg;
  constexpr std::size_t kSmem = bwd_smem_bytes<N>();
  bwd_setup<T, N>();  // the dynamic shared-memory limits of every backward kernel (once per device)
  const bool seq = sequential_path<T, N>(p);
  int64_t rows = p.slots;  // ws_par partial rows
  if (seq) {
    // One wave: as many block rows as the GPU holds at once, each taking every rows-th sequence.
    const int64_t resident = seq_resident_blocks<T, N>(p.chunk);
    rows = (resident + gy - 1) / gy;
    if (rows > p.batch) rows = p.batch;
    if (rows < 1) rows = 1;
  } else {
    // Grouped passes with the tiled backward only (it walks a pass chunk's saved chunks).
    if (tiled && chunk_group(p) > 1) p = grouped_params(p, chunk_group(p));
    rows = p.slots;
    prepare<T, N>(p, stream);
  }
  p.ws_par = static_cast<float*>(detail::scratch(3, static_cast<std::size_t>(rows * W) * sizeof(float)));
  p.ws_bc = static_cast<float*>(
      detail::scratch(4, static_cast<std::size_t>(p.tokens * p.ngroups * wpg * 2 * N) * sizeof(float) + 4));
  const dim3 grid(static_cast<unsigned>(seq ? rows : p.slots), static_cast<unsigned>(gy));
  if (!seq) {
    bwd_local<T, N><<<grid, kThreads, 0, stream>>>(p);
    MAMBATRACK_CUDA_CHECK(cudaGetLastError());
    const int64_t n_comb = p.batch * p.dim * N;
    bwd_combine<T, N><<<static_cast<unsigned>((n_comb + 255) / 256), 256, 0, stream>>>(p);
    MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  }
  bool launched = false;
  if constexpr (tiled_bwd_supported<N>()) {
    if (tiled) {
      constexpr int St = tiled_lanes<N>();
      if (St != 4 && tiled_lanes_now<N>() == 4) {
        const std::size_t smem = bwd_tiled_smem_bytes<N, 4>(p.save_chunk);
        if (seq) bwd_tiled<T, N, 4, true><<<grid, kThreads * 4, smem, stream>>>(p);
        else bwd_tiled<T, N, 4, false><<<grid, kThreads * 4, smem, stream>>>(p);
      } else {
        const std::size_t smem = bwd_tiled_smem_bytes<N, St>(p.save_chunk);
        if (seq) bwd_tiled<T, N, St, true><<<grid, kThreads * St, smem, stream>>>(p);
        else bwd_tiled<T, N, St, false><<<grid, kThreads * St, smem, stream>>>(p);
      }
      launched = true;
    }
  }
  if constexpr (S > 1) {
    if (split && !launched) {
      constexpr std::size_t kSplitSmem = bwd_split_smem_bytes<N, S>();
      if (seq) bwd_seq_split<T, N, S><<<grid, kThreads * S, kSplitSmem, stream>>>(p);
      else bwd_chunk_split<T, N, S><<<grid, kThreads * S, kSplitSmem, stream>>>(p);
      launched = true;
    }
  }
  if (!launched) {
    if (seq) bwd_seq<T, N><<<grid, kThreads, kSmem, stream>>>(p);
    else bwd_chunk<T, N><<<grid, kThreads, kSmem, stream>>>(p);
  }
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  const int64_t bc_rows = p.tokens * p.ngroups;
  if (bc_rows > 0) {
    bwd_reduce_bc<T><<<static_cast<unsigned>((bc_rows * 2 * N + 255) / 256), 256, 0, stream>>>(
        p.ws_bc, bc_rows, wpg, N, a.dB.data, a.dC.data);
    MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  }
  sum_params<T, N>(p, rows, a, stream);
}

template <class T>
constexpr void check_type() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bfloat16>,
                "cuda::selective_scan supports float and bfloat16 storage");
}

}  // namespace scan_detail

// Forward on `stream`: out, and final_state / saved_states when given. cu_seqlens lives on the
// device and is not read by the host: it must be valid (validate_cu_seqlens before uploading);
// sequences with impossible ranges are skipped.
template <class T>
void selective_scan_fwd(const SelectiveScanFwdArgs<T, Cuda>& a, cudaStream_t stream = nullptr) {
  scan_detail::check_type<T>();
  const SelectiveScanSizes s = validate_selective_scan(a);
  if (s.dim == 0) return;
  scan_detail::Params<T> p = scan_detail::make_params<T>(a.in, s);
  p.out = a.out.data;
  p.final_state = is_given(a.final_state) ? a.final_state.data : nullptr;
  p.saved = is_given(a.saved_states) ? a.saved_states.data : nullptr;
  dispatch_value(SupportedDState{}, static_cast<int>(s.d_state), "selective_scan d_state (CUDA)",
                 [&](auto nc) { scan_detail::launch_fwd<T, decltype(nc)::value>(p, stream); });
}

// Backward on `stream` (needs the forward's saved_states): overwrites du, ddelta, dB, dC, dz,
// dinitial_state; accumulates into dA, dD, ddelta_bias. No atomics: bit-identical run to run.
template <class T>
void selective_scan_bwd(const SelectiveScanBwdArgs<T, Cuda>& a, cudaStream_t stream = nullptr) {
  scan_detail::check_type<T>();
  const SelectiveScanSizes s = validate_selective_scan(a, /*require_saved=*/true);
  if (s.dim == 0) return;
  scan_detail::Params<T> p = scan_detail::make_params<T>(a.in, s);
  p.saved_in = a.saved_states.data;
  p.dout = a.dout.data;
  p.dfinal = is_given(a.dfinal_state) ? a.dfinal_state.data : nullptr;
  p.du = a.du.data;
  p.ddelta = a.ddelta.data;
  p.dz = is_given(a.in.z) ? a.dz.data : nullptr;
  p.dinit = is_given(a.dinitial_state) ? a.dinitial_state.data : nullptr;
  dispatch_value(SupportedDState{}, static_cast<int>(s.d_state), "selective_scan d_state (CUDA)",
                 [&](auto nc) { scan_detail::launch_bwd<T, decltype(nc)::value>(p, a, stream); });
}

}  // namespace mambatrack::cuda
