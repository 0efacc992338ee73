// nn::CudaBackend: the Backend policy (DESIGN.md §4) that runs the nn/ layer templates on a CUDA
// device in float32: Scalar float, Device Cuda, Store CudaParameterStore. nn::CudaBf16Backend is
// the same with bfloat16 activations and weights (Scalar bfloat16) over a CudaMixedParameterStore:
// fp32 master weights and gradients, bf16 copies for the layers (mixed precision). Each static function
// has the name of the host backends' (nn/cpu_backend.hpp, ssm_backend.hpp, mamba2_backend.hpp)
// and forwards to mambatrack::cuda:: (cuBLASLt linear, norms, activations, embedding, losses,
// causal_conv1d, selective_scan, ssd, gated_rmsnorm) or to nn/cuda_kernels.cuh, all on the one context()
// (nn/cuda_backend_context.cuh). Ops do not synchronise or allocate in the steady state, except
// embedding_fwd/bwd (id check, one sync; off with set_check_ids(false)), cross_entropy/masked_mse
// (loss read back) and to_host.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "mambatrack/core/cuda_context.cuh"
#include "mambatrack/core/cuda_memory.cuh"
#include "mambatrack/core/error.hpp"
#include "mambatrack/core/tensor.hpp"
#include "mambatrack/nn/cuda_backend_context.cuh"
#include "mambatrack/nn/cuda_graph.cuh"
#include "mambatrack/nn/cuda_kernels.cuh"
#include "mambatrack/nn/cuda_mixed_parameter_store.cuh"
#include "mambatrack/nn/cuda_parameter_store.cuh"
#include "mambatrack/nn/cuda_staging.cuh"
#include "mambatrack/ops/activations.hpp"
#include "mambatrack/ops/causal_conv1d.hpp"
#include "mambatrack/ops/cuda/activations.cuh"
#include "mambatrack/ops/cuda/causal_conv1d.cuh"
#include "mambatrack/ops/cuda/embedding.cuh"
#include "mambatrack/ops/cuda/linear.cuh"
#include "mambatrack/ops/cuda/losses.cuh"
#include "mambatrack/ops/cuda/norm.cuh"
#include "mambatrack/ops/cuda/gated_rmsnorm.cuh"
#include "mambatrack/ops/cuda/selective_scan.cuh"
#include "mambatrack/ops/cuda/ssd.cuh"
#include "mambatrack/ops/embedding.hpp"
#include "mambatrack/ops/linear.hpp"
#include "mambatrack/ops/losses.hpp"
#include "mambatrack/ops/norm.hpp"
#include "mambatrack/ops/selective_scan.hpp"

namespace mambatrack::nn {

// Use in a training step (the layers are the same templates as on the CPU):
//   CudaParameterStore store;  model.register_params(store);  store.finalize();
//   model.init(store.host(), seed);  store.upload();            // init always runs on the host
//   CudaBackend::to_device(ids_host, ids_dev); ...              // cu_seqlens validated on the host first
//   store.zero_grad();  forward/backward;  optimizer on store.values()/grads();  store.download() to save.
namespace cuda_backend_detail {
// Whether embedding ids are range-checked on the device: one switch for every storage type.
inline bool& check_ids_flag() {
  static bool on = true;
  return on;
}
inline mambatrack::cuda::GemmCompute& gemm_compute() {
  static mambatrack::cuda::GemmCompute c = mambatrack::cuda::GemmCompute::kFp32;
  return c;
}
template <class S>
struct StoreOf {
  using type = CudaParameterStore;
};
template <>
struct StoreOf<bfloat16> {
  using type = CudaMixedParameterStore;
};
}  // namespace cuda_backend_detail

// S: the storage type of activations and of the weights the layers see (float or bfloat16); the
// ops compute in float either way.
template <class S>
struct CudaBackendT {
  static_assert(std::is_same_v<S, float> || std::is_same_v<S, bfloat16>, "CudaBackendT: float or bfloat16");
  using Scalar = S;
  using Device = Cuda;
  using Store = typename cuda_backend_detail::StoreOf<S>::type;
  static constexpr const char* kName = std::is_same_v<S, float> ? "cuda" : "cuda-bf16";
  template <class U>
  using DView = View<U, Cuda>;
  using T = S;
  // The selective scan's chunk between saved states (MambaOptions::scan_chunk = 0): the tiled
  // CUDA backward runs for chunks up to 16; 12 measured best over the issue's three problems.
  static constexpr int64_t kScanChunk = 12;

