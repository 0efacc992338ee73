// The memory-bound CUDA ops against the device-to-device copy bandwidth: fused residual-add +
// RMSNorm forward and backward, SiLU forward + backward, embedding gather + scatter-add,
// cross-entropy (loss + gradient), AdamW over a flat buffer, global-norm clipping. Prints the
// minimum bytes (each input read once, each output written once), the median time (CUDA
// events after warm-up), GB/s and the fraction of the measured copy bandwidth. Losses, embedding
// and clipping include their host synchronisation (label/id check, loss read-back).
#include <cstdio>

#include "cuda_bench_util.cuh"
#include "mambatrack/ops/cuda/ops.cuh"

namespace {
using namespace mambatrack;
namespace mc = mambatrack::cuda;

void report(const char* what, double bytes, double s, double bw) {
  std::printf("%-52s %9.1f MB %9.1f us %7.0f GB/s %5.1f%% of copy\n", what, bytes * 1e-6, s * 1e6, bytes / s * 1e-9,
              100.0 * bytes / s / bw);
}

template <class T>
void norm_bench(const char* dtype, int64_t n, int64_t d, double bw) {
  CudaContext ctx;
  Tensor<T, Cuda> x({n, d}), rin({n, d}), res({n, d}), y({n, d}), dy({n, d}), dres({n, d}), dsum({n, d}), w({d}), dw({d});
  uint64_t seed = 1;
  for (auto* t : {&x, &rin, &dy, &dres, &w}) bench::fill_uniform(t->data(), t->numel(), seed++);
  MAMBATRACK_CUDA_CHECK(cudaMemset(dw.data(), 0, dw.bytes()));
  AddNormFwdArgs<T, Cuda> fa{x.view(), rin.view(), w.view(), {}, res.view(), y.view(), NormKind::kRms, 1e-5};
  AddNormBwdArgs<T, Cuda> ba{res.view(), w.view(), dy.view(), dres.view(), dsum.view(), dw.view(), {}, NormKind::kRms, 1e-5};
  const double tf = bench::cuda_median_seconds([&] { mc::add_norm_fwd(fa, ctx.stream()); }, ctx.stream());
  const double tb = bench::cuda_median_seconds([&] { mc::add_norm_bwd(ba, ctx); }, ctx.stream());
  char label[96];
  std::snprintf(label, sizeof label, "add+rmsnorm fwd %s %lld x %lld", dtype, (long long)n, (long long)d);
  report(label, 4.0 * sizeof(T) * n * d, tf, bw);
  std::snprintf(label, sizeof label, "add+rmsnorm bwd (dsum, dw) %s %lld x %lld", dtype, (long long)n, (long long)d);
  report(label, 4.0 * sizeof(T) * n * d, tb, bw);
}

template <class T>
void silu_bench(const char* dtype, int64_t n, double bw) {
  Tensor<T, Cuda> x({n}), y({n}), dy({n}), dx({n});
  bench::fill_uniform(x.data(), n, 1);
  bench::fill_uniform(dy.data(), n, 2);
  const double tf = bench::cuda_median_seconds([&] { mc::silu_fwd<T>({x.view(), y.view()}); }, nullptr);
  const double tb = bench::cuda_median_seconds([&] { mc::silu_bwd<T>({x.view(), dy.view(), dx.view()}); }, nullptr);
  char label[96];
  std::snprintf(label, sizeof label, "silu fwd %s %lld", dtype, (long long)n);
  report(label, 2.0 * sizeof(T) * n, tf, bw);
  std::snprintf(label, sizeof label, "silu bwd %s %lld", dtype, (long long)n);
  report(label, 3.0 * sizeof(T) * n, tb, bw);
}

}  // namespace

