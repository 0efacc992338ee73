// Mamba2 SSD scan on the CPU (chunked, float32): forward and backward time at an FM4NPP size
// (2 sequences of 4096 tokens, 8 heads × headdim 64, d_state 16 and 128) and a short-track size
// (4096 tracks of 16 tokens, d_state 128), with 1 and 2 threads. Bytes are the minimum traffic
// (each input read once, each output written once); FLOPs are the chunked algorithm's matrix
// products (per token and head 2QP + 4PN forward, 4QP + 10PN backward, plus 2QN / 6QN per group
// for C·Bᵀ), Q = min(chunk, sequence length).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bench_util.hpp"
#include "mambatrack/core/parallel.hpp"
#include "mambatrack/core/philox.hpp"
#include "mambatrack/ops/cpu/ssd.hpp"

using namespace mambatrack;

namespace {

struct Case {
  const char* name;
  int64_t batch, len, nheads, headdim, ngroups, d_state, chunk;
};

std::vector<float> random_vec(std::size_t n, uint64_t seed, double lo, double hi) {
  Philox rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.uniform(lo, hi));
  return v;
}

void run_case(const Case& c, double ceiling) {
  const int64_t T = c.batch * c.len, H = c.nheads, P = c.headdim, G = c.ngroups, N = c.d_state;
  std::vector<int64_t> cu(c.batch + 1);
  for (int64_t b = 0; b <= c.batch; ++b) cu[b] = b * c.len;
  auto x = random_vec(T * H * P, 1, -1, 1), dt = random_vec(T * H, 2, -1.5, 1.0);
  auto bias = random_vec(H, 3, -2, -0.5), A = random_vec(H, 4, -3, -0.3);
  auto B = random_vec(T * G * N, 5, -1, 1), C = random_vec(T * G * N, 6, -1, 1);
  auto D = random_vec(H, 7, 0.5, 1.5), dy = random_vec(T * H * P, 8, -1, 1);
  std::vector<float> y(x.size()), dx(x.size()), ddt(dt.size()), dB(B.size()), dC(C.size());
  std::vector<float> dA(H), dD(H), dbias(H);
  SsdInputs<float> in;
  in.x = View<const float>(x.data(), Shape{T, H, P});
  in.dt = View<const float>(dt.data(), Shape{T, H});
  in.dt_bias = View<const float>(bias.data(), Shape{H});
  in.A = View<const float>(A.data(), Shape{H});
  in.B = View<const float>(B.data(), Shape{T, G, N});
  in.C = View<const float>(C.data(), Shape{T, G, N});
  in.D = View<const float>(D.data(), Shape{H});
  in.cu_seqlens = View<const int64_t>(cu.data(), Shape{c.batch + 1});
  SsdFwdArgs<float> fa;
  fa.in = in;
  fa.y = View<float>(y.data(), Shape{T, H, P});
  fa.chunk_size = c.chunk;
  SsdBwdArgs<float> ba;
  ba.in = in;
  ba.dy = View<const float>(dy.data(), Shape{T, H, P});
  ba.dx = View<float>(dx.data(), Shape{T, H, P});
  ba.ddt = View<float>(ddt.data(), Shape{T, H});
  ba.dB = View<float>(dB.data(), Shape{T, G, N});
  ba.dC = View<float>(dC.data(), Shape{T, G, N});
  ba.dA = View<float>(dA.data(), Shape{H});
  ba.dD = View<float>(dD.data(), Shape{H});
  ba.ddt_bias = View<float>(dbias.data(), Shape{H});
  ba.chunk_size = c.chunk;

  const double Q = static_cast<double>(std::min(c.chunk, c.len));
  const double fwd_flop = T * (H * (2 * Q * P + 4.0 * P * N) + G * 2 * Q * N);
  const double bwd_flop = T * (H * (4 * Q * P + 10.0 * P * N) + G * 6 * Q * N);
  const double fwd_bytes = 4.0 * T * (2 * H * P + H + 2 * G * N);      // x, dt, B, C in; y out
  const double bwd_bytes = 4.0 * T * (4 * H * P + 2 * H + 4 * G * N);  // + dy in; dx, ddt, dB, dC out
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    const int runs = T * H * P * N > (int64_t(1) << 31) ? 3 : 5;
    const double tf = bench::median_seconds([&] { cpu::ssd_fwd(fa); }, runs);
    const double tb = bench::median_seconds([&] { cpu::ssd_bwd(ba); }, runs);
    std::printf("| %-34s | %d | %5lld | %8.1f | %8.1f | %5.2f | %5.2f | %5.1f | %5.1f |\n", c.name,
                threads, static_cast<long long>(c.chunk), tf / T * 1e9, tb / T * 1e9,
                fwd_bytes / tf / 1e9, bwd_bytes / tb / 1e9, fwd_flop / tf / 1e9,
                bwd_flop / tb / 1e9);
  }
  (void)ceiling;
}

}  // namespace

int main(int argc, char** argv) {
  // Optional argument: the number of short tracks (default 4096).
  const int64_t tracks = argc > 1 ? std::atoll(argv[1]) : 4096;
  const double ceiling = bench::memcpy_bandwidth();
  std::printf("Mamba2 SSD, chunked CPU float32; memcpy bandwidth (1 core, read+write): %.1f GB/s\n",
              ceiling / 1e9);
  std::printf("| case | threads | chunk | fwd ns/token | bwd ns/token | fwd GB/s | bwd GB/s | "
              "fwd GFLOP/s | bwd GFLOP/s |\n|---|---|---|---|---|---|---|---|---|\n");
  const Case cases[] = {
      {"FM4NPP 2x4096, H8 P64 N16", 2, 4096, 8, 64, 1, 16, 64},
      {"FM4NPP 2x4096, H8 P64 N128", 2, 4096, 8, 64, 1, 128, 64},
      {"FM4NPP 2x4096, H8 P64 N128, Q=128", 2, 4096, 8, 64, 1, 128, 128},
      {"tracks Bx16, H8 P64 N128", tracks, 16, 8, 64, 1, 128, 64},
  };
  for (const auto& c : cases) run_case(c, ceiling);
  return 0;
}
