// CPU selective scan and causal conv1d, forward and backward, at the two sizes the seeds train:
// MAMBA-PT (d_inner 128, d_state 16, 4096 tracks of 8-10 hits packed) and FM4NPP (d_inner 512,
// d_state 16, 2 sequences of 4096 points), on 1 and 2 threads. Prints ns/token and the achieved
// bandwidth over the minimum bytes (each input read once, each output written once) next to one
// core's memcpy bandwidth; the scan is bound by its d_state exps per (token, channel), not memory.
#include <cstdio>
#include <ctime>
#include <vector>

#include "bench_util.hpp"
#include "mambatrack/core/philox.hpp"
#include "mambatrack/ops/cpu/causal_conv1d.hpp"
#include "mambatrack/ops/cpu/selective_scan.hpp"

using namespace mambatrack;

namespace {

std::vector<float> random(std::size_t n, uint64_t seed, double lo, double hi) {
  Philox rng(seed, 3);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.uniform(lo, hi));
  return v;
}

// Median wall time and mean process CPU time (all threads) per call. On a shared, loaded machine
// the CPU time of a 1-thread run is the better estimate of the kernel's own speed.
struct Timing {
  double wall, cpu;
};
template <class F>
Timing time_it(F&& f, int runs) {
  const std::clock_t c0 = std::clock();
  const double wall = bench::median_seconds(f, runs, 1);
  return {wall, static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC / (runs + 1)};
}

struct Problem {
  const char* name;
  std::vector<int64_t> cu;
  int64_t dim, N = 16, K = 4;
  int64_t tokens() const { return cu.back(); }
  int64_t batch() const { return static_cast<int64_t>(cu.size()) - 1; }
};

void row(const char* op, const Problem& p, int threads, Timing fwd, Timing bwd, double fwd_bytes,
         double bwd_bytes, double ceiling) {
  const double tok = static_cast<double>(p.tokens());
  std::printf("%-5s %-9s %2d | %8.2f %8.2f %8.1f %6.2f %4.0f%% | %8.2f %8.2f %8.1f %6.2f %4.0f%%\n", op, p.name,
              threads, fwd.wall * 1e3, fwd.cpu * 1e3, fwd.wall / tok * 1e9, fwd_bytes / fwd.wall / 1e9,
              100 * fwd_bytes / fwd.wall / ceiling, bwd.wall * 1e3, bwd.cpu * 1e3, bwd.wall / tok * 1e9,
              bwd_bytes / bwd.wall / 1e9, 100 * bwd_bytes / bwd.wall / ceiling);
}