int main() {
  if (cuda_device_count() == 0) {
    std::printf("small_ops_cuda: no CUDA device, skipped\n");
    return 0;
  }
  const double bw = bench::cuda_copy_bandwidth();
  std::printf("ceiling: d2d copy %.1f GB/s (read + write)\n", bw * 1e-9);
  norm_bench<float>("fp32", 40960, 256, bw);
  norm_bench<bfloat16>("bf16", 40960, 256, bw);
  norm_bench<bfloat16>("bf16", 65536, 256, bw);
  silu_bench<float>("fp32", 65536 * 512, bw);
  silu_bench<bfloat16>("bf16", 65536 * 512, bw);
  {
    CudaContext ctx;
    const int64_t n = 40960, vocab = 18728, d = 256;
    Tensor<int64_t> ids({n});
    Philox rng(5, 1);
    for (int64_t t = 0; t < n; ++t) ids[t] = static_cast<int64_t>(rng.below(vocab));
    auto gids = to_device<int64_t>(ids.view());
    Tensor<bfloat16, Cuda> table({vocab, d}), y({n, d}), dy({n, d}), dtable({vocab, d});
    bench::fill_uniform(table.data(), table.numel(), 1);
    bench::fill_uniform(dy.data(), dy.numel(), 2);
    MAMBATRACK_CUDA_CHECK(cudaMemset(dtable.data(), 0, dtable.bytes()));
    const double tf = bench::cuda_median_seconds(
        [&] { mc::embedding_fwd<bfloat16>({gids.view(), table.view(), y.view()}, ctx); }, ctx.stream());
    const double tb = bench::cuda_median_seconds(
        [&] { mc::embedding_bwd<bfloat16>({gids.view(), dy.view(), dtable.view()}, ctx); }, ctx.stream());
    report("embedding fwd bf16 40960 tokens, 18728 x 256", 2.0 * 2 * n * d + 8.0 * n, tf, bw);
    report("embedding bwd bf16 (sort + owned rows)", 2.0 * 2 * n * d + 8.0 * n, tb, bw);
  }
  {
    CudaContext ctx;
    const int64_t n = 40960, v = 1024;
    Tensor<int64_t> labels({n});
    Philox rng(6, 1);
    for (int64_t t = 0; t < n; ++t) labels[t] = rng.uniform() < 0.5 ? kIgnoreIndex : static_cast<int64_t>(rng.below(v));
    auto gl = to_device<int64_t>(labels.view());
    Tensor<float, Cuda> z({n, v}), g({n, v});
    bench::fill_uniform(z.data(), z.numel(), 3, -4, 4);
    CrossEntropyArgs<float, Cuda> a{z.view(), gl.view(), g.view()};
    a.label_smoothing = 0.1;
    const double t = bench::cuda_median_seconds([&] { mc::cross_entropy(a, ctx); }, ctx.stream());
    report("cross_entropy fp32 40960 x 1024 (loss + dlogits)", 8.0 * n * v + 8.0 * n, t, bw);
  }
  {
    CudaContext ctx;
    const int64_t n = 10'000'000;
    Tensor<float, Cuda> p({n}), g({n}), m({n}), v({n});
    bench::fill_uniform(p.data(), n, 1);
    bench::fill_uniform(g.data(), n, 2, -0.01f, 0.01f);
    MAMBATRACK_CUDA_CHECK(cudaMemset(m.data(), 0, m.bytes()));
    MAMBATRACK_CUDA_CHECK(cudaMemset(v.data(), 0, v.bytes()));
    optim::AdamWArgs<float, Cuda> a{p.view(), g.view(), m.view(), v.view(), 1, {}, {{0, 1000}, {500000, 600000}}};
    const double t = bench::cuda_median_seconds([&] { mc::adamw_step(a, ctx); }, ctx.stream());
    report("adamw fp32 10M parameters", 4.0 * 7 * n, t, bw);
    const double tc = bench::cuda_median_seconds([&] { mc::clip_grad_norm(g.view(), 1e9, ctx); }, ctx.stream());
    report("grad norm fp32 10M (no scaling needed)", 4.0 * n, tc, bw);
  }
  return 0;
}
