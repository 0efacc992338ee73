// [cuda] core: device tensors and copies, and Philox on the device giving exactly the host's
// numbers (uniforms, integers and normals), bf16/half conversions identical on both sides.
#include <catch2/catch.hpp>

#include <vector>

#include "mambatrack/cuda.cuh"

using namespace mambatrack;

namespace {
__global__ void draw_kernel(uint64_t seed, uint64_t stream, int64_t n, float* u, uint64_t* k,
                            double* z, uint16_t* bf, uint16_t* hf) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  u[i] = philox_uniform(seed, stream, i);
  k[i] = philox_range(seed, stream, i, 1000003);
  z[i] = philox_normal(seed, stream, i);
  const float x = static_cast<float>(z[i]) * 1000.0f;
  bf[i] = float_to_bf16_bits(x);
  hf[i] = float_to_half_bits(x);
}
}  // namespace

TEST_CASE("cuda core: host/device copies round-trip", "[cuda]") {
  Tensor<float> h(Shape{3, 1000});
  for (int64_t i = 0; i < h.numel(); ++i) h[i] = 0.25f * static_cast<float>(i) - 7.0f;
  Tensor<float, Cuda> d = to_device<float>(h.view());
  Tensor<float, Cuda> d2(Shape{3000});
  copy<float>(d.view(), d2.view());
  Tensor<float> back = to_host<float>(d2.view());
  for (int64_t i = 0; i < h.numel(); ++i) REQUIRE(back[i] == h[i]);
  CHECK_THROWS_AS(copy<float>(h.view(), Tensor<float, Cuda>(Shape{5}).view()), ShapeError);
}

TEST_CASE("cuda core: Philox and dtype conversions give the host's numbers", "[cuda]") {
  const int64_t n = 1 << 20;
  Tensor<float, Cuda> u(Shape{n});
  Tensor<uint64_t, Cuda> k(Shape{n});
  Tensor<double, Cuda> z(Shape{n});
  Tensor<uint16_t, Cuda> bf(Shape{n}), hf(Shape{n});
  draw_kernel<<<(n + 255) / 256, 256>>>(1234, 9, n, u.data(), k.data(), z.data(), bf.data(), hf.data());
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  MAMBATRACK_CUDA_CHECK(cudaDeviceSynchronize());
  auto hu = to_host<float>(u.view());
  auto hk = to_host<uint64_t>(k.view());
  auto hz = to_host<double>(z.view());
  auto hbf = to_host<uint16_t>(bf.view());
  auto hhf = to_host<uint16_t>(hf.view());
  int64_t u_diff = 0, k_diff = 0, z_diff = 0, conv_diff = 0;
  double z_max = 0;
  for (int64_t i = 0; i < n; ++i) {
    u_diff += hu[i] != philox_uniform(1234, 9, i);
    k_diff += hk[i] != philox_range(1234, 9, i, 1000003);
    const double zh = philox_normal(1234, 9, i);
    z_diff += hz[i] != zh;
    z_max = std::max(z_max, std::abs(hz[i] - zh));
    const float x = static_cast<float>(hz[i]) * 1000.0f;
    conv_diff += (hbf[i] != float_to_bf16_bits(x)) + (hhf[i] != float_to_half_bits(x));
  }
  CHECK(u_diff == 0);
  CHECK(k_diff == 0);
  CHECK(conv_diff == 0);
  // log/cos in double: CUDA and glibc may differ in the last ulp; the float values must agree.
  INFO("normals differing in the last bits of the double: " << z_diff << ", max |diff| " << z_max);
  CHECK(z_max < 1e-14);
}
