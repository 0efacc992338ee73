// The CPU numerical core in one table: forward + backward time of the selective scan, the Mamba2
// SSD, the causal conv1d and the two Linear projections of a Mamba layer at the MAMBA-PT base size
// (d_model 64, d_inner 128, d_state 16, 4096 packed tracks of 8-10 tokens) and an FM4NPP size
// (d_model 256, d_inner 512, d_state 16 and 128, 2 sequences of 4096 tokens), on 1 and 2 threads,
// next to two measured ceilings: one core's memcpy bandwidth and a 1536³ Eigen GEMM.
// Usage: bench_cpu_ops [--quick]   (--quick: each case called once, no warm-up: a smoke test)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "bench_util.hpp"
#include "mambatrack/core/parallel.hpp"
#include "mambatrack/core/philox.hpp"
#include "mambatrack/ops/cpu/causal_conv1d.hpp"
#include "mambatrack/ops/cpu/linear.hpp"
#include "mambatrack/ops/cpu/selective_scan.hpp"
#include "mambatrack/ops/cpu/ssd.hpp"

using namespace mambatrack;

namespace {

constexpr int kThreadCounts[] = {1, 2};
// Repetitions: after one warm-up call, as many calls as fit in kBudgetSeconds (an odd number, 1 to
// kMaxRuns), and the median. Slow cases thus get fewer repetitions: the d_state-128 scan, seconds
// per call on one busy core, is timed once after its warm-up, a conv gets the median of 15. With
// this the whole run stays near a minute on one busy core.
constexpr double kBudgetSeconds = 0.8;
constexpr int kMaxRuns = 15;
constexpr int64_t kGemmSize = 1536;

struct Timing {
  double wall = 0, cpu = 0;  // median wall seconds per call; mean process CPU seconds per call
};

// Wall time next to process CPU time (all threads): on the shared machine the CPU time of a
// 1-thread run is the better estimate of the kernel's own speed.
Timing time_call(const std::function<void()>& f, bool quick) {
  int runs = 1;
  if (!quick) {
    const double warm = bench::median_seconds(f, 1, 0);
    runs = static_cast<int>(std::min(kBudgetSeconds / std::max(warm, 1e-9), double(kMaxRuns)));
    runs = std::max(1, runs - (runs % 2 == 0 ? 1 : 0));
  }
  const std::clock_t c0 = std::clock();
  const double wall = bench::median_seconds(f, runs, 0);
  return {wall, static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC / runs};
}

// Packed sequences and the layer widths of one model size. Lives for the whole run: the cases'
// cu_seqlens views point into it.
struct Workload {
  const char* name;
  int64_t d_model, d_inner;
  std::vector<int64_t> cu;
  int64_t tokens() const { return cu.back(); }
  int64_t batch() const { return static_cast<int64_t>(cu.size()) - 1; }
  View<const int64_t> cu_seqlens() const { return {cu.data(), Shape{batch() + 1}}; }
};

Workload mamba_pt() {
  Workload w{"MAMBA-PT", 64, 128, {0}};
  Philox rng(42);
  for (int i = 0; i < 4096; ++i) w.cu.push_back(w.cu.back() + 8 + static_cast<int64_t>(rng.below(3)));
  return w;
}
Workload fm4npp() { return {"FM4NPP", 256, 512, {0, 4096, 8192}}; }

// Owns one case's buffers; the case's fwd/bwd closures share it.
class Buffers {
 public:
  explicit Buffers(uint64_t seed) : rng_(seed) {}
  View<const float> random(Shape s, double lo, double hi) {
    std::vector<float>& v = add(s);
    for (float& x : v) x = static_cast<float>(rng_.uniform(lo, hi));
    return {v.data(), s};
  }
  View<float> zeros(Shape s) { return {add(s).data(), s}; }

