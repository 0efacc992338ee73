// Golden handler for op "adamw": `steps` AdamW steps from param0 with grads[step] and the
// metadata's hyper-parameters, in the double reference and the float CPU step; compares param,
// exp_avg and exp_avg_sq after the last step (shared/golden/README.md).
#include <string>
#include <vector>

#include "golden.hpp"
#include "mambatrack/optim/adamw.hpp"

namespace mambatrack::golden {
namespace {

template <class T, class Step>
std::vector<Result> run(const Case& c, Step step, const std::string& label, double tol) {
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
  std::vector<T> p(p0.begin(), p0.end()), g(n), m(n, T(0)), v(n, T(0));
  for (int64_t s = 0; s < steps; ++s) {
    for (int64_t i = 0; i < n; ++i) g[i] = static_cast<T>(grads[s * n + i]);
    optim::AdamWArgs<T> a{View<T>(p.data(), {n}), View<const T>(g.data(), {n}), View<T>(m.data(), {n}),
                          View<T>(v.data(), {n}), s + 1, cfg, {}};
    step(a);
  }
  auto d = [](const std::vector<T>& x) { return std::vector<double>(x.begin(), x.end()); };
  return {{label + " param", "param", d(p), tol},
          {label + " exp_avg", "exp_avg", d(m), tol},
          {label + " exp_avg_sq", "exp_avg_sq", d(v), tol}};
}

std::vector<Result> run_adamw(const Case& c) {
  // Double reference: same operations as torch in float64, only rounding differs: 1e-9 (README).
  auto out = run<double>(c, [](const optim::AdamWArgs<double>& a) { optim::reference::adamw_step(a); }, "ref f64", 1e-9);
  // Float CPU: the inputs' rounding to float (3e-8) plus a few float operations per step over 5
  // steps give ~1e-7 relative (measured 8e-8 .. 1.1e-7); the moments are only as exact as the
  // float gradients they average. 1e-6 leaves room and still catches a formula change (a missing
  // bias correction or weight decay moves param by > 1e-3 here).
  auto f = run<float>(c, [](const optim::AdamWArgs<float>& a) { optim::adamw_step(a); }, "cpu f32", 1e-6);
  out.insert(out.end(), f.begin(), f.end());
  return out;
}

const Register kRegister("adamw", run_adamw);

}  // namespace
}  // namespace mambatrack::golden
