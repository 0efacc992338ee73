// Whole mixer layers on the GPU through nn::CudaBackend (fp32 activations, cuBLASLt fp32 GEMMs)
// and nn::CudaBf16Backend (mixed precision: bf16 activations and weight copies, bf16 GEMMs with
// fp32 accumulation, fp32 scan state): the Mamba2 layer of the CUDA issue (d_model 256, d_state 128, headdim 64, expand 2, batch
// 8 × 8192 tokens) and Mamba (v1) layers at MAMBA-PT and FM4NPP sizes, forward and
// forward+backward (parameter gradients included), median of CUDA-event timings after a warm-up.
// Prints the GEMM FLOPs of the layer (its minimum arithmetic), the achieved TFLOP/s and the
// fraction of the measured bf16 GEMM rate, and the reference time where the issue gives one.
// `bench_layers_cuda profile`: instead, one warm bf16 forward+backward of the Mamba2 layer and of
// the FM4NPP-size Mamba layer each between cudaProfilerStart/Stop, for a per-kernel breakdown
// (`ncu --profile-from-start off --metrics gpu__time_duration.sum bench_layers_cuda profile`).
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda_bench_util.cuh"
#include "mambatrack/nn/cuda_backend.cuh"
#include "mambatrack/nn/dispatch.hpp"

using namespace mambatrack;

namespace {

struct Problem {
  std::string name;
  int64_t batch, len;
  double reference_ms, target_ms;  // forward+backward; 0 where the issue gives none
};

Tensor<int64_t, Cuda> cu_seqlens(int64_t batch, int64_t len) {
  Tensor<int64_t> h(Shape{batch + 1});
  for (int64_t b = 0; b <= batch; ++b) h[b] = b * len;
  return to_device<int64_t>(h.view());
}

// A mixer with initialised parameters on the GPU, random inputs and output gradients of a
// problem, and its context: one forward (and backward) per call of step().
template <class Backend, class Mixer>
class LayerRun {
 public:
  using T = typename Backend::Scalar;
  LayerRun(const Problem& pb, Mixer mixer)
      : mixer_(std::move(mixer)),
        tokens_(pb.batch * pb.len),
        x_(Shape{tokens_, mixer_.d_model()}),
        dy_(Shape{tokens_, mixer_.d_model()}),
        cu_(cu_seqlens(pb.batch, pb.len)) {
    mixer_.register_params(store_, "mixer.");
    store_.finalize();
    mixer_.init(store_.host(), 7, 12);
    store_.upload();
    bench::fill_uniform(x_.data(), x_.numel(), 1);
    bench::fill_uniform(dy_.data(), dy_.numel(), 2, -1e-3f, 1e-3f);
    if constexpr (std::is_same_v<Mixer, nn::MambaMixer<Backend>>) mixer_.set_max_seqlen_hint(pb.len);
  }
  LayerRun(const LayerRun&) = delete;
  LayerRun& operator=(const LayerRun&) = delete;
  void step(bool backward) {
    mixer_.forward(ctx_, x_.view(), cu_.view());
    if (backward) mixer_.backward(ctx_, dy_.view());
  }
  int64_t tokens() const { return tokens_; }

 private:
  typename Backend::Store store_;
  Mixer mixer_;
  int64_t tokens_;
  Tensor<T, Cuda> x_, dy_;
  Tensor<int64_t, Cuda> cu_;
  typename Mixer::Context ctx_;
};

// One warm forward+backward inside a profiler range (the profile mode).
template <class Backend, class Mixer>
void profile_once(const Problem& pb, Mixer mixer) {
  LayerRun<Backend, Mixer> r(pb, std::move(mixer));
  cudaStream_t s = Backend::stream();
  for (int warm = 0; warm < 2; ++warm) r.step(true);
  MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(s));
  MAMBATRACK_CUDA_CHECK(cudaProfilerStart());
  r.step(true);
  MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(s));
  MAMBATRACK_CUDA_CHECK(cudaProfilerStop());
  std::printf("profiled one forward+backward of %s (bf16)\n", pb.name.c_str());
}