  static CudaContext& context() { return cuda_backend_context(); }
  static cudaStream_t stream() { return context().stream(); }
  // Waits for every op queued on the backend stream.
  static void synchronize() { MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(stream())); }

  // ---- ops/ forwards --------------------------------------------------------------------------
  // GEMMs of float storage: fp32 (default) or tf32 tensor cores (set_gemm_compute(kTf32));
  // bfloat16 storage always runs bf16 tensor cores with fp32 accumulation.
  static void set_gemm_compute(mambatrack::cuda::GemmCompute c) { cuda_backend_detail::gemm_compute() = c; }
  static void linear_fwd(const LinearFwdArgs<T, Cuda>& a) {
    if constexpr (std::is_same_v<T, float>) mambatrack::cuda::linear_fwd(a, context(), cuda_backend_detail::gemm_compute());
    else mambatrack::cuda::linear_fwd(a, context());
  }
  static void linear_bwd(const LinearBwdArgs<T, Cuda>& a) {
    if constexpr (std::is_same_v<T, float>) mambatrack::cuda::linear_bwd(a, context(), cuda_backend_detail::gemm_compute());
    else mambatrack::cuda::linear_bwd(a, context());
  }
  static void norm_fwd(const NormFwdArgs<T, Cuda>& a) { mambatrack::cuda::norm_fwd(a, stream()); }
  static void norm_bwd(const NormBwdArgs<T, Cuda>& a) { mambatrack::cuda::norm_bwd(a, context()); }
  static void add_norm_fwd(const AddNormFwdArgs<T, Cuda>& a) { mambatrack::cuda::add_norm_fwd(a, stream()); }
  static void add_norm_bwd(const AddNormBwdArgs<T, Cuda>& a) { mambatrack::cuda::add_norm_bwd(a, context()); }
  // Embedding (and GatherRows, PositionEmbedding, which run on it). By default the ids are
  // range-checked on the device, one stream sync per call (an id out of range is a ShapeError
  // naming the token). set_check_ids(false) skips the check: no sync, CUDA-graph capturable, and
  // an id outside [0, vocab) then reads/writes out of bounds — validate the ids on the host.
  static void set_check_ids(bool on) { cuda_backend_detail::check_ids_flag() = on; }
  static bool check_ids() { return cuda_backend_detail::check_ids_flag(); }

