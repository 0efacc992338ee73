// CUDA embedding (see ops/embedding.hpp): gather y[t] = table[ids[t]]; backward scatter-add
// without atomics: the (id, token) pairs are radix-sorted by id with CUB (stable, so each id's
// tokens stay in token order), and the first position of each run of equal ids owns that table
// row, summing its tokens' dy in order — deterministic. Ids are checked on the device; an id
// outside [0, vocab) is a ShapeError naming the token, the id and the vocabulary (one sync).
#pragma once

#include <cub/device/device_radix_sort.cuh>

#include "mambatrack/ops/cuda/common.cuh"
#include "mambatrack/ops/embedding.hpp"

namespace mambatrack::cuda {

namespace detail {

// *bad = the smallest token position whose id is outside [0, vocab) (integer atomic: exact).
template <int kUnused = 0>
__global__ void check_ids_kernel(const int64_t* __restrict__ ids, int64_t n, int64_t vocab,
                                        unsigned long long* __restrict__ bad) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x)
    if (ids[t] < 0 || ids[t] >= vocab) atomicMin(bad, static_cast<unsigned long long>(t));
}

// Throws ShapeError at the first id outside [0, vocab). Synchronises the stream.
inline void check_ids_device(const int64_t* ids, int64_t n, int64_t vocab, const char* op, CudaContext& ctx) {
  if (n == 0) return;
  auto* bad = ctx.scratch_as<unsigned long long>(1, 2);
  const unsigned long long none = ~0ull;
  MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(bad, &none, sizeof(none), cudaMemcpyHostToDevice, ctx.stream()));
  check_ids_kernel<><<<grid_for(n, 256, 4096), 256, 0, ctx.stream()>>>(ids, n, vocab, bad);
  check_launch(op);
  unsigned long long pos = 0;
  MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(&pos, bad, sizeof(pos), cudaMemcpyDeviceToHost, ctx.stream()));
  MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
  if (pos == none) return;
  int64_t id = 0;
  MAMBATRACK_CUDA_CHECK(cudaMemcpy(&id, ids + pos, sizeof(id), cudaMemcpyDeviceToHost));
  MAMBATRACK_CHECK_SHAPE(false, op, ": token ", pos, " has id ", id, ", outside the vocabulary [0, ", vocab, ")");
}

template <class T>
__global__ void embedding_gather_kernel(const int64_t* __restrict__ ids, const T* __restrict__ table,
                                        T* __restrict__ y, int64_t n, int64_t d) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n * d;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / d, c = i - t * d;
    y[i] = table[ids[t] * d + c];
  }
}

template <int kUnused = 0>
__global__ void iota_kernel(int32_t* v, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    v[i] = static_cast<int32_t>(i);
}

// Block i (one sorted position) owns the row of sorted_ids[i] when it starts a run.
template <class T>
__global__ void embedding_scatter_kernel(const int64_t* __restrict__ sorted_ids, const int32_t* __restrict__ tokens,
                                         const T* __restrict__ dy, T* __restrict__ dtable, int64_t n, int64_t d,
                                         int64_t padding_idx) {
  const int64_t i = blockIdx.x;
  const int64_t id = sorted_ids[i];
  if ((i > 0 && sorted_ids[i - 1] == id) || id == padding_idx) return;
  int64_t end = i + 1;
  while (end < n && sorted_ids[end] == id) ++end;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float s = 0;
    for (int64_t j = i; j < end; ++j) s += to_f(dy[static_cast<int64_t>(tokens[j]) * d + c]);
    T* dst = dtable + id * d + c;
    *dst = from_f<T>(to_f(*dst) + s);
  }
}

}  // namespace detail

// check_ids: range-check the ids on the device first (one stream sync; an id out of range is a
// ShapeError naming it). false: no sync (graph-capturable); the caller has validated the ids.
template <class T>
void embedding_fwd(const EmbeddingFwdArgs<T, Cuda>& a, CudaContext& ctx, bool check_ids = true) {
  a.check();
  const int64_t n = a.tokens(), d = a.dim();
  if (check_ids) detail::check_ids_device(a.ids.data, n, a.vocab(), "embedding", ctx);
  if (n * d == 0) return;
  detail::embedding_gather_kernel<T><<<detail::grid_for(n * d, 256), 256, 0, ctx.stream()>>>(a.ids.data, a.table.data,
                                                                                            a.y.data, n, d);
  detail::check_launch("embedding");
}

template <class T>
void embedding_bwd(const EmbeddingBwdArgs<T, Cuda>& a, CudaContext& ctx, bool check_ids = true) {
  a.check();
  const int64_t n = a.tokens(), d = a.dim(), vocab = a.vocab();
  if (check_ids) detail::check_ids_device(a.ids.data, n, vocab, "embedding backward", ctx);
  if (n == 0 || d == 0) return;
  MAMBATRACK_CHECK_SHAPE(n < (int64_t(1) << 31), "embedding backward: ", n, " tokens exceed the 2^31 limit");
  cudaStream_t s = ctx.stream();
  // slot 0: sorted ids (n int64), token indices in and out (2n int32)
  auto* base = ctx.scratch_as<int64_t>(static_cast<std::size_t>(2 * n), 0);
  int64_t* sorted = base;
  int32_t* tok_in = reinterpret_cast<int32_t*>(base + n);
  int32_t* tok_out = tok_in + n;
  detail::iota_kernel<><<<detail::grid_for(n, 256), 256, 0, s>>>(tok_in, n);
  int end_bit = 1;
  while (end_bit < 63 && (int64_t(1) << end_bit) < vocab) ++end_bit;
  std::size_t temp_bytes = 0;
  MAMBATRACK_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, a.ids.data, sorted, tok_in, tok_out,
                                                        static_cast<int>(n), 0, end_bit, s));
  void* temp = ctx.scratch(temp_bytes, 1);
  MAMBATRACK_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, a.ids.data, sorted, tok_in, tok_out,
                                                        static_cast<int>(n), 0, end_bit, s));
  const int threads = static_cast<int>(std::min<int64_t>(256, ((d + 31) / 32) * 32));
  detail::embedding_scatter_kernel<T><<<static_cast<unsigned>(n), threads, 0, s>>>(sorted, tok_out, a.dy.data,
                                                                                   a.dtable.data, n, d, a.padding_idx);
  detail::check_launch("embedding backward");
}

}  // namespace mambatrack::cuda
