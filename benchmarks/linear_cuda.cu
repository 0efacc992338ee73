// CUDA Linear forward + backward (y = x·Wᵀ + b; dx, dW +=, db +=) through cuBLASLt at the
// MAMBA-PT (40960 tokens, 64→256) and FM4NPP (8·8192 tokens, 256→1024) sizes, fp32 (fp32 and
// tf32 compute) and bf16. Prints the minimum FLOPs (3 GEMMs, 6·n·in·out) and bytes, the median
// time (CUDA events, after warm-up), TFLOP/s, GB/s and the fractions of the measured bf16 GEMM
// rate and of the device-to-device copy bandwidth.
#include <cstdio>

#include "cuda_bench_util.cuh"

namespace {
using namespace mambatrack;
namespace mc = mambatrack::cuda;

template <class T>
void run(const char* label, int64_t n, int64_t in, int64_t out, mc::GemmCompute compute, double gemm_rate,
         double copy_bw) {
  CudaContext ctx;
  Tensor<T, Cuda> x({n, in}), w({out, in}), b({out}), y({n, out}), dy({n, out}), dx({n, in}), dw({out, in}), db({out});
  uint64_t seed = 1;
  for (auto* t : {&x, &w, &b, &dy}) bench::fill_uniform(t->data(), t->numel(), seed++);
  for (auto* t : {&dw, &db}) MAMBATRACK_CUDA_CHECK(cudaMemset(t->data(), 0, t->bytes()));
  LinearFwdArgs<T, Cuda> fa{x.view(), w.view(), b.view(), y.view()};
  LinearBwdArgs<T, Cuda> ba{x.view(), w.view(), dy.view(), dx.view(), dw.view(), db.view()};
  auto fwd = [&] {
    if constexpr (std::is_same_v<T, float>) mc::linear_fwd(fa, ctx, compute);
    else mc::linear_fwd(fa, ctx);
  };
  auto bwd = [&] {
    if constexpr (std::is_same_v<T, float>) mc::linear_bwd(ba, ctx, compute);
    else mc::linear_bwd(ba, ctx);
  };
  const double tf = bench::cuda_median_seconds(fwd, ctx.stream());
  const double tb = bench::cuda_median_seconds(bwd, ctx.stream());
  const double t = tf + tb;
  // backward breakdown: dx alone, dW alone, db alone
  LinearBwdArgs<T, Cuda> only_dx{x.view(), w.view(), dy.view(), dx.view(), {}, {}};
  LinearBwdArgs<T, Cuda> only_dw{x.view(), w.view(), dy.view(), {}, dw.view(), {}};
  LinearBwdArgs<T, Cuda> only_db{x.view(), w.view(), dy.view(), {}, {}, db.view()};
  double tparts[3];
  int k = 0;
  for (const auto* args : {&only_dx, &only_dw, &only_db}) {
    tparts[k++] = bench::cuda_median_seconds(
        [&] {
          if constexpr (std::is_same_v<T, float>) mc::linear_bwd(*args, ctx, compute);
          else mc::linear_bwd(*args, ctx);
        },
        ctx.stream());
  }
  const double flops = 6.0 * n * in * out;
  // forward: x, W, b read, y written; backward: x, dy, W read, dx written, dW and db read+written
  const double bytes = sizeof(T) * (double(n * in + out * in + out + n * out) +
                                    double(n * in + n * out + out * in + n * in + 2 * out * in + 2 * out));
  std::printf("%-26s %6lld x %4lld -> %4lld | fwd %8.1f us  bwd %8.1f us  total %8.1f us | %6.1f TFLOP/s"
              " (%5.1f%% of bf16 GEMM) | %6.0f GB/s (%5.1f%% of copy)\n",
              label, static_cast<long long>(n), static_cast<long long>(in), static_cast<long long>(out), tf * 1e6,
              tb * 1e6, t * 1e6, flops / t * 1e-12, 100.0 * flops / t / gemm_rate, bytes / t * 1e-9,
              100.0 * bytes / t / copy_bw);
  std::printf("%-26s   backward alone: dx %8.1f us, dW %8.1f us, db %8.1f us (db reads dy: %.0f GB/s)\n", "",
              tparts[0] * 1e6, tparts[1] * 1e6, tparts[2] * 1e6, sizeof(T) * double(n * out) / tparts[2] * 1e-9);
}
}  // namespace

int main() {
  if (cuda_device_count() == 0) {
    std::printf("linear_cuda: no CUDA device, skipped\n");
    return 0;
  }
  const double gemm = bench::cuda_bf16_gemm_rate(), bw = bench::cuda_copy_bandwidth();
  std::printf("ceilings: bf16 GEMM %.1f TFLOP/s, d2d copy %.1f GB/s\n", gemm * 1e-12, bw * 1e-9);
  std::printf("min FLOPs per fwd+bwd = 6*n*in*out (3 GEMMs)\n");
  struct Size {
    const char* name;
    int64_t n, in, out;
  };
  for (const Size& s : {Size{"MAMBA-PT", 40960, 64, 256}, Size{"FM4NPP", 8 * 8192, 256, 1024}}) {
    char label[64];
    std::snprintf(label, sizeof label, "%s fp32", s.name);
    run<float>(label, s.n, s.in, s.out, mc::GemmCompute::kFp32, gemm, bw);
    std::snprintf(label, sizeof label, "%s fp32 (tf32)", s.name);
    run<float>(label, s.n, s.in, s.out, mc::GemmCompute::kTf32, gemm, bw);
    std::snprintf(label, sizeof label, "%s bf16", s.name);
    run<bfloat16>(label, s.n, s.in, s.out, mc::GemmCompute::kFp32, gemm, bw);
  }
  return 0;
}