  // ---- CUDA graphs (train/graph_mode.hpp) ------------------------------------------------------
  // Graph: a captured sequence of ops on the backend stream. capture() records what f() queues
  // (nothing runs); launch() replays it with whatever the captured buffers hold at that point.
  using Graph = CudaGraph;
  template <class F>
  static void capture(Graph& g, F&& f) {
    g.capture(stream(), std::forward<F>(f));
  }
  static void launch(const Graph& g) { g.launch(stream()); }
  // Capture cannot record the legacy default stream: moves the backend onto a stream of its own
  // (created once, blocking, so legacy-stream copies elsewhere still order with it). Between steps.
  static void use_capture_stream() {
    static cudaStream_t s = [] {
      cudaStream_t t = nullptr;
      MAMBATRACK_CUDA_CHECK(cudaStreamCreate(&t));
      return t;
    }();
    if (stream() != s) set_cuda_backend_stream(s);
  }
  // Added to every dropout mask's step, read on the device when the mask is drawn (queued; 0 by
  // default): a graph captured with the layers at step 0 draws step v's masks after this.
  static void set_dropout_step_offset(uint64_t v) {
    cuda_kernels::set_u64_kernel<><<<1, 1, 0, stream()>>>(dropout_step_offset(), v);
    cuda_kernels::check("set_dropout_step_offset");
  }
  static void embedding_fwd(const EmbeddingFwdArgs<T, Cuda>& a) {
    mambatrack::cuda::embedding_fwd(a, context(), check_ids());
  }
  static void embedding_bwd(const EmbeddingBwdArgs<T, Cuda>& a) {
    mambatrack::cuda::embedding_bwd(a, context(), check_ids());
  }
  static void gelu_fwd(const ActivationFwdArgs<T, Cuda>& a) { mambatrack::cuda::gelu_fwd(a, stream()); }
  static void gelu_bwd(const ActivationBwdArgs<T, Cuda>& a) { mambatrack::cuda::gelu_bwd(a, stream()); }
  static void silu_fwd(const ActivationFwdArgs<T, Cuda>& a) { mambatrack::cuda::silu_fwd(a, stream()); }
  static void silu_bwd(const ActivationBwdArgs<T, Cuda>& a) { mambatrack::cuda::silu_bwd(a, stream()); }
  static void causal_conv1d_fwd(const CausalConv1dFwdArgs<T, Cuda>& a) {
    mambatrack::cuda::causal_conv1d_fwd(a, stream());
  }
  static void causal_conv1d_bwd(const CausalConv1dBwdArgs<T, Cuda>& a) {
    mambatrack::cuda::causal_conv1d_bwd(a, stream());
  }
  static void selective_scan_fwd(const SelectiveScanFwdArgs<T, Cuda>& a) {
    mambatrack::cuda::selective_scan_fwd(a, stream());
  }
  static void selective_scan_bwd(const SelectiveScanBwdArgs<T, Cuda>& a) {
    mambatrack::cuda::selective_scan_bwd(a, stream());
  }
  // Mamba2: the chunked SSD scan and the gated grouped RMSNorm.
  static void ssd_fwd(const SsdFwdArgs<T, Cuda>& a) { mambatrack::cuda::ssd_fwd(a, stream()); }
  static void ssd_bwd(const SsdBwdArgs<T, Cuda>& a) { mambatrack::cuda::ssd_bwd(a, stream()); }
  static void gated_rmsnorm_fwd(const GatedRmsNormFwdArgs<T, Cuda>& a) {
    mambatrack::cuda::gated_rmsnorm_fwd(a, stream());
  }
  static void gated_rmsnorm_bwd(const GatedRmsNormBwdArgs<T, Cuda>& a) {
    mambatrack::cuda::gated_rmsnorm_bwd(a, stream());
  }