void run(const Problem& p, double ceiling) {
  const int64_t T = p.tokens(), D = p.dim, N = p.N, K = p.K;
  const auto TD = static_cast<std::size_t>(T * D), TN = static_cast<std::size_t>(T * N);
  const std::vector<float> u = random(TD, 1, -1, 1), delta = random(TD, 2, -3, 1), z = random(TD, 3, -2, 2),
                           dout = random(TD, 4, -1, 1), B = random(TN, 5, -1, 1), C = random(TN, 6, -1, 1),
                           A = random(static_cast<std::size_t>(D * N), 7, -4, -0.3),
                           Dp = random(static_cast<std::size_t>(D), 8, -1, 1),
                           bias = random(static_cast<std::size_t>(D), 9, -1, 0.5),
                           w = random(static_cast<std::size_t>(D * K), 10, -0.5, 0.5);
  std::vector<float> out(TD), du(TD), ddelta(TD), dz(TD), dB(TN), dC(TN), dA(static_cast<std::size_t>(D * N)),
      dD(static_cast<std::size_t>(D)), dbias(static_cast<std::size_t>(D)), dw(static_cast<std::size_t>(D * K));
  SelectiveScanInputs<float> in;
  in.u = View<const float>(u.data(), {T, D});
  in.delta = View<const float>(delta.data(), {T, D});
  in.A = View<const float>(A.data(), {D, N});
  in.B = View<const float>(B.data(), {T, 1, N});
  in.C = View<const float>(C.data(), {T, 1, N});
  in.D = View<const float>(Dp.data(), {D});
  in.delta_bias = View<const float>(bias.data(), {D});
  in.z = View<const float>(z.data(), {T, D});
  in.cu_seqlens = View<const int64_t>(p.cu.data(), {p.batch() + 1});
  in.chunk = 64;
  const Shape saved_shape = selective_scan_saved_shape(p.batch(), T, D, N, in.chunk);
  std::vector<float> saved(static_cast<std::size_t>(saved_shape.numel()));
  SelectiveScanFwdArgs<float> f{in, View<float>(out.data(), {T, D}), {}, View<float>(saved.data(), saved_shape)};
  SelectiveScanBwdArgs<float> g;
  g.in = in;
  g.saved_states = View<const float>(saved.data(), saved_shape);
  g.dout = View<const float>(dout.data(), {T, D});
  g.du = View<float>(du.data(), {T, D});
  g.ddelta = View<float>(ddelta.data(), {T, D});
  g.dz = View<float>(dz.data(), {T, D});
  g.dB = View<float>(dB.data(), {T, 1, N});
  g.dC = View<float>(dC.data(), {T, 1, N});
  g.dA = View<float>(dA.data(), {D, N});
  g.dD = View<float>(dD.data(), {D});
  g.ddelta_bias = View<float>(dbias.data(), {D});

  CausalConv1dInputs<float> cin;
  cin.x = in.u;
  cin.weight = View<const float>(w.data(), {D, K});
  cin.bias = in.delta_bias;
  cin.cu_seqlens = in.cu_seqlens;
  CausalConv1dFwdArgs<float> cf{cin, View<float>(out.data(), {T, D})};
  CausalConv1dBwdArgs<float> cb{cin, g.dout, g.du, View<float>(dw.data(), {D, K}), g.ddelta_bias};

  const double f4 = 4.0, td = static_cast<double>(T * D), tn = static_cast<double>(T * N);
  // Scan: fwd reads u, delta, z, B, C, writes out; bwd reads u, delta, z, B, C, dout, writes
  // du, ddelta, dz, dB, dC. Conv: fwd reads x, writes out; bwd reads x, dout, writes dx.
  const double scan_fwd_bytes = f4 * (4 * td + 2 * tn), scan_bwd_bytes = f4 * (7 * td + 4 * tn);
  const double conv_fwd_bytes = f4 * 2 * td, conv_bwd_bytes = f4 * 3 * td;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    const Timing sf = time_it([&] { cpu::selective_scan_fwd(f); }, 5);
    const Timing sb = time_it([&] { cpu::selective_scan_bwd(g); }, 5);
    row("scan", p, threads, sf, sb, scan_fwd_bytes, scan_bwd_bytes, ceiling);
    const Timing cf_s = time_it([&] { cpu::causal_conv1d_fwd(cf); }, 9);
    const Timing cb_s = time_it([&] { cpu::causal_conv1d_bwd(cb); }, 9);
    row("conv", p, threads, cf_s, cb_s, conv_fwd_bytes, conv_bwd_bytes, ceiling);
  }
}

}  // namespace

int main() {
  const double ceiling = bench::memcpy_bandwidth();
  std::printf("threads available: %d; columns: median wall ms, mean process CPU ms (all threads), wall ns per\n"
              "token, GB/s over the minimum bytes, and that as a share of memcpy\n", num_threads());
  Problem pt{"MAMBA-PT", {0}, 128};
  Philox rng(42);
  for (int i = 0; i < 4096; ++i) pt.cu.push_back(pt.cu.back() + 8 + static_cast<int64_t>(rng.below(3)));
  Problem fm{"FM4NPP", {0, 4096, 8192}, 512};
  std::printf("selective scan (d_state 16, z, D, delta_bias, softplus, chunk 64) and causal conv1d (d_conv 4, SiLU)\n");
  std::printf("MAMBA-PT: %lld tracks, %lld tokens, d_inner 128; FM4NPP: 2 x 4096 tokens, d_inner 512\n",
              static_cast<long long>(pt.batch()), static_cast<long long>(pt.tokens()));
  std::printf("%-5s %-9s %2s | %8s %8s %8s %6s %5s | %8s %8s %8s %6s %5s\n", "op", "size", "th", "fwd ms",
              "cpu ms", "ns/tok", "GB/s", "mcpy", "bwd ms", "cpu ms", "ns/tok", "GB/s", "mcpy");
  run(pt, ceiling);
  run(fm, ceiling);
  std::printf("memcpy ceiling: %.2f GB/s (read + write, one core)\n", ceiling / 1e9);
  return 0;
}
