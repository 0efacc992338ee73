// CUDA golden handler for op "selective_scan" (shared/golden/README.md): the file's layout
// (u, delta, z, out: (batch, dim, len); B, C: (batch, d_state, len)) converted to ours (tokens =
// batch·len packed, channels contiguous; B, C: (tokens, 1, d_state)), cuda::selective_scan_fwd
// and _bwd in float32 on the device, and out, last_state and every grad_* returned in the file's
// layout: the same tensors in the same order as the CPU handler (golden/golden_selective_scan.cpp).
#include <string>
#include <vector>

#include "golden/cuda/golden_cuda_util.cuh"
#include "golden/golden.hpp"
#include "mambatrack/ops/cuda/selective_scan.cuh"

namespace mambatrack::golden {
namespace {

struct ScanLayout {
  int64_t batch, dim, N, len;
  int64_t tokens() const { return batch * len; }
  // (batch, rows, len) -> (batch·len, rows), and back.
  std::vector<double> to_ours(const std::vector<double>& f, int64_t rows) const {
    std::vector<double> o(f.size());
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t t = 0; t < len; ++t) o[((b * len + t) * rows) + r] = f[(b * rows + r) * len + t];
    return o;
  }
  std::vector<double> to_file(const std::vector<double>& o, int64_t rows) const {
    std::vector<double> f(o.size());
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t t = 0; t < len; ++t) f[(b * rows + r) * len + t] = o[((b * len + t) * rows) + r];
    return f;
  }
};

std::vector<Result> run_selective_scan_cuda(const Case& c) {
  const ScanLayout L{c.size("batch"), c.size("dim"), c.size("d_state"), c.size("len")};
  const int64_t tok = L.tokens(), dim = L.dim, N = L.N;
  const Tensor<float, Cuda> u = device_f32(L.to_ours(c.want("u"), dim), Shape{tok, dim}),
                            delta = device_f32(L.to_ours(c.want("delta"), dim), Shape{tok, dim}),
                            z = device_f32(L.to_ours(c.want("z"), dim), Shape{tok, dim}),
                            dout = device_f32(L.to_ours(c.want("dout"), dim), Shape{tok, dim}),
                            B = device_f32(L.to_ours(c.want("B"), N), Shape{tok, 1, N}),
                            C = device_f32(L.to_ours(c.want("C"), N), Shape{tok, 1, N}),
                            A = device_f32(c.want("A"), Shape{dim, N}), D = device_f32(c.want("D"), Shape{dim}),
                            bias = device_f32(c.want("delta_bias"), Shape{dim});
  const Tensor<int64_t, Cuda> cu = device_i64(equal_cu_seqlens(L.batch, L.len));

  SelectiveScanInputs<float, Cuda> in;
  in.u = u.view();
  in.delta = delta.view();
  in.A = A.view();
  in.B = B.view();
  in.C = C.view();
  in.D = D.view();
  in.delta_bias = bias.view();
  in.z = z.view();
  in.cu_seqlens = cu.view();
  in.delta_softplus = c.meta.at("delta_softplus").get<bool>();
  in.chunk = 64;  // as the CPU handler: scan_long (len 300) spans five chunks, the others one

  const Shape saved_shape = selective_scan_saved_shape(L.batch, tok, dim, N, in.chunk);
  Tensor<float, Cuda> out = device_nan(Shape{tok, dim}), last = device_nan(Shape{L.batch, dim, N}),
                      saved = device_nan(saved_shape);
  SelectiveScanFwdArgs<float, Cuda> f;
  f.in = in;
  f.out = out.view();
  f.final_state = last.view();
  f.saved_states = saved.view();
  cuda::selective_scan_fwd<float>(f);

  // Activation gradients are overwritten (poisoned first); dA, dD, ddelta_bias are accumulated
  // into zeros, as in the CPU handler.
  Tensor<float, Cuda> du = device_nan(Shape{tok, dim}), ddelta = device_nan(Shape{tok, dim}),
                      dz = device_nan(Shape{tok, dim}), dB = device_nan(Shape{tok, 1, N}),
                      dC = device_nan(Shape{tok, 1, N}), dA = device_zeros(Shape{dim, N}),
                      dD = device_zeros(Shape{dim}), dbias = device_zeros(Shape{dim});
  SelectiveScanBwdArgs<float, Cuda> g;
  g.in = in;
  g.saved_states = saved.view();
  g.dout = dout.view();
  g.du = du.view();
  g.ddelta = ddelta.view();
  g.dz = dz.view();
  g.dB = dB.view();
  g.dC = dC.view();
  g.dA = dA.view();
  g.dD = dD.view();
  g.ddelta_bias = dbias.view();
  cuda::selective_scan_bwd<float>(g);

  // CUDA float32: inputs rounded to float (6e-8) and float sums over d_state, over up to 300
  // steps (chunks of 64 combined across time) and over batch·len tokens for dA/dD/ddelta_bias in
  // a different order than the CPU; README bound for the scan in float32: 1e-5.
  const double tol = 1e-5;
  const std::string label = "cuda f32";
  std::vector<Result> r;
  auto add = [&](const char* name, std::vector<double> got) {
    r.push_back({label + " " + name, name, std::move(got), tol});
  };
  add("out", L.to_file(host_doubles(out), dim));
  add("last_state", host_doubles(last));  // (batch, dim, d_state) in both layouts
  add("grad_u", L.to_file(host_doubles(du), dim));
  add("grad_delta", L.to_file(host_doubles(ddelta), dim));
  add("grad_z", L.to_file(host_doubles(dz), dim));
  add("grad_B", L.to_file(host_doubles(dB), N));
  add("grad_C", L.to_file(host_doubles(dC), N));
  add("grad_A", host_doubles(dA));
  add("grad_D", host_doubles(dD));
  add("grad_delta_bias", host_doubles(dbias));
  return r;
}

const Register kRegister("selective_scan", run_selective_scan_cuda);

}  // namespace
}  // namespace mambatrack::golden