  // ---- elementwise and sequence helpers (nn/host_kernels.hpp on the host) ---------------------
  static void add(DView<const T> a, DView<const T> b, DView<T> out) {
    MAMBATRACK_CHECK_SHAPE(a.numel() == b.numel() && a.numel() == out.numel(), "add: ", a.shape, " + ", b.shape, " -> ",
                           out.shape);
    elementwise<cuda_kernels::Elementwise::kAdd>(a.data, b.data, out.data, out.numel(), "add");
  }
  static void accumulate(DView<const T> x, DView<T> y) {
    MAMBATRACK_CHECK_SHAPE(x.numel() == y.numel(), "accumulate: ", x.shape, " into ", y.shape);
    elementwise<cuda_kernels::Elementwise::kAccumulate>(x.data, x.data, y.data, y.numel(), "accumulate");
  }
  static void copy(DView<const T> x, DView<T> y) { mambatrack::copy<T>(x, y, stream()); }
  static void fill(DView<T> x, T v) {
    launch_n(x.numel(), "fill", [&](unsigned g) {
      cuda_kernels::fill_kernel<T><<<g, cuda_kernels::kThreads, 0, stream()>>>(x.data, v, x.numel());
    });
  }
  static void multiply(DView<const T> x, DView<const T> m, DView<T> y) {
    MAMBATRACK_CHECK_SHAPE(x.numel() == m.numel() && x.numel() == y.numel(), "multiply: ", x.shape, " · ", m.shape,
                           " -> ", y.shape);
    elementwise<cuda_kernels::Elementwise::kMultiply>(x.data, m.data, y.data, y.numel(), "multiply");
  }
  // Rows of each packed sequence in reverse order (its own inverse). cu_seqlens must be valid.
  static void reverse_within_sequences(DView<const T> x, DView<const int64_t> cu, DView<T> y) {
    MAMBATRACK_CHECK_SHAPE(x.shape == y.shape && x.rank() == 2, "reverse_within_sequences: x ", x.shape, ", y ", y.shape);
    MAMBATRACK_CHECK_SHAPE(x.data != y.data || x.numel() == 0, "reverse_within_sequences: x and y must not alias");
    MAMBATRACK_CHECK_SHAPE(cu.numel() >= 1, "reverse_within_sequences: cu_seqlens is empty");
    const int64_t n = x.dim(0), d = x.dim(1), batch = cu.numel() - 1;
    if (batch < 1) return;
    launch_n(n * d, "reverse_within_sequences", [&](unsigned g) {
      cuda_kernels::reverse_kernel<T><<<g, cuda_kernels::kThreads, 0, stream()>>>(x.data, cu.data, y.data, batch, n, d);
    });
  }
  static void sequence_positions(DView<const int64_t> cu, DView<int64_t> pos) {
    MAMBATRACK_CHECK_SHAPE(cu.numel() >= 1, "sequence_positions: cu_seqlens is empty");
    const int64_t batch = cu.numel() - 1, n = pos.numel();
    if (batch < 1) return;
    launch_n(n, "sequence_positions", [&](unsigned g) {
      cuda_kernels::positions_kernel<><<<g, cuda_kernels::kThreads, 0, stream()>>>(cu.data, pos.data, batch, n);
    });
  }
  // The same Philox (seed, stream, step·2^40 + i) draws as host::dropout_mask: identical masks.
  static void dropout_mask(uint64_t seed, uint64_t stream_id, uint64_t step, double p, DView<T> mask) {
    const T keep = static_cast<T>(1.0 / (1.0 - p));
    launch_n(mask.numel(), "dropout_mask", [&](unsigned g) {
      cuda_kernels::dropout_mask_kernel<T><<<g, cuda_kernels::kThreads, 0, stream()>>>(seed, stream_id, step << 40,
                                                                                       dropout_step_offset(), p,
                                                                                       keep, mask.data, mask.numel());
    });
  }
  static void mean_pool(DView<const T> x, DView<const int64_t> cu, DView<T> pooled) {
    const int64_t d = x.dim(1), b = cu.numel() - 1;
    MAMBATRACK_CHECK_SHAPE(pooled.rank() == 2 && pooled.dim(0) == b && pooled.dim(1) == d, "mean_pool: pooled is ",
                           pooled.shape, ", expected (", b, ", ", d, ")");
    launch_n(b * d, "mean_pool", [&](unsigned g) {
      cuda_kernels::mean_pool_kernel<T><<<g, cuda_kernels::kThreads, 0, stream()>>>(x.data, cu.data, pooled.data, b, d);
    });
  }
  static void mean_pool_bwd(DView<const T> dp, DView<const int64_t> cu, DView<T> dx) {
    const int64_t d = dx.dim(1), b = cu.numel() - 1, n = dx.dim(0);
    MAMBATRACK_CHECK_SHAPE(dp.rank() == 2 && dp.dim(0) == b && dp.dim(1) == d, "mean_pool_bwd: dpooled is ", dp.shape,
                           ", expected (", b, ", ", d, ")");
    if (b < 1) return;
    launch_n(n * d, "mean_pool_bwd", [&](unsigned g) {
      cuda_kernels::mean_pool_bwd_kernel<T><<<g, cuda_kernels::kThreads, 0, stream()>>>(dp.data, cu.data, dx.data, b, n, d);
    });
  }
  static void copy_columns(DView<const T> x, DView<T> out, int64_t offset) {
    const int64_t n = x.dim(0), w = x.dim(1), W = out.dim(1);
    MAMBATRACK_CHECK_SHAPE(out.dim(0) == n && offset >= 0 && offset + w <= W, "copy_columns: ", x.shape, " into ",
                           out.shape, " at ", offset);
    columns<false>(x.data, out.data, n, w, W, offset, "copy_columns");
  }
  static void take_columns(DView<const T> x, DView<T> out, int64_t offset) {
    const int64_t n = out.dim(0), w = out.dim(1), W = x.dim(1);
    MAMBATRACK_CHECK_SHAPE(x.dim(0) == n && offset >= 0 && offset + w <= W, "take_columns: ", out.shape, " from ",
                           x.shape, " at ", offset);
    columns<true>(x.data, out.data, n, w, W, offset, "take_columns");
  }
  static void transpose(DView<const T> a, DView<T> at) {
    const int64_t r = a.dim(0), c = a.dim(1);
    MAMBATRACK_CHECK_SHAPE(at.rank() == 2 && at.dim(0) == c && at.dim(1) == r, "transpose: ", a.shape, " into ", at.shape);
    launch_n(r * c, "transpose", [&](unsigned g) {
      cuda_kernels::transpose_kernel<T><<<g, cuda_kernels::kThreads, 0, stream()>>>(a.data, at.data, r, c);
    });
  }