template <class Backend, class Mixer>
void run(const Problem& pb, Mixer mixer, double gemm_flops_per_token_fwd, double bf16_rate) {
  using T = typename Backend::Scalar;
  LayerRun<Backend, Mixer> r(pb, std::move(mixer));
  cudaStream_t s = Backend::stream();
  const double fwd = bench::cuda_median_seconds([&] { r.step(false); }, s, 20, 3);
  const double both = bench::cuda_median_seconds([&] { r.step(true); }, s, 20, 3);
  const int64_t tok = r.tokens();
  const double f_fwd = gemm_flops_per_token_fwd * static_cast<double>(tok), f_both = 3.0 * f_fwd;
  std::printf("| %s, %s | %lld x %lld | %.3f | %.3f | %.1f | %.1f | %.1f%% | %s | %s |\n", pb.name.c_str(),
              std::is_same_v<T, float> ? "fp32" : "bf16", static_cast<long long>(pb.batch), static_cast<long long>(pb.len), fwd * 1e3, both * 1e3,
              f_both * 1e-9, f_both / both * 1e-12, 100.0 * f_both / both / bf16_rate,
              pb.reference_ms > 0 ? std::to_string(pb.reference_ms).substr(0, 4).c_str() : "-",
              pb.target_ms > 0 ? std::to_string(pb.target_ms).substr(0, 3).c_str() : "-");
}

}  // namespace

int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: bench_layers_cuda skipped\n");
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "profile") {
    profile_once<nn::CudaBf16Backend>(Problem{"Mamba2 (d 256, N 128, P 64)", 8, 8192, 0, 0},
                                      nn::make_mamba2<nn::CudaBf16Backend>(128, 4, 2, 64, 256));
    profile_once<nn::CudaBf16Backend>(Problem{"Mamba (d 256, N 16)", 8, 8192, 0, 0},
                                      nn::make_mamba<nn::CudaBf16Backend>(16, 4, 2, 256));
    return 0;
  }
  cudaDeviceProp prop{};
  MAMBATRACK_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const double bf16 = bench::cuda_bf16_gemm_rate();
  std::printf("device %s: bf16 GEMM %.0f TFLOP/s (the fp32 rows run fp32 GEMMs: their ceiling is ~1/15 of it)\n",
              prop.name, bf16 * 1e-12);
  std::printf("layers on nn::CudaBackend (fp32) and nn::CudaBf16Backend (bf16 mixed precision); fwd+bwd includes every parameter gradient; GEMM FLOPs: fwd 2·tok·Σ(in·out), "
              "fwd+bwd 3x that\n");
  std::printf("| layer | batch x len | fwd ms | fwd+bwd ms | GEMM GFLOP fwd+bwd | TFLOP/s | of bf16 GEMM | reference ms | target ms |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  {  // Mamba2: in_proj d -> 2·d_inner + 2·G·N + H, out_proj d_inner -> d.
    const int64_t d = 256, di = 512, N = 128, H = 8;
    const double per_tok = 2.0 * (d * (2 * di + 2 * N + H) + di * d);
    const Problem pb{"Mamba2 (d 256, N 128, P 64)", 8, 8192, 8.59, 4.0};
    run<nn::CudaBf16Backend>(pb, nn::make_mamba2<nn::CudaBf16Backend>(128, 4, 2, 64, 256), per_tok, bf16);
    run<nn::CudaBackend>(pb, nn::make_mamba2<nn::CudaBackend>(128, 4, 2, 64, 256), per_tok, bf16);
  }
  auto mamba_flops = [](int64_t d, int64_t N) {
    const int64_t di = 2 * d, R = (d + 15) / 16;
    return 2.0 * (d * 2 * di + di * (R + 2 * N) + R * di + di * d);
  };
  const Problem fm{"Mamba (d 256, N 16), FM4NPP mamba_5m", 8, 8192, 0, 0};
  run<nn::CudaBf16Backend>(fm, nn::make_mamba<nn::CudaBf16Backend>(16, 4, 2, 256), mamba_flops(256, 16), bf16);
  run<nn::CudaBackend>(fm, nn::make_mamba<nn::CudaBackend>(16, 4, 2, 256), mamba_flops(256, 16), bf16);
  const Problem pt{"Mamba (d 64, N 16), MAMBA-PT base", 4096, 12, 0, 0};
  run<nn::CudaBf16Backend>(pt, nn::make_mamba<nn::CudaBf16Backend>(16, 4, 2, 64), mamba_flops(64, 16), bf16);
  run<nn::CudaBackend>(pt, nn::make_mamba<nn::CudaBackend>(16, 4, 2, 64), mamba_flops(64, 16), bf16);
  return 0;
}
