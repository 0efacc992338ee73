// CPU Linear op speed: forward (y = x·Wᵀ + b) and backward (dx = dy·W, dW += dyᵀ·x, db) at the
// projection sizes of MAMBA-PT base and FM4NPP, on 1 and 2 threads, in GFLOP/s (2·n·in·out per
// GEMM) next to the ceiling measured by a large square Eigen GEMM with the same thread count.
#include <cstdio>
#include <vector>

#include <Eigen/Core>

#include "bench_util.hpp"
#include "mambatrack/core/parallel.hpp"
#include "mambatrack/core/philox.hpp"
#include "mambatrack/ops/cpu/linear.hpp"

using namespace mambatrack;

namespace {
std::vector<float> random_floats(int64_t n, uint64_t seed) {
  Philox rng(seed);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<float>(rng.uniform(-1.0, 1.0));
  return v;
}

// GFLOP/s of C = A·B with square n×n float matrices.
double square_gemm_gflops(int64_t n) {
  using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  M a = M::Random(n, n), b = M::Random(n, n), c(n, n);
  const double s = bench::median_seconds([&] { c.noalias() = a * b; }, 5);
  return 2.0 * double(n) * double(n) * double(n) / s / 1e9;
}

struct Problem {
  const char* name;
  int64_t tokens, in, out;
};
}  // namespace

int main() {
  const Problem problems[] = {
      {"MAMBA-PT base in_proj  64->256", 4096 * 10, 64, 256},
      {"MAMBA-PT base out_proj 128->64", 4096 * 10, 128, 64},
      {"FM4NPP in_proj  256->1024", 8192, 256, 1024},
      {"FM4NPP out_proj 512->256", 8192, 512, 256},
  };
  const int64_t kSquare = 1536;
  std::printf("Linear op (cpu::linear_fwd / linear_bwd, float32, Eigen %d.%d.%d)\n", EIGEN_WORLD_VERSION,
              EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION);
  std::printf("Eigen SIMD: %s\n", Eigen::SimdInstructionSetsInUse());
  std::printf("%-32s %3s %8s %9s %8s %9s %9s %8s\n", "problem (tokens x in -> out)", "thr", "fwd ms", "fwd GF/s",
              "bwd ms", "bwd GF/s", "ceiling", "of ceil");
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    const double ceiling = square_gemm_gflops(kSquare);
    for (const Problem& p : problems) {
      const auto x = random_floats(p.tokens * p.in, 1), w = random_floats(p.out * p.in, 2),
                 b = random_floats(p.out, 3), dy = random_floats(p.tokens * p.out, 4);
      std::vector<float> y(x.size() / p.in * p.out), dx(x.size()), dw(w.size(), 0.0f), db(b.size(), 0.0f);
      const Shape sx{p.tokens, p.in}, sw{p.out, p.in}, sy{p.tokens, p.out}, sb{p.out};
      const LinearFwdArgs<float> fa{{x.data(), sx}, {w.data(), sw}, {b.data(), sb}, {y.data(), sy}};
      const LinearBwdArgs<float> ba{{x.data(), sx}, {w.data(), sw}, {dy.data(), sy},
                                    {dx.data(), sx}, {dw.data(), sw}, {db.data(), sb}};
      const double tf = bench::median_seconds([&] { cpu::linear_fwd(fa); }, 9);
      const double tb = bench::median_seconds([&] { cpu::linear_bwd(ba); }, 9);
      const double flops = 2.0 * double(p.tokens) * double(p.in) * double(p.out);
      const double gf = flops / tf / 1e9, gb = 2 * flops / tb / 1e9;
      std::printf("%-32s %3d %8.2f %9.1f %8.2f %9.1f %9.1f %7.0f%%\n", p.name, threads, tf * 1e3, gf, tb * 1e3, gb,
                  ceiling, 100.0 * (3 * flops) / (tf + tb) / 1e9 / ceiling);
    }
    std::printf("%-32s %3d %48s %9.1f  (square %lld^3 GEMM)\n", "ceiling", threads, "", ceiling,
                static_cast<long long>(kSquare));
  }
  std::printf("'of ceil': forward + backward (3 GEMMs) GFLOP/s over the square-GEMM ceiling.\n");
  return 0;
}
