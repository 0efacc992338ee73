// CUDA SiLU, softplus and GELU forward/backward (see ops/activations.hpp), elementwise in fp32
// for float and bf16 storage, grid-stride loops. σ(x) = 1/(1 + e^(−x)) stays finite for any x;
// softplus = max(x, 0) + log1p(e^(−|x|)) (x above the threshold 20); gelu is the erf form.
#pragma once

#include "mambatrack/ops/activations.hpp"
#include "mambatrack/ops/cuda/common.cuh"

namespace mambatrack::cuda {

namespace detail {

struct SiluOp {
  __device__ static float fwd(float x) { return x / (1.0f + expf(-x)); }
  __device__ static float bwd(float x) {
    const float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
  }
};
struct SoftplusOp {
  __device__ static float fwd(float x) {
    return x > static_cast<float>(kSoftplusThreshold) ? x : fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x)));
  }
  __device__ static float bwd(float x) {
    return x > static_cast<float>(kSoftplusThreshold) ? 1.0f : 1.0f / (1.0f + expf(-x));
  }
};
struct GeluOp {
  __device__ static float fwd(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
  __device__ static float bwd(float x) {
    const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    return cdf + x * 0.39894228040143268f * expf(-0.5f * x * x);
  }
};

template <class Op, class T>
__global__ void act_fwd_kernel(const T* x, T* y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = from_f<T>(Op::fwd(to_f(x[i])));
}
template <class Op, class T>
__global__ void act_bwd_kernel(const T* x, const T* dy, T* dx, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dx[i] = from_f<T>(to_f(dy[i]) * Op::bwd(to_f(x[i])));
}

template <class Op, class T>
void act_fwd(const ActivationFwdArgs<T, Cuda>& a, const char* name, cudaStream_t s) {
  a.check(name);
  const int64_t n = a.x.numel();
  if (n == 0) return;
  act_fwd_kernel<Op, T><<<grid_for(n, 256), 256, 0, s>>>(a.x.data, a.y.data, n);
  check_launch(name);
}
template <class Op, class T>
void act_bwd(const ActivationBwdArgs<T, Cuda>& a, const char* name, cudaStream_t s) {
  a.check(name);
  const int64_t n = a.x.numel();
  if (n == 0) return;
  act_bwd_kernel<Op, T><<<grid_for(n, 256), 256, 0, s>>>(a.x.data, a.dy.data, a.dx.data, n);
  check_launch(name);
}

}  // namespace detail

template <class T>
void silu_fwd(const ActivationFwdArgs<T, Cuda>& a, cudaStream_t s = nullptr) { detail::act_fwd<detail::SiluOp>(a, "silu", s); }
template <class T>
void silu_bwd(const ActivationBwdArgs<T, Cuda>& a, cudaStream_t s = nullptr) { detail::act_bwd<detail::SiluOp>(a, "silu", s); }
template <class T>
void softplus_fwd(const ActivationFwdArgs<T, Cuda>& a, cudaStream_t s = nullptr) {
  detail::act_fwd<detail::SoftplusOp>(a, "softplus", s);
}
template <class T>
void softplus_bwd(const ActivationBwdArgs<T, Cuda>& a, cudaStream_t s = nullptr) {
  detail::act_bwd<detail::SoftplusOp>(a, "softplus", s);
}
template <class T>
void gelu_fwd(const ActivationFwdArgs<T, Cuda>& a, cudaStream_t s = nullptr) { detail::act_fwd<detail::GeluOp>(a, "gelu", s); }
template <class T>
void gelu_bwd(const ActivationBwdArgs<T, Cuda>& a, cudaStream_t s = nullptr) { detail::act_bwd<detail::GeluOp>(a, "gelu", s); }

}  // namespace mambatrack::cuda