  // ---- the A = −exp(A_log) parameterisation (Mamba and Mamba2) ---------------------------------
  static void neg_exp(DView<const T> a_log, DView<T> a) {
    MAMBATRACK_CHECK_SHAPE(a_log.numel() == a.numel(), "neg_exp: ", a_log.shape, " -> ", a.shape);
    launch_n(a.numel(), "neg_exp", [&](unsigned g) {
      cuda_kernels::neg_exp_kernel<T><<<g, cuda_kernels::kThreads, 0, stream()>>>(a_log.data, a.data, a.numel());
    });
  }
  // y += x ⊙ m.
  static void mul_accumulate(DView<const T> x, DView<const T> m, DView<T> y) {
    MAMBATRACK_CHECK_SHAPE(x.numel() == m.numel() && x.numel() == y.numel(), "mul_accumulate: ", x.shape, " · ",
                           m.shape, " into ", y.shape);
    elementwise<cuda_kernels::Elementwise::kMulAccumulate>(x.data, m.data, y.data, y.numel(), "mul_accumulate");
  }
  static void mamba2_neg_exp(DView<const T> a_log, DView<T> a) { neg_exp(a_log, a); }
  // da_log += da ⊙ a.
  static void mamba2_a_log_grad(DView<const T> da, DView<const T> a, DView<T> da_log) { mul_accumulate(da, a, da_log); }

