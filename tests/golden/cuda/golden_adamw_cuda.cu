// CUDA golden handler for op "adamw": `steps` cuda::adamw_step calls in float32 from param0 with
// grads[step] and the metadata's hyper-parameters; compares param, exp_avg and exp_avg_sq after
// the last step, as the CPU handler (golden/golden_adamw.cpp) does (shared/golden/README.md).
#include <string>
#include <vector>

#include "golden/cuda/golden_cuda_util.cuh"
#include "golden/golden.hpp"
#include "mambatrack/optim/cuda/adamw.cuh"

namespace mambatrack::golden {
namespace {

std::vector<Result> run_adamw_cuda(const Case& c) {
  const int64_t n = c.size("n"), steps = c.size("steps");
  optim::AdamWConfig cfg;
  cfg.lr = c.meta.at("lr").get<double>();
  cfg.beta1 = c.meta.at("beta1").get<double>();
  cfg.beta2 = c.meta.at("beta2").get<double>();
  cfg.eps = c.meta.at("eps").get<double>();
  cfg.weight_decay = c.meta.at("weight_decay").get<double>();
  const auto p0 = c.want("param0"), grads = c.want("grads");
  MAMBATRACK_CHECK_SHAPE(static_cast<int64_t>(p0.size()) == n && static_cast<int64_t>(grads.size()) == steps * n,
                         c.path, ": param0 has ", p0.size(), " and grads ", grads.size(), " values, expected ", n,
                         " and ", steps, "·", n);
  CudaContext ctx;
  Tensor<float, Cuda> p = device_f32(p0, Shape{n}), m = device_zeros(Shape{n}), v = device_zeros(Shape{n});
  for (int64_t s = 0; s < steps; ++s) {
    const std::vector<double> gs(grads.begin() + s * n, grads.begin() + (s + 1) * n);
    const Tensor<float, Cuda> g = device_f32(gs, Shape{n});
    cuda::adamw_step({p.view(), g.view(), m.view(), v.view(), s + 1, cfg, {}}, ctx);
    MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));  // g is freed at the end of the iteration
  }
  // CUDA float32: the same float operations in the same order as optim::adamw_step (CPU), whose
  // measured error is 8e-8 .. 1.1e-7 (inputs rounded to float, a few float operations per step
  // over 5 steps); nvcc contracts multiply-adds into FMAs, which a host build with
  // -mfma -ffp-contract=fast reproduces: 5e-8 .. 1.1e-7. 1e-6 as on the CPU still catches a
  // formula change (a missing bias correction or weight decay moves param by > 1e-3 here).
  const double tol = 1e-6;
  return {{"cuda f32 param", "param", host_doubles(p), tol},
          {"cuda f32 exp_avg", "exp_avg", host_doubles(m), tol},
          {"cuda f32 exp_avg_sq", "exp_avg_sq", host_doubles(v), tol}};
}

const Register kRegister("adamw", run_adamw_cuda);

}  // namespace
}  // namespace mambatrack::golden
