// The ceilings of the CUDA benchmarks: device-to-device copy bandwidth (bytes read + written,
// cudaMemcpyAsync over 1 GiB) and the bf16 GEMM rate through cuBLASLt (8192³, fp32 accumulate),
// medians of CUDA-event-timed runs after a warm-up.
#include <cstdio>

#include "cuda_bench_util.cuh"

int main() {
  using namespace mambatrack;
  if (cuda_device_count() == 0) {
    std::printf("cuda_ceilings: no CUDA device, skipped\n");
    return 0;
  }
  cudaDeviceProp prop{};
  MAMBATRACK_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %.0f MiB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1048576.0);
  const double bw = bench::cuda_copy_bandwidth();
  std::printf("d2d copy (1 GiB, read+write): %.1f GB/s\n", bw * 1e-9);
  for (int64_t n : {4096, 8192}) {
    const double rate = bench::cuda_bf16_gemm_rate(n);
    std::printf("bf16 GEMM %lldx%lldx%lld (cuBLASLt, fp32 acc): %.1f TFLOP/s\n", static_cast<long long>(n),
                static_cast<long long>(n), static_cast<long long>(n), rate * 1e-12);
  }
  return 0;
}