  // ---- task-level ops -------------------------------------------------------------------------
  // out[i] = x[idx[i]] (whole rows). An index outside [0, rows) gives a zero row (not checked on
  // the host: that would need a sync).
  static void gather_rows(DView<const T> x, DView<const int64_t> idx, DView<T> out) { gather<T>(x, idx, out); }
  static void gather_rows(DView<const int64_t> x, DView<const int64_t> idx, DView<int64_t> out) {
    gather<int64_t>(x, idx, out);
  }
  // out[idx[i]] += src[i] (whole rows); the indices must be distinct (one writer per element).
  static void scatter_add_rows(DView<const T> src, DView<const int64_t> idx, DView<T> out) {
    const int64_t rows = out.rank() == 0 ? 0 : out.dim(0), w = width(out), m = idx.numel();
    MAMBATRACK_CHECK_SHAPE(src.numel() == m * w, "scatter_add_rows: ", src.shape, " with ", m, " indices into rows of ",
                           out.shape);
    launch_n(m * w, "scatter_add_rows", [&](unsigned g) {
      cuda_kernels::scatter_add_rows_kernel<T><<<g, cuda_kernels::kThreads, 0, stream()>>>(src.data, idx.data, out.data,
                                                                                           m, w, rows);
    });
  }
  // out[r] = the first column of row r holding its maximum.
  static void argmax_rows(DView<const T> x, DView<int64_t> out) {
    const int64_t n = x.rank() == 0 ? 0 : x.dim(0), w = width(x);
    MAMBATRACK_CHECK_SHAPE(out.numel() == n && w >= 1, "argmax_rows: ", x.shape, " into ", out.shape);
    launch_n(n, "argmax_rows", [&](unsigned g) {
      cuda_kernels::argmax_rows_kernel<T><<<g, cuda_kernels::kThreads, 0, stream()>>>(x.data, out.data, n, w);
    });
  }
  // out[0] = the rows whose label (not ignore_index) is the first column holding the row's maximum
  // (an accuracy count left on the device: no synchronisation).
  static void count_correct(DView<const T> logits, DView<const int64_t> labels, int64_t ignore_index,
                            DView<double> out) {
    const int64_t n = logits.rank() == 0 ? 0 : logits.dim(0), w = width(logits);
    MAMBATRACK_CHECK_SHAPE(labels.numel() == n && out.numel() == 1 && out.data && (n == 0 || w >= 1),
                           "count_correct: logits ", logits.shape, ", labels ", labels.shape, ", out ", out.shape,
                           out.data ? "" : " (no buffer)");
    auto* count = context().template scratch_as<unsigned long long>(1, 3);
    MAMBATRACK_CUDA_CHECK(cudaMemsetAsync(count, 0, sizeof(*count), stream()));
    if (n > 0) {
      const auto blocks = static_cast<unsigned>((n * 32 + cuda_kernels::kThreads - 1) / cuda_kernels::kThreads);
      cuda_kernels::count_correct_kernel<T>
          <<<blocks, cuda_kernels::kThreads, 0, stream()>>>(logits.data, labels.data, n, w, ignore_index, count);
    }
    cuda_kernels::u64_to_double_kernel<><<<1, 1, 0, stream()>>>(count, out.data);
    cuda_kernels::check("count_correct");
  }
  // Small double buffers of results left on the device (the tasks' deferred statistics).
  // (A default view has a rank-0 shape, numel 1, and no data: such views must not be used here.)
  static void fill_zero(DView<double> x) {
    MAMBATRACK_CHECK_SHAPE(x.data || x.numel() == 0, "fill_zero: ", x.shape, " has no buffer");
    if (x.data && x.numel() > 0) MAMBATRACK_CUDA_CHECK(cudaMemsetAsync(x.data, 0, x.bytes(), stream()));
  }
  static void copy(DView<const double> x, DView<double> y) {
    MAMBATRACK_CHECK_SHAPE(x.numel() == y.numel() && (x.data || x.numel() == 0) && (y.data || y.numel() == 0),
                           "copy: ", x.shape, " into ", y.shape, " (a view without a buffer)");
    if (x.data && x.numel() > 0)
      MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(y.data, x.data, x.bytes(), cudaMemcpyDeviceToDevice, stream()));
  }
  static void to_host(DView<const double> src, View<double, Host> dst) { d2h<double>(src, dst); }
  // Without CrossEntropyArgs::result the loss value is read back to the host: these synchronise.
  static LossResult cross_entropy(const CrossEntropyArgs<T, Cuda>& a) {
    return mambatrack::cuda::cross_entropy(a, context());
  }
  static LossResult masked_mse(const MaskedMseArgs<T, Cuda>& a) { return mambatrack::cuda::masked_mse(a, context()); }

  // Host -> device, queued on the backend stream without waiting for it: the bytes go through the
  // pinned staging ring (nn/cuda_staging.cuh), so the host buffer may change as soon as this returns.
  static void to_device(View<const float, Host> src, DView<float> dst) { h2d<float>(src, dst); }
  static void to_device(View<const int64_t, Host> src, DView<int64_t> dst) { h2d<int64_t>(src, dst); }
  static void to_device(View<const uint8_t, Host> src, DView<uint8_t> dst) { h2d<uint8_t>(src, dst); }
  static void to_device(View<const bfloat16, Host> src, DView<bfloat16> dst) { h2d<bfloat16>(src, dst); }
  // Device -> host, after every op queued before it (synchronises).
  static void to_host(DView<const float> src, View<float, Host> dst) { d2h<float>(src, dst); }
  static void to_host(DView<const int64_t> src, View<int64_t, Host> dst) { d2h<int64_t>(src, dst); }
  static void to_host(DView<const uint8_t> src, View<uint8_t, Host> dst) { d2h<uint8_t>(src, dst); }
  static void to_host(DView<const bfloat16> src, View<bfloat16, Host> dst) { d2h<bfloat16>(src, dst); }

 private:
  static uint64_t* dropout_step_offset() {
    static uint64_t* p = [] {
      void* q = nullptr;
      MAMBATRACK_CUDA_CHECK(cudaMalloc(&q, sizeof(uint64_t)));  // process lifetime, outside the cache
      MAMBATRACK_CUDA_CHECK(cudaMemsetAsync(q, 0, sizeof(uint64_t), stream()));
      return static_cast<uint64_t*>(q);
    }();
    return p;
  }
  template <class F>
  static void launch_n(int64_t n, const char* what, F&& f) {
    if (n <= 0) return;
    f(cuda_kernels::grid(n));
    cuda_kernels::check(what);
  }
  // y = op(a, b, y) elementwise: 16-byte accesses when every pointer allows them.
  template <cuda_kernels::Elementwise op>
  static void elementwise(const T* a, const T* b, T* y, int64_t n, const char* what) {
    namespace K = cuda_kernels;
    namespace pk = mambatrack::cuda::detail;
    const bool vector = pk::all_aligned(16, {a, b, y});
    launch_n(vector ? (n + pk::kPack16<T> - 1) / pk::kPack16<T> : n, what, [&](unsigned g) {
      if (vector) K::elementwise_kernel<T, op, true><<<g, K::kThreads, 0, stream()>>>(a, b, y, n);
      else K::elementwise_kernel<T, op, false><<<g, K::kThreads, 0, stream()>>>(a, b, y, n);
    });
  }
  // Column blocks (copy_columns, take_columns): in 16-byte units when the widths, the offset and
  // both pointers allow, with a 32-bit index when every index (below n·W) fits.
  template <bool kTake>
  static void columns(const T* x, T* out, int64_t n, int64_t w, int64_t W, int64_t off, const char* what) {
    namespace K = cuda_kernels;
    constexpr int64_t V = mambatrack::cuda::detail::kPack16<T>;
    const bool vector = mambatrack::cuda::detail::all_aligned(16, {x, out}) && w % V == 0 && W % V == 0 && off % V == 0;
    const int64_t u = vector ? V : 1, total = n * (w / u);
    const bool narrow = total < (int64_t{1} << 31) && n * (W / u) < (int64_t{1} << 31);
    launch_n(total, what, [&](unsigned g) {
      const auto go = [&](auto* xs, auto* outs, auto idx) {
        using I = decltype(idx);
        K::columns_kernel<std::remove_const_t<std::remove_pointer_t<decltype(xs)>>, I, kTake>
            <<<g, K::kThreads, 0, stream()>>>(xs, outs, static_cast<I>(n), static_cast<I>(w / u), static_cast<I>(W / u),
                                              static_cast<I>(off / u));
      };
      if (vector) {
        const auto* xs = reinterpret_cast<const uint4*>(x);
        auto* outs = reinterpret_cast<uint4*>(out);
        narrow ? go(xs, outs, uint32_t{0}) : go(xs, outs, int64_t{0});
      } else {
        narrow ? go(x, out, uint32_t{0}) : go(x, out, int64_t{0});
      }
    });
  }
  template <class V>
  static int64_t width(const V& x) {
    return x.rank() <= 1 ? 1 : (x.dim(0) == 0 ? 0 : x.numel() / x.dim(0));
  }
  template <class U>
  static void gather(DView<const U> x, DView<const int64_t> idx, DView<U> out) {
    const int64_t rows = x.rank() == 0 ? 0 : x.dim(0), w = width(x), m = idx.numel();
    MAMBATRACK_CHECK_SHAPE(out.numel() == m * w, "gather_rows: ", m, " indices of rows of ", x.shape, " into ",
                           out.shape);
    launch_n(m * w, "gather_rows", [&](unsigned g) {
      cuda_kernels::gather_rows_kernel<U><<<g, cuda_kernels::kThreads, 0, stream()>>>(x.data, idx.data, out.data, m, w,
                                                                                      rows);
    });
  }
  template <class U>
  static void h2d(View<const U, Host> src, DView<U> dst) {
    MAMBATRACK_CHECK_SHAPE(src.numel() == dst.numel(), "to_device: ", src.shape, " into ", dst.shape);
    if (src.numel() == 0) return;
    cuda_pinned_staging().copy_to_device(dst.data, src.data, src.bytes(), stream());
  }
  template <class U>
  static void d2h(DView<const U> src, View<U, Host> dst) {
    MAMBATRACK_CHECK_SHAPE(src.numel() == dst.numel(), "to_host: ", src.shape, " into ", dst.shape);
    if (src.numel() == 0) return;
    MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, src.bytes(), cudaMemcpyDeviceToHost, stream()));
    MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(stream()));
  }
};

using CudaBackend = CudaBackendT<float>;
using CudaBf16Backend = CudaBackendT<bfloat16>;

}  // namespace mambatrack::nn
