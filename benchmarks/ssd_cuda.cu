// CUDA Mamba2 SSD benchmark: the two target problems of the CUDA backend issue (8 heads × headdim
// 64, d_state 128, ngroups 1, D and dt_bias on): 8 × 8192 tokens and 4096 tracks × 16 tokens,
// forward and forward+backward, float and bfloat16. Prints the minimum bytes (inputs read once,
// outputs written once), the FLOPs of the chunked algorithm at the chunk size run (its GEMMs,
// causal blocks counted in full), the median time over CUDA events, GB/s and TFLOP/s, and the
// fractions of the measured device-to-device copy bandwidth and cuBLASLt bf16 GEMM rate.
#include <cuda_runtime.h>

#include <cstdio>

#include "cuda_bench_util.cuh"
#include "mambatrack/cuda.cuh"
#include "mambatrack/ops/cuda/ssd.cuh"

using namespace mambatrack;

namespace {

struct Problem {
  const char* name;
  int64_t batch, len, chunk;
  double target_ms;  // forward+backward bf16 target of the issue
  int64_t hint;      // max_seqlen_hint of the "as run" rows (every sequence has length len)
};

constexpr int64_t kH = 8, kP = 64, kN = 128, kG = 1;

// FLOPs of the chunked forward / backward at chunk sizes qf / qb (per token and head unless noted).
double fwd_flops(int64_t L, double q) {
  const double per_tok_head = 2 * q * kP + 2 * kP * kN /*state*/ + 2 * kP * kN /*C·H*/;
  return static_cast<double>(L) * (kH * per_tok_head + kG * 2 * q * kN /*C·Bᵀ*/);
}
double bwd_flops(int64_t L, double q) {
  const double recompute = 2 * kP * kN;                   // chunk states again
  const double local_adj = 2 * kP * kN;                   // Σ exp(cs)·dy ⊗ C
  const double gm = 2 * q * kP, xg = 2 * kP * kN;         // dY·Xᵀ, X·G
  const double dx = 2 * q * kP + 2 * kP * kN;             // Mᵀ·dY + B·Gᵀ
  const double dc = 2 * q * kN + 2 * kP * kN, db = 2 * q * kN;
  return static_cast<double>(L) * (kH * (recompute + local_adj + gm + xg + dx + dc + db) + kG * 2 * q * kN);
}

template <class T>
void run(const Problem& pr, double bw, double gemm) {
  const int64_t L = pr.batch * pr.len;
  Tensor<int64_t> cu_h(Shape{pr.batch + 1});
  for (int64_t b = 0; b <= pr.batch; ++b) cu_h[b] = b * pr.len;
  auto cu = to_device<int64_t>(cu_h.view());
  Tensor<T, Cuda> x(Shape{L, kH, kP}), dt(Shape{L, kH}), bias(Shape{kH}), A(Shape{kH}), B(Shape{L, kG, kN}),
      C(Shape{L, kG, kN}), D(Shape{kH}), dy(Shape{L, kH, kP});
  bench::fill_uniform(x.data(), x.numel(), 1);
  bench::fill_uniform(dt.data(), dt.numel(), 2, -1.5f, 1.0f);
  bench::fill_uniform(bias.data(), bias.numel(), 3, -2.0f, 0.0f);
  bench::fill_uniform(A.data(), A.numel(), 4, -2.0f, -0.3f);
  bench::fill_uniform(B.data(), B.numel(), 5);
  bench::fill_uniform(C.data(), C.numel(), 6);
  bench::fill_uniform(D.data(), D.numel(), 7, 0.5f, 1.5f);
  bench::fill_uniform(dy.data(), dy.numel(), 8);
  Tensor<T, Cuda> y(Shape{L, kH, kP}), dx(Shape{L, kH, kP}), ddt(Shape{L, kH}), dB(Shape{L, kG, kN}),
      dC(Shape{L, kG, kN}), dA(Shape{kH}), dD(Shape{kH}), ddb(Shape{kH});
  bench::fill_uniform(dA.data(), kH, 9);
  bench::fill_uniform(dD.data(), kH, 10);
  bench::fill_uniform(ddb.data(), kH, 11);
  SsdInputs<T, Cuda> in;
  in.x = x.view();
  in.dt = dt.view();
  in.dt_bias = bias.view();
  in.A = A.view();
  in.B = B.view();
  in.C = C.view();
  in.D = D.view();
  in.cu_seqlens = cu.view();
  SsdFwdArgs<T, Cuda> fa{in, y.view(), {}};
  fa.chunk_size = pr.chunk;
  SsdBwdArgs<T, Cuda> ba;
  ba.in = in;
  ba.dy = dy.view();
  ba.dx = dx.view();
  ba.ddt = ddt.view();
  ba.dB = dB.view();
  ba.dC = dC.view();
  ba.dA = dA.view();
  ba.dD = dD.view();
  ba.ddt_bias = ddb.view();
  ba.chunk_size = pr.chunk;
  const std::size_t smem = mambatrack::cuda::ssd_cuda_detail::smem_limit();
  const double qf = static_cast<double>(mambatrack::cuda::ssd_cuda_detail::pick_chunk(pr.chunk, kN, kP, false, std::is_same_v<T, bfloat16>, smem, pr.len));
  const double qb = static_cast<double>(mambatrack::cuda::ssd_cuda_detail::pick_chunk(pr.chunk, kN, kP, true, std::is_same_v<T, bfloat16>, smem, pr.len));
  const double es = sizeof(T);
  const double lhp = static_cast<double>(L * kH * kP), lh = static_cast<double>(L * kH),
               lgn = static_cast<double>(L * kG * kN);
  const double bytes_f = es * (2 * lhp + lh + 2 * lgn);                         // x, dt, B, C in; y out
  const double bytes_b = es * (3 * lhp + 2 * lh + 4 * lgn);                     // x, dy, dt, B, C in; dx, ddt, dB, dC out
  const double flops_f = fwd_flops(L, qf), flops_b = bwd_flops(L, qb);
  // As a layer runs it: max_seqlen_hint set, the forward's states saved for the backward.
  Tensor<float, Cuda> saved;
  SsdFwdArgs<T, Cuda> fn = fa;
  SsdBwdArgs<T, Cuda> bn = ba;
  fn.in.max_seqlen_hint = bn.in.max_seqlen_hint = pr.hint;
  fn.saved_states = &saved;
  auto fwd_new = [&] { mambatrack::cuda::ssd_fwd<T>(fn); };
  auto fwd_bwd_new = [&] {
    mambatrack::cuda::ssd_fwd<T>(fn);
    bn.saved_states = View<const float, Cuda>(saved.data(), saved.shape());  // empty when not saved
    mambatrack::cuda::ssd_bwd<T>(bn);
  };
  const double tf = bench::cuda_median_seconds(fwd_new, nullptr, 30, 5);
  const double tfb = bench::cuda_median_seconds(fwd_bwd_new, nullptr, 30, 5);
  // The previous calls: no hint, no saved states (the backward recomputes them).
  const double tf0 = bench::cuda_median_seconds([&] { mambatrack::cuda::ssd_fwd<T>(fa); }, nullptr, 30, 5);
  const double tfb0 = bench::cuda_median_seconds([&] {
    mambatrack::cuda::ssd_fwd<T>(fa);
    mambatrack::cuda::ssd_bwd<T>(ba);
  }, nullptr, 30, 5);
  const char* type = std::is_same_v<T, float> ? "fp32" : "bf16";
  auto row = [&](const char* what, double bytes, double flops, double s, double target) {
    std::printf("%-22s %-4s %-7s chunk %3.0f/%3.0f  %9.1f MB %8.1f GFLOP %9.3f ms %8.1f GB/s (%4.1f%% copy) "
                "%7.2f TFLOP/s (%4.1f%% bf16 GEMM)",
                pr.name, type, what, qf, qb, bytes * 1e-6, flops * 1e-9, s * 1e3, bytes / s * 1e-9,
                100.0 * bytes / s / bw, flops / s * 1e-12, 100.0 * flops / s / gemm);
    if (target > 0) std::printf("  target %.1f ms", target);
    std::printf("\n");
  };
  row("fwd", bytes_f, flops_f, tf, 0);
  row("fwd+bwd", bytes_f + bytes_b, flops_f + flops_b, tfb, std::is_same_v<T, float> ? 0 : pr.target_ms);
  std::printf("%-22s %-4s saved states %.1f MB; without hint and saved states: fwd %.3f ms, fwd+bwd %.3f ms\n", pr.name,
              type, saved.bytes() * 1e-6, tf0 * 1e3, tfb0 * 1e3);
}

// Per-kernel times of the bf16 forward+backward (each launch sequence alone, median of 20 after 3
// warm-ups), to show where the time goes.
void breakdown(const Problem& pr) {
  namespace D = mambatrack::cuda::ssd_cuda_detail;
  using T = bfloat16;
  const int64_t L = pr.batch * pr.len;
  Tensor<int64_t> cu_h(Shape{pr.batch + 1});
  for (int64_t b = 0; b <= pr.batch; ++b) cu_h[b] = b * pr.len;
  auto cu = to_device<int64_t>(cu_h.view());
  Tensor<T, Cuda> x(Shape{L, kH, kP}), dt(Shape{L, kH}), bias(Shape{kH}), A(Shape{kH}), B(Shape{L, kG, kN}),
      C(Shape{L, kG, kN}), Dv(Shape{kH}), dy(Shape{L, kH, kP}), y(Shape{L, kH, kP}), dx(Shape{L, kH, kP}),
      ddt(Shape{L, kH}), dB(Shape{L, kG, kN}), dC(Shape{L, kG, kN});
  bench::fill_uniform(x.data(), x.numel(), 1);
  bench::fill_uniform(dt.data(), dt.numel(), 2, -1.5f, 1.0f);
  bench::fill_uniform(bias.data(), bias.numel(), 3, -2.0f, 0.0f);
  bench::fill_uniform(A.data(), A.numel(), 4, -2.0f, -0.3f);
  bench::fill_uniform(B.data(), B.numel(), 5);
  bench::fill_uniform(C.data(), C.numel(), 6);
  bench::fill_uniform(Dv.data(), Dv.numel(), 7, 0.5f, 1.5f);
  bench::fill_uniform(dy.data(), dy.numel(), 8);
  SsdInputs<T, Cuda> in;
  in.x = x.view();
  in.dt = dt.view();
  in.dt_bias = bias.view();
  in.A = A.view();
  in.B = B.view();
  in.C = C.view();
  in.D = Dv.view();
  in.cu_seqlens = cu.view();
  const SsdDims d = validate_ssd_inputs(in);
  auto timed = [](const char* name, auto&& f) {
    std::printf("    %-34s %8.3f ms\n", name, bench::cuda_median_seconds(f, nullptr, 20, 3) * 1e3);
  };
  std::printf("  %s, bf16, per kernel:\n", pr.name);
  // Forward and backward at the chunks they run; then, where the backward's occupancy rule halved
  // the chunk, the backward kernels again at twice that chunk (bwd_mma one block per SM instead
  // of two, half the chunk states): whether the rule pays for bwd_mma.
  const std::size_t limit = D::smem_limit();
  for (int config = 0; config < 3; ++config) {
    const int backward = config > 0 ? 1 : 0;
    D::Params<T> p = D::make_params<T>(in, d, pr.chunk, backward != 0);
    if (config == 2) {
      const int64_t q2 = 2 * p.Q;
      if (!p.mma || q2 > pr.chunk || static_cast<std::size_t>(D::bwd_mma_floats(q2, p.N, p.P)) * sizeof(float) > limit)
        continue;
      p.Q = static_cast<int>(q2);
      p.slots = d.batch + d.tokens / q2;
      p.nb = d.tokens / q2 + 1;
    }
    p.y = y.data();
    p.dy = dy.data();
    p.dx = dx.data();
    p.ddt = ddt.data();
    p.dB = dB.data();
    p.dC = dC.data();
    D::prepare(p, backward != 0, nullptr);
    const std::size_t ob = static_cast<std::size_t>(D::outer_floats(p.Q, p.N, p.P)) * sizeof(float);
    const std::size_t fb = static_cast<std::size_t>(D::fwd_floats(p.Q, p.N, p.P, p.mma)) * sizeof(float);
    // Both backward kernels at the backward's chunk: bwd_main (the previous one, MAMBATRACK_SSD_BWD_V1)
    // and bwd_mma (run by ssd_bwd on this tensor-core path unless MAMBATRACK_SSD_BWD_V1).
    const std::size_t bb = static_cast<std::size_t>(D::bwd_main_floats(p.Q, p.N, p.P, p.mma)) * sizeof(float);
    const std::size_t bm = static_cast<std::size_t>(D::bwd_mma_floats(p.Q, p.N, p.P)) * sizeof(float);
    D::set_smem(D::chunk_outer<T>, ob);
    if (backward) {  // each at the chunk its own direction runs
      if (bb <= limit) D::set_smem(D::bwd_main<T>, bb);
      D::set_smem(D::bwd_mma<T>, bm);
    } else {
      D::set_smem(D::fwd_out<T>, fb);
    }
    const dim3 main_grid(static_cast<unsigned>(p.slots), static_cast<unsigned>(p.ngroups));
    std::printf("   %s (chunk %d, %s, shared memory: outer %zu, fwd_out %zu, bwd_main %zu, bwd_mma %zu bytes; "
                "ssd_bwd runs %s)\n",
                config == 0 ? "forward" : config == 1 ? "backward" : "backward at twice the chunk (not run by ssd_bwd)",
                p.Q, p.mma ? "WMMA" : "SIMT", ob, fb, bb, bm, p.mma && D::kBwdMma ? "bwd_mma" : "bwd_main");
    timed("prepare (memset + map_slots)", [&] { D::prepare(p, backward != 0, nullptr); });
    timed("chunk_outer (chunk states)", [&] { D::chunk_outer<T><<<D::outer_grid(p), D::kThreads, ob>>>(p, 0); });
    timed("pass_states (state passing)", [&] { D::pass_states<T><<<D::pass_grid(p), D::kThreads>>>(p, 0); });
    if (!backward) {
      timed("fwd_out", [&] { D::fwd_out<T><<<main_grid, D::kThreads, fb>>>(p); });
    } else {
      timed("chunk_outer (local adjoints)", [&] { D::chunk_outer<T><<<D::outer_grid(p), D::kThreads, ob>>>(p, 1); });
      timed("pass_states (adjoint passing)", [&] { D::pass_states<T><<<D::pass_grid(p), D::kThreads>>>(p, 1); });
      if (bb <= limit) timed("bwd_main (previous)", [&] { D::bwd_main<T><<<main_grid, D::kThreads, bb>>>(p); });
      const int mt = D::bwd_mma_threads(p.Q);
      timed(mt == D::kThreads ? "bwd_mma" : "bwd_mma (128 threads, as run)",
            [&] { D::bwd_mma<T><<<main_grid, mt, bm>>>(p); });
      if (mt != D::kThreads)
        timed("bwd_mma (256 threads)", [&] { D::bwd_mma<T><<<main_grid, D::kThreads, bm>>>(p); });
    }
    MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  }
  // The new paths: with max_seqlen_hint = len (single chunk: prepare, fwd_out, bwd_mma only, no
  // slot map or state passing), else the forward saving its states at the backward's chunk and the
  // backward reading them (no recompute).
  in.max_seqlen_hint = pr.hint;
  for (int backward = 0; backward < 2; ++backward) {
    D::Params<T> p = D::make_params<T>(in, d, pr.chunk, backward != 0);
    if (!p.single) continue;
    p.y = y.data();
    p.dy = dy.data();
    p.dx = dx.data();
    p.ddt = ddt.data();
    p.dB = dB.data();
    p.dC = dC.data();
    D::prepare(p, backward != 0, nullptr);
    const dim3 main_grid(static_cast<unsigned>(p.slots), static_cast<unsigned>(p.ngroups));
    std::printf("   %s, single chunk (max_seqlen_hint %ld, chunk %d, %ld blocks)\n", backward ? "backward" : "forward",
                static_cast<long>(pr.hint), p.Q, static_cast<long>(p.slots));
    // fwd_short / bwd_short (run by ssd_fwd / ssd_bwd here unless MAMBATRACK_SSD_NO_SHORT) and the
    // general kernels on the same single-chunk slots.
    const std::size_t sb = static_cast<std::size_t>(D::short_floats(p.Q, p.N, p.P, p.hpg, backward != 0)) * sizeof(float);
    const bool short_ok = D::use_short(p, backward != 0, limit) || (!D::kShortKernels && sb <= limit);
    if (!backward) {
      const std::size_t fb = static_cast<std::size_t>(D::fwd_floats(p.Q, p.N, p.P, p.mma)) * sizeof(float);
      D::set_smem(D::fwd_out<T>, fb);
      timed("fwd_out (single chunk)", [&] { D::fwd_out<T><<<main_grid, D::kThreads, fb>>>(p); });
      if (short_ok) {
        D::set_smem(D::fwd_short<T>, sb);
        std::printf("    (fwd_short: %zu bytes of shared memory, %d threads)\n", sb, D::short_threads(p.hpg));
        timed("fwd_short", [&] { D::fwd_short<T><<<main_grid, D::short_threads(p.hpg), sb>>>(p); });
      }
    } else {
      const std::size_t bm = static_cast<std::size_t>(D::bwd_mma_floats(p.Q, p.N, p.P)) * sizeof(float);
      D::set_smem(D::bwd_mma<T>, bm);
      timed("bwd_mma (single chunk)", [&] { D::bwd_mma<T><<<main_grid, D::bwd_mma_threads(p.Q), bm>>>(p); });
      if (short_ok) {
        D::set_smem(D::bwd_short<T>, sb);
        std::printf("    (bwd_short: %zu bytes of shared memory, %d threads)\n", sb, D::short_threads(p.hpg));
        timed("bwd_short", [&] { D::bwd_short<T><<<main_grid, D::short_threads(p.hpg), sb>>>(p); });
      }
    }
    MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  }
  {
    const D::Params<T> pb = D::make_params<T>(in, d, pr.chunk, true);
    if (!pb.single) {
      Tensor<float, Cuda> saved;
      SsdFwdArgs<T, Cuda> fa{in, y.view(), {}};
      fa.chunk_size = pr.chunk;
      fa.saved_states = &saved;
      Tensor<T, Cuda> dA(Shape{kH}), dD(Shape{kH}), ddb(Shape{kH});
      SsdBwdArgs<T, Cuda> ba;
      ba.in = in;
      ba.dy = dy.view();
      ba.dx = dx.view();
      ba.ddt = ddt.view();
      ba.dB = dB.view();
      ba.dC = dC.view();
      ba.dA = dA.view();
      ba.dD = dD.view();
      ba.ddt_bias = ddb.view();
      ba.chunk_size = pr.chunk;
      SsdFwdArgs<T, Cuda> f0 = fa;
      f0.saved_states = nullptr;
      std::printf("   whole calls: saved states (%.1f MB per call, at the backward's chunk %d)\n",
                  static_cast<double>(d.tokens / pb.Q + 1) * kH * kP * kN * 4 * 1e-6, pb.Q);
      timed("ssd_fwd (no saved states)", [&] { mambatrack::cuda::ssd_fwd<T>(f0); });
      timed("ssd_fwd (saving states)", [&] { mambatrack::cuda::ssd_fwd<T>(fa); });
      timed("ssd_bwd (recompute)", [&] { mambatrack::cuda::ssd_bwd<T>(ba); });
      ba.saved_states = View<const float, Cuda>(saved.data(), saved.shape());
      timed("ssd_bwd (saved states)", [&] { mambatrack::cuda::ssd_bwd<T>(ba); });
      MAMBATRACK_CUDA_CHECK(cudaGetLastError());
    }
  }
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: benchmark skipped\n");
    return 0;
  }
  cudaDeviceProp prop{};
  MAMBATRACK_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const double bw = bench::cuda_copy_bandwidth();
  const double gemm = bench::cuda_bf16_gemm_rate();
  std::printf("device %s: copy %.0f GB/s (read + write), bf16 GEMM %.0f TFLOP/s\n", prop.name, bw * 1e-9,
              gemm * 1e-12);
  std::printf("SSD: 8 heads x headdim 64, d_state 128, ngroups 1, D and dt_bias; chunk = forward/backward chunk run\n");
  const Problem problems[] = {{"8 x 8192 tokens", 8, 8192, 64, 3.0, 8192}, {"4096 tracks x 16", 4096, 16, 16, 1.0, 16}};
  for (const auto& pr : problems) {
    run<bfloat16>(pr, bw, gemm);
    run<float>(pr, bw, gemm);
  }
  for (const auto& pr : problems) breakdown(pr);
  return 0;
}