 private:
  std::vector<float>& add(Shape s) { return store_.emplace_back(static_cast<std::size_t>(s.numel())); }
  Philox rng_;
  std::deque<std::vector<float>> store_;
};

// One row of the table: what to call and the minimum work it does. Index 0 forward, 1 backward.
struct Case {
  std::string op, size;
  int64_t tokens = 0;
  double bytes[2] = {0, 0};  // each input read once, each output written once (accumulated: both)
  double flop[2] = {0, 0};   // 0: not FLOP-bound, rated against memcpy instead of the GEMM
  std::function<void()> fwd, bwd;
};

// Selective scan with z, D, delta_bias and softplus (a Mamba1 layer), chunk 64.
Case scan_case(const Workload& w, int64_t N) {
  const int64_t T = w.tokens(), D = w.d_inner;
  auto buf = std::make_shared<Buffers>(1);
  SelectiveScanInputs<float> in;
  in.u = buf->random({T, D}, -1, 1);
  in.delta = buf->random({T, D}, -3, 1);
  in.z = buf->random({T, D}, -2, 2);
  in.A = buf->random({D, N}, -4, -0.3);
  in.B = buf->random({T, 1, N}, -1, 1);
  in.C = buf->random({T, 1, N}, -1, 1);
  in.D = buf->random({D}, -1, 1);
  in.delta_bias = buf->random({D}, -1, 0.5);
  in.cu_seqlens = w.cu_seqlens();
  in.chunk = 64;
  const Shape saved = selective_scan_saved_shape(w.batch(), T, D, N, in.chunk);
  const SelectiveScanFwdArgs<float> f{in, buf->zeros({T, D}), {}, buf->zeros(saved)};
  SelectiveScanBwdArgs<float> g;
  g.in = in;
  g.saved_states = f.saved_states;
  g.dout = buf->random({T, D}, -1, 1);
  g.du = buf->zeros({T, D});
  g.ddelta = buf->zeros({T, D});
  g.dz = buf->zeros({T, D});
  g.dB = buf->zeros({T, 1, N});
  g.dC = buf->zeros({T, 1, N});
  g.dA = buf->zeros({D, N});
  g.dD = buf->zeros({D});
  g.ddelta_bias = buf->zeros({D});
  Case c{"scan", std::string(w.name) + " N" + std::to_string(N), T};
  const double td = double(T) * D, tn = double(T) * N;
  c.bytes[0] = 4 * (4 * td + 2 * tn);  // u, delta, z, B, C in; out
  c.bytes[1] = 4 * (7 * td + 4 * tn);  // + dout in; du, ddelta, dz, dB, dC out
  c.fwd = [buf, f] { cpu::selective_scan_fwd(f); };
  c.bwd = [buf, g] { cpu::selective_scan_bwd(g); };
  return c;
}

// Mamba2 SSD (one group, dt_bias, D). FLOPs are the chunked algorithm's matrix products: per token
// and head 2QP + 4PN forward, 4QP + 10PN backward, plus 2QN / 6QN per token for C·Bᵀ, where Q is
// the token-weighted chunk length (a chunk ends at its sequence's end, so short tracks have Q < chunk).
Case ssd_case(const Workload& w, int64_t H, int64_t P, int64_t N, int64_t chunk) {
  const int64_t T = w.tokens(), G = 1;
  auto buf = std::make_shared<Buffers>(2);
  SsdInputs<float> in;
  in.x = buf->random({T, H, P}, -1, 1);
  in.dt = buf->random({T, H}, -1.5, 1);
  in.dt_bias = buf->random({H}, -2, -0.5);
  in.A = buf->random({H}, -3, -0.3);
  in.B = buf->random({T, G, N}, -1, 1);
  in.C = buf->random({T, G, N}, -1, 1);
  in.D = buf->random({H}, 0.5, 1.5);
  in.cu_seqlens = w.cu_seqlens();
  SsdFwdArgs<float> f;
  f.in = in;
  f.y = buf->zeros({T, H, P});
  f.chunk_size = chunk;
  SsdBwdArgs<float> g;
  g.in = in;
  g.dy = buf->random({T, H, P}, -1, 1);
  g.dx = buf->zeros({T, H, P});
  g.ddt = buf->zeros({T, H});
  g.dB = buf->zeros({T, G, N});
  g.dC = buf->zeros({T, G, N});
  g.dA = buf->zeros({H});
  g.dD = buf->zeros({H});
  g.ddt_bias = buf->zeros({H});
  g.chunk_size = chunk;
  double q2 = 0;  // Σ over chunks of (chunk length)²
  for (int64_t b = 0; b < w.batch(); ++b) {
    for (int64_t s = w.cu[b]; s < w.cu[b + 1]; s += chunk) q2 += std::pow(double(std::min(chunk, w.cu[b + 1] - s)), 2);
  }
  const double Q = q2 / double(T);
  Case c{"ssd", std::string(w.name) + " " + std::to_string(H) + "x" + std::to_string(P) + " N" + std::to_string(N) +
                    " Q" + std::to_string(chunk),
         T};
  c.flop[0] = double(T) * (H * (2 * Q * P + 4.0 * P * N) + G * 2 * Q * N);
  c.flop[1] = double(T) * (H * (4 * Q * P + 10.0 * P * N) + G * 6 * Q * N);
  c.bytes[0] = 4.0 * T * (2 * H * P + H + 2 * G * N);      // x, dt, B, C in; y out
  c.bytes[1] = 4.0 * T * (4 * H * P + 2 * H + 4 * G * N);  // + dy in; dx, ddt, dB, dC out
  c.fwd = [buf, f] { cpu::ssd_fwd(f); };
  c.bwd = [buf, g] { cpu::ssd_bwd(g); };
  return c;
}

// Causal depthwise conv1d over d_inner channels, d_conv 4, bias and SiLU.
Case conv_case(const Workload& w) {
  const int64_t T = w.tokens(), D = w.d_inner, K = 4;
  auto buf = std::make_shared<Buffers>(3);
  CausalConv1dInputs<float> in;
  in.x = buf->random({T, D}, -1, 1);
  in.weight = buf->random({D, K}, -0.5, 0.5);
  in.bias = buf->random({D}, -1, 0.5);
  in.cu_seqlens = w.cu_seqlens();
  in.silu = true;
  const CausalConv1dFwdArgs<float> f{in, buf->zeros({T, D})};
  const CausalConv1dBwdArgs<float> g{in, buf->random({T, D}, -1, 1), buf->zeros({T, D}), buf->zeros({D, K}),
                                     buf->zeros({D})};
  Case c{"conv", std::string(w.name) + " K" + std::to_string(K), T};
  c.bytes[0] = 4.0 * 2 * T * D;  // x in; out
  c.bytes[1] = 4.0 * 3 * T * D;  // x, dout in; dx out
  c.fwd = [buf, f] { cpu::causal_conv1d_fwd(f); };
  c.bwd = [buf, g] { cpu::causal_conv1d_bwd(g); };
  return c;
}

// Linear without bias (Mamba's in_proj and out_proj): y = x·Wᵀ; dx = dy·W, dW += dyᵀ·x.
Case linear_case(const Workload& w, const char* op, int64_t in_f, int64_t out_f) {
  const int64_t T = w.tokens();
  auto buf = std::make_shared<Buffers>(4);
  const View<const float> x = buf->random({T, in_f}, -1, 1), W = buf->random({out_f, in_f}, -0.2, 0.2);
  const LinearFwdArgs<float> f{x, W, {}, buf->zeros({T, out_f})};
  const LinearBwdArgs<float> g{x, W, buf->random({T, out_f}, -1, 1), buf->zeros({T, in_f}),
                               buf->zeros({out_f, in_f}), {}};
  Case c{op, std::string(w.name) + " " + std::to_string(in_f) + "->" + std::to_string(out_f), T};
  const double tx = double(T) * in_f, ty = double(T) * out_f, wn = double(in_f) * out_f;
  c.flop[0] = 2 * double(T) * wn;
  c.flop[1] = 4 * double(T) * wn;
  c.bytes[0] = 4 * (tx + wn + ty);           // x, W in; y out
  c.bytes[1] = 4 * (tx + wn + ty + tx + 2 * wn);  // x, W, dy in; dx out; dW read and written
  c.fwd = [buf, f] { cpu::linear_fwd(f); };
  c.bwd = [buf, g] { cpu::linear_bwd(g); };
  return c;
}

// GFLOP/s of a square row-major float GEMM on the current thread count.
double gemm_ceiling(bool quick) {
  using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const M a = M::Random(kGemmSize, kGemmSize), b = M::Random(kGemmSize, kGemmSize);
  M c(kGemmSize, kGemmSize);
  const double s = bench::median_seconds([&] { c.noalias() = a * b; }, quick ? 1 : 5, quick ? 0 : 1);
  return 2.0 * std::pow(double(kGemmSize), 3) / s / 1e9;
}

void print_row(const Case& c, int threads, Timing f, Timing b, double memcpy_bw, double gemm_gflops) {
  const double wall = f.wall + b.wall, gbs = (c.bytes[0] + c.bytes[1]) / wall / 1e9;
  const double gfs = (c.flop[0] + c.flop[1]) / wall / 1e9;
  char rate[16] = "-", share[16];
  if (gfs > 0) {
    std::snprintf(rate, sizeof rate, "%.1f", gfs);
    std::snprintf(share, sizeof share, "%3.0f%% gemm", 100 * gfs / gemm_gflops);
  } else {
    std::snprintf(share, sizeof share, "%3.0f%% mcpy", 100 * gbs * 1e9 / memcpy_bw);
  }
  std::printf("| %-8s | %-22s | %d | %8.2f | %8.2f | %8.1f | %8.0f | %6.2f | %6s | %9s |\n", c.op.c_str(),
              c.size.c_str(), threads, f.wall * 1e3, b.wall * 1e3, (f.cpu + b.cpu) * 1e3,
              wall / double(c.tokens) * 1e9, gbs, rate, share);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--quick]\n  --quick  call each case once, no warm-up (smoke test)\n", argv[0]);
      return 2;
    }
  }
  const auto start = std::chrono::steady_clock::now();
  const double memcpy_bw = bench::memcpy_bandwidth();
  double gemm_gflops[std::size(kThreadCounts)];
  for (std::size_t i = 0; i < std::size(kThreadCounts); ++i) {
    set_num_threads(kThreadCounts[i]);
    gemm_gflops[i] = gemm_ceiling(quick);
  }
  const Workload pt = mamba_pt(), fm = fm4npp();

  std::printf("CPU ops, float32, Eigen %d.%d.%d (%s)%s\n", EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION,
              EIGEN_MINOR_VERSION, Eigen::SimdInstructionSetsInUse(), quick ? ", --quick: one call per case" : "");
  std::printf("MAMBA-PT: %lld tracks of 8-10 tokens packed, %lld tokens, d_model %lld, d_inner %lld\n",
              static_cast<long long>(pt.batch()), static_cast<long long>(pt.tokens()),
              static_cast<long long>(pt.d_model), static_cast<long long>(pt.d_inner));
  std::printf("FM4NPP:   %lld sequences, %lld tokens, d_model %lld, d_inner %lld\n", static_cast<long long>(fm.batch()),
              static_cast<long long>(fm.tokens()), static_cast<long long>(fm.d_model),
              static_cast<long long>(fm.d_inner));
  std::printf("scan: selective scan, d_state N, z, D, delta_bias, softplus, chunk 64; ssd: Mamba2 SSD, heads x\n"
              "headdim, N, chunk Q, 1 group; conv: causal conv1d, d_conv K, SiLU; in_proj/out_proj: Linear, no bias\n");
  std::printf("fwd/bwd ms: median wall per call; cpu ms: process CPU time of fwd + bwd, all threads; ns/tok, GB/s,\n"
              "GF/s: fwd + bwd together, over the minimum bytes and the counted FLOPs; ceil: GF/s over the GEMM\n"
              "ceiling at that thread count where FLOPs are counted, else GB/s over the memcpy ceiling\n\n");
  std::printf("| %-8s | %-22s | %s | %8s | %8s | %8s | %8s | %6s | %6s | %9s |\n", "op", "size", "t", "fwd ms",
              "bwd ms", "cpu ms", "ns/tok", "GB/s", "GF/s", "ceil");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");

  // Built one at a time, so that only one case's buffers are alive.
  const std::vector<std::function<Case()>> cases = {
      [&] { return scan_case(pt, 16); },
      [&] { return scan_case(fm, 16); },
      [&] { return scan_case(fm, 128); },
      [&] { return ssd_case(pt, 8, 16, 16, 16); },
      [&] { return ssd_case(fm, 8, 64, 16, 64); },
      [&] { return ssd_case(fm, 8, 64, 128, 64); },
      [&] { return conv_case(pt); },
      [&] { return conv_case(fm); },
      [&] { return linear_case(pt, "in_proj", pt.d_model, 2 * pt.d_inner); },
      [&] { return linear_case(pt, "out_proj", pt.d_inner, pt.d_model); },
      [&] { return linear_case(fm, "in_proj", fm.d_model, 2 * fm.d_inner); },
      [&] { return linear_case(fm, "out_proj", fm.d_inner, fm.d_model); },
  };
  for (const auto& make : cases) {
    const Case c = make();
    for (std::size_t i = 0; i < std::size(kThreadCounts); ++i) {
      set_num_threads(kThreadCounts[i]);
      const Timing f = time_call(c.fwd, quick);  // the scan's backward needs the forward's saved states
      const Timing b = time_call(c.bwd, quick);
      print_row(c, kThreadCounts[i], f, b, memcpy_bw, gemm_gflops[i]);
    }
  }
  std::printf("\nceilings: memcpy %.2f GB/s (one core, read + write)", memcpy_bw / 1e9);
  for (std::size_t i = 0; i < std::size(kThreadCounts); ++i) {
    std::printf("; %lld^3 GEMM %.1f GF/s on %d thread%s", static_cast<long long>(kGemmSize), gemm_gflops[i],
                kThreadCounts[i], kThreadCounts[i] == 1 ? "" : "s");
  }
  std::printf("\ntotal %.1f s wall\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return 0;
}
