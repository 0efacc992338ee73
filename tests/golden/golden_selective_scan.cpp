// Golden handler for op "selective_scan" (shared/golden/README.md): converts the file's layout
// (u, delta, z, out: (batch, dim, len); B, C: (batch, d_state, len)) to ours (tokens = batch·len
// packed, channels contiguous; B, C: (tokens, 1, d_state)), runs the double reference and the CPU
// float scan forward and backward, and returns out, last_state and every grad_* in the file's layout.
#include <string>
#include <vector>

#include "golden.hpp"
#include "mambatrack/ops/cpu/selective_scan.hpp"
#include "mambatrack/ops/reference/selective_scan.hpp"

namespace mambatrack {
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
  template <class T>
  std::vector<double> to_file(const std::vector<T>& o, int64_t rows) const {
    std::vector<double> f(o.size());
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t t = 0; t < len; ++t) f[(b * rows + r) * len + t] = static_cast<double>(o[((b * len + t) * rows) + r]);
    return f;
  }
};

// Runs forward + backward in precision T with `fwd`/`bwd` and appends the results.
template <class T, class Fwd, class Bwd>
void run(const golden::Case& c, const ScanLayout& L, const std::string& label, double tol, Fwd fwd, Bwd bwd,
         std::vector<golden::Result>& results) {
  auto cv = [](const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); };
  const int64_t tok = L.tokens(), dim = L.dim, N = L.N;
  const std::vector<T> u = cv(L.to_ours(c.want("u"), dim)), delta = cv(L.to_ours(c.want("delta"), dim)),
                       z = cv(L.to_ours(c.want("z"), dim)), dout = cv(L.to_ours(c.want("dout"), dim)),
                       B = cv(L.to_ours(c.want("B"), N)), C = cv(L.to_ours(c.want("C"), N)),
                       A = cv(c.want("A")), D = cv(c.want("D")), bias = cv(c.want("delta_bias"));
  std::vector<int64_t> cu;
  for (int64_t b = 0; b <= L.batch; ++b) cu.push_back(b * L.len);

  SelectiveScanInputs<T> in;
  in.u = View<const T>(u.data(), {tok, dim});
  in.delta = View<const T>(delta.data(), {tok, dim});
  in.A = View<const T>(A.data(), {dim, N});
  in.B = View<const T>(B.data(), {tok, 1, N});
  in.C = View<const T>(C.data(), {tok, 1, N});
  in.D = View<const T>(D.data(), {dim});
  in.delta_bias = View<const T>(bias.data(), {dim});
  in.z = View<const T>(z.data(), {tok, dim});
  in.cu_seqlens = View<const int64_t>(cu.data(), {L.batch + 1});
  in.delta_softplus = c.meta.at("delta_softplus").get<bool>();
  in.chunk = 64;  // scan_long (len 300) spans five chunks, the others one

  const Shape saved_shape = selective_scan_saved_shape(L.batch, tok, dim, N, in.chunk);
  std::vector<T> out(static_cast<std::size_t>(tok * dim)), last(static_cast<std::size_t>(L.batch * dim * N)),
      saved(static_cast<std::size_t>(saved_shape.numel()));
  SelectiveScanFwdArgs<T> f;
  f.in = in;
  f.out = View<T>(out.data(), {tok, dim});
  f.final_state = View<T>(last.data(), {L.batch, dim, N});
  f.saved_states = View<T>(saved.data(), saved_shape);
  fwd(f);

  std::vector<T> du(u.size()), ddelta(u.size()), dz(u.size()), dB(B.size()), dC(C.size()), dA(A.size(), T(0)),
      dD(D.size(), T(0)), dbias(bias.size(), T(0));
  SelectiveScanBwdArgs<T> g;
  g.in = in;
  g.saved_states = View<const T>(saved.data(), saved_shape);
  g.dout = View<const T>(dout.data(), {tok, dim});
  g.du = View<T>(du.data(), {tok, dim});
  g.ddelta = View<T>(ddelta.data(), {tok, dim});
  g.dz = View<T>(dz.data(), {tok, dim});
  g.dB = View<T>(dB.data(), {tok, 1, N});
  g.dC = View<T>(dC.data(), {tok, 1, N});
  g.dA = View<T>(dA.data(), {dim, N});
  g.dD = View<T>(dD.data(), {dim});
  g.ddelta_bias = View<T>(dbias.data(), {dim});
  bwd(g);

  auto as_double = [](const std::vector<T>& v) { return std::vector<double>(v.begin(), v.end()); };
  auto add = [&](const char* name, std::vector<double> got) {
    results.push_back({label + " " + name, name, std::move(got), tol});
  };
  add("out", L.to_file(out, dim));
  add("last_state", as_double(last));  // (batch, dim, d_state) in both layouts
  add("grad_u", L.to_file(du, dim));
  add("grad_delta", L.to_file(ddelta, dim));
  add("grad_z", L.to_file(dz, dim));
  add("grad_B", L.to_file(dB, N));
  add("grad_C", L.to_file(dC, N));
  add("grad_A", as_double(dA));
  add("grad_D", as_double(dD));
  add("grad_delta_bias", as_double(dbias));
}

std::vector<golden::Result> run_selective_scan(const golden::Case& c) {
  const ScanLayout L{c.size("batch"), c.size("dim"), c.size("d_state"), c.size("len")};
  std::vector<golden::Result> results;
  // Double reference: the files are float64 results of the same math: 1e-9 (README).
  run<double>(c, L, "reference f64", 1e-9,
              [](const SelectiveScanFwdArgs<double>& a) { reference::selective_scan_fwd(a); },
              [](const SelectiveScanBwdArgs<double>& a) { reference::selective_scan_bwd(a); }, results);
  // CPU float32: inputs rounded to float (6e-8) and float sums over d_state and up to 300 steps
  // (dA/dD/ddelta_bias over batch·len tokens); measured <= 4e-7, README bound for the scan: 1e-5.
  run<float>(c, L, "cpu f32", 1e-5,
             [](const SelectiveScanFwdArgs<float>& a) { cpu::selective_scan_fwd(a); },
             [](const SelectiveScanBwdArgs<float>& a) { cpu::selective_scan_bwd(a); }, results);
  return results;
}

const golden::Register kRegister("selective_scan", run_selective_scan);

}  // namespace
}  // namespace mambatrack
