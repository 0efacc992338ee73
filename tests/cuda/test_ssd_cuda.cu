// [cuda] Mamba2 SSD: CUDA forward/backward against the float64 reference on fresh random inputs
// (float and bfloat16 storage): packed varlen batches (lengths 1, 2, 3, 7, 64, 100 and an empty
// one) with chunk sizes that do and do not divide them, ngroups 1 and 2, initial/final state,
// D and dt_bias present and absent, the dt clamp, every output written (poisoned first), the
// accumulation of dA/dD/ddt_bias, bit-identical backward runs, and argument errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "mambatrack/cuda.cuh"
#include "mambatrack/ops/cuda/ssd.cuh"
#include "mambatrack/ops/reference/ssd.hpp"
#include "cuda_test_util.cuh"
#include "support/test_support.hpp"

using namespace mambatrack;

namespace {

struct SsdCase {
  std::vector<int64_t> lens;
  int64_t H = 4, P = 16, N = 16, G = 2;
  std::vector<int64_t> chunks = {16};
  bool D = true, bias = true, init = true, dfinal = true, dinit = true, clamp = false;
  int64_t hint = 0;        // SsdInputs::max_seqlen_hint
  bool saved = false;      // forward saves its states; backward run 0 reads them, run 1 recomputes
  bool final_out = true;   // the forward writes final_state
};

struct Tol {
  double act;    // y, final_state, dx, dB, dC, dinitial_state
  double ddt;    // ddt
  double param;  // dA, dD, ddt_bias (accumulated)
};

using test::count_nonfinite;
using test::make;
using test::Pair;
using test::poisoned;
using test::to_doubles;
using test::values;

template <class T>
void run_case(const SsdCase& sc, uint64_t seed, const Tol& tol) {
  Philox rng(seed, 23);
  const int64_t batch = static_cast<int64_t>(sc.lens.size());
  Tensor<int64_t> cu(Shape{batch + 1});
  cu[0] = 0;
  for (int64_t b = 0; b < batch; ++b) cu[b + 1] = cu[b] + sc.lens[static_cast<std::size_t>(b)];
  const int64_t L = cu[batch], H = sc.H, P = sc.P, N = sc.N, G = sc.G;
  Tensor<int64_t, Cuda> cu_dev = to_device<int64_t>(cu.view());

  // dt_raw + dt_bias in about [-3.5, 1] (dt ≈ 0.03..1.3), A in -[0.3, 2]: states decay within a
  // chunk but not to zero. The parameter-gradient accumulators start small (±0.1) so that the
  // accumulated totals are dominated by the gradients themselves.
  auto x = make<T>(Shape{L, H, P}, rng, -1, 1);
  auto dt = make<T>(Shape{L, H}, rng, -1.5, 1.0);
  auto bias = make<T>(Shape{H}, rng, -2.0, 0.0);
  auto A = make<T>(Shape{H}, rng, -2.0, -0.3);
  auto B = make<T>(Shape{L, G, N}, rng, -1, 1);
  auto C = make<T>(Shape{L, G, N}, rng, -1, 1);
  auto D = make<T>(Shape{H}, rng, 0.5, 1.5);
  auto init = make<T>(Shape{batch, H, P, N}, rng, -1, 1);
  auto dy = make<T>(Shape{L, H, P}, rng, -1, 1);
  auto dfinal = make<T>(Shape{batch, H, P, N}, rng, -1, 1);
  auto dA0 = make<T>(Shape{H}, rng, -0.1, 0.1);
  auto dD0 = make<T>(Shape{H}, rng, -0.1, 0.1);
  auto ddb0 = make<T>(Shape{H}, rng, -0.1, 0.1);
  // The clamp (when on) bites on both sides for these dt: about a third of the tokens each.
  const T dt_min = T(sc.clamp ? 0.15f : 0.0f);
  const T dt_max = sc.clamp ? T(0.6f) : ssd_detail::infinity<T>();

  SsdInputs<double> rin;
  rin.x = x.d.view();
  rin.dt = dt.d.view();
  if (sc.bias) rin.dt_bias = bias.d.view();
  rin.A = A.d.view();
  rin.B = B.d.view();
  rin.C = C.d.view();
  if (sc.D) rin.D = D.d.view();
  if (sc.init) rin.initial_state = init.d.view();
  rin.cu_seqlens = cu.view();
  rin.dt_min = static_cast<double>(static_cast<float>(dt_min));
  rin.dt_max = static_cast<double>(static_cast<float>(dt_max));
  Tensor<double> r_y(Shape{L, H, P}), r_final(Shape{batch, H, P, N});
  reference::ssd_fwd({rin, r_y.view(), r_final.view()});

  Tensor<double> r_dx(Shape{L, H, P}), r_ddt(Shape{L, H}), r_dB(Shape{L, G, N}), r_dC(Shape{L, G, N}),
      r_dinit(Shape{batch, H, P, N}), r_dA(Shape{H}), r_dD(Shape{H}), r_ddb(Shape{H});
  copy<double>(dA0.d.view(), r_dA.view());
  copy<double>(dD0.d.view(), r_dD.view());
  copy<double>(ddb0.d.view(), r_ddb.view());
  SsdBwdArgs<double> rb;
  rb.in = rin;
  rb.dy = dy.d.view();
  if (sc.dfinal) rb.dfinal_state = dfinal.d.view();
  rb.dx = r_dx.view();
  rb.ddt = r_ddt.view();
  rb.dB = r_dB.view();
  rb.dC = r_dC.view();
  if (sc.dinit) rb.dinitial_state = r_dinit.view();
  rb.dA = r_dA.view();
  if (sc.D) rb.dD = r_dD.view();
  if (sc.bias) rb.ddt_bias = r_ddb.view();
  reference::ssd_bwd(rb);

  SsdInputs<T, Cuda> in;
  in.x = x.dev.view();
  in.dt = dt.dev.view();
  if (sc.bias) in.dt_bias = bias.dev.view();
  in.A = A.dev.view();
  in.B = B.dev.view();
  in.C = C.dev.view();
  if (sc.D) in.D = D.dev.view();
  if (sc.init) in.initial_state = init.dev.view();
  in.cu_seqlens = cu_dev.view();
  in.dt_min = dt_min;
  in.dt_max = dt_max;
  in.max_seqlen_hint = sc.hint;

  for (int64_t chunk : sc.chunks) {
    INFO("seed " << seed << ", nheads " << H << ", headdim " << P << ", d_state " << N << ", ngroups " << G
                  << ", chunk " << chunk << ", tokens " << L << ", batch " << batch);
    auto y = poisoned<T>(Shape{L, H, P});
    auto fin = poisoned<T>(Shape{batch, H, P, N});
    SsdFwdArgs<T, Cuda> fa;
    fa.in = in;
    fa.y = y.view();
    if (sc.final_out) fa.final_state = fin.view();
    fa.chunk_size = chunk;
    Tensor<float, Cuda> saved;
    if (sc.saved) fa.saved_states = &saved;
    cuda::ssd_fwd<T>(fa);
    MAMBATRACK_CUDA_CHECK(cudaDeviceSynchronize());
    INFO("max_seqlen_hint " << sc.hint << ", saved states " << (saved.data() ? saved.numel() : 0) << " floats");
    CHECK_CLOSE("y", to_doubles(y), values(r_y), tol.act);
    if (sc.final_out) CHECK_CLOSE("final_state", to_doubles(fin), values(r_final), tol.act);

    std::vector<std::vector<double>> runs[2];
    for (int run = 0; run < 2; ++run) {
      auto dx = poisoned<T>(Shape{L, H, P});
      auto ddt = poisoned<T>(Shape{L, H});
      auto dB = poisoned<T>(Shape{L, G, N});
      auto dC = poisoned<T>(Shape{L, G, N});
      auto dinit = poisoned<T>(Shape{batch, H, P, N});
      auto dA = to_device<T>(dA0.t.view());
      auto dD = to_device<T>(dD0.t.view());
      auto ddb = to_device<T>(ddb0.t.view());
      SsdBwdArgs<T, Cuda> cb;
      cb.in = in;
      cb.dy = dy.dev.view();
      if (sc.dfinal) cb.dfinal_state = dfinal.dev.view();
      cb.dx = dx.view();
      cb.ddt = ddt.view();
      cb.dB = dB.view();
      cb.dC = dC.view();
      if (sc.dinit) cb.dinitial_state = dinit.view();
      cb.dA = dA.view();
      if (sc.D) cb.dD = dD.view();
      if (sc.bias) cb.ddt_bias = ddb.view();
      cb.chunk_size = chunk;
      if (run == 0 && saved.data() != nullptr) cb.saved_states = View<const float, Cuda>(saved.data(), saved.shape());
      cuda::ssd_bwd<T>(cb);
      MAMBATRACK_CUDA_CHECK(cudaDeviceSynchronize());
      runs[run] = {to_doubles(dx), to_doubles(ddt), to_doubles(dB), to_doubles(dC), to_doubles(dA)};
      if (sc.dinit) runs[run].push_back(to_doubles(dinit));
      if (sc.D) runs[run].push_back(to_doubles(dD));
      if (sc.bias) runs[run].push_back(to_doubles(ddb));
    }
    const auto& g = runs[0];
    CHECK_CLOSE("dx", g[0], values(r_dx), tol.act);
    CHECK_CLOSE("ddt", g[1], values(r_ddt), tol.ddt);
    CHECK_CLOSE("dB", g[2], values(r_dB), tol.act);
    CHECK_CLOSE("dC", g[3], values(r_dC), tol.act);
    CHECK_CLOSE("dA (accumulated)", g[4], values(r_dA), tol.param);
    std::size_t k = 5;
    if (sc.dinit) CHECK_CLOSE("dinitial_state", g[k++], values(r_dinit), tol.act);
    if (sc.D) CHECK_CLOSE("dD (accumulated)", g[k++], values(r_dD), tol.param);
    if (sc.bias) CHECK_CLOSE("ddt_bias (accumulated)", g[k++], values(r_ddb), tol.param);
    int64_t differing = 0;
    for (std::size_t i = 0; i < runs[0].size(); ++i)
      for (std::size_t j = 0; j < runs[0][i].size(); ++j)
        differing += !(runs[0][i][j] == runs[1][i][j]) && !(std::isnan(runs[0][i][j]) && std::isnan(runs[1][i][j]));
    INFO("gradient elements differing between two backward runs (with saved states, then recomputing them)");
    CHECK(differing == 0);
  }
}

// float32 against float64: float GEMM sums over <= 64 tokens and d_state / headdim entries, exps
// of float chunk cumsums (summed in double, rounded once). A host emulation of these kernels
// (tests/cuda/emulation) measured ~1-3e-7 on y, final_state, dx, dB, dC, ddt, dinitial_state and
// up to 4e-6 on dA (a sum of ∂L/∂cs·cumsum(dt) over every token, with cancellation), the GPU's
// expf (<= 2 ulp) adds little: 1e-5 allowed on activations and ddt, 3e-5 on dA, dD, ddt_bias.
constexpr Tol kTolF32{1e-5, 1e-5, 3e-5};
// bfloat16 storage: every stored input and output is rounded to 8 mantissa bits (2^-9
// relative); the parameter gradients are long sums rounded once at the end.
constexpr Tol kTolBF16{1e-2, 1e-2, 1e-2};

}  // namespace

TEST_CASE("cuda ssd fp32: packed varlen 1..100, ngroups 2, all options, chunks 16 and 24", "[cuda]") {
  SsdCase sc;
  sc.lens = {1, 2, 3, 7, 64, 100, 0, 33};
  sc.H = 4;
  sc.P = 16;
  sc.N = 16;
  sc.G = 2;
  sc.chunks = {16, 24};  // 16 divides 64, not 100; 24 divides neither
  run_case<float>(sc, test::test_seed(611), kTolF32);
}

TEST_CASE("cuda ssd fp32: ngroups 1, no D, no dt_bias, no states, chunk 7", "[cuda]") {
  SsdCase sc;
  sc.lens = {100, 1, 64, 2, 7, 3};
  sc.H = 2;
  sc.P = 8;
  sc.N = 4;
  sc.G = 1;
  sc.chunks = {7, 64};
  sc.D = sc.bias = sc.init = sc.dfinal = sc.dinit = false;
  run_case<float>(sc, test::test_seed(612), kTolF32);
}

TEST_CASE("cuda ssd fp32: dt clamp, dinitial_state without an initial state, headdim 12, d_state 12",
          "[cuda]") {
  SsdCase sc;
  sc.lens = {7, 64, 100, 1};
  sc.H = 4;
  sc.P = 12;
  sc.N = 12;
  sc.G = 2;
  sc.chunks = {32};
  sc.clamp = true;
  sc.init = false;
  run_case<float>(sc, test::test_seed(613), kTolF32);
}

TEST_CASE("cuda ssd fp32: the target shape (headdim 64, d_state 128), chunk reduced for shared memory",
          "[cuda]") {
  SsdCase sc;
  sc.lens = {100, 3, 64};
  sc.H = 2;
  sc.P = 64;
  sc.N = 128;
  sc.G = 1;
  sc.chunks = {64};  // the backward runs chunks of 32 (shared memory), the forward 32 (occupancy)
  run_case<float>(sc, test::test_seed(614), kTolF32);
}

TEST_CASE("cuda ssd bf16: the target shape (headdim 64, d_state 128), WMMA, forward chunk 64", "[cuda]") {
  SsdCase sc;
  sc.lens = {100, 3, 64};
  sc.H = 2;
  sc.P = 64;
  sc.N = 128;
  sc.G = 1;
  sc.chunks = {64};  // the forward runs chunks of 64 (102 KB, two blocks per SM), the backward 32
  run_case<bfloat16>(sc, test::test_seed(618), kTolBF16);
}

// bf16 with headdim and d_state multiples of 16 runs the tensor-core (WMMA) products, other
// sizes the SIMT path: both are covered.
TEST_CASE("cuda ssd bf16: many short tracks and long sequences, ngroups 1 and 2, WMMA and SIMT", "[cuda]") {
  SsdCase sc;
  sc.lens = std::vector<int64_t>(150, 16);
  sc.lens.insert(sc.lens.end(), {1, 2, 3, 7, 64, 100, 300});
  sc.H = 4;
  sc.P = 32;
  sc.N = 64;
  sc.G = 1;
  sc.chunks = {16, 64};
  run_case<bfloat16>(sc, test::test_seed(615), kTolBF16);
  sc.lens = {1, 2, 3, 7, 64, 100};
  sc.G = 2;
  sc.P = 16;
  sc.N = 32;
  sc.chunks = {32};
  sc.init = false;
  run_case<bfloat16>(sc, test::test_seed(616), kTolBF16);
  sc.P = 8;  // not a multiple of 16: SIMT
  sc.N = 12;
  sc.chunks = {24};
  sc.init = true;
  sc.clamp = true;
  run_case<bfloat16>(sc, test::test_seed(617), kTolBF16);
}

// max_seqlen_hint: every sequence in one chunk, no state passing. Without initial / final
// states (as a layer trains) bf16 runs fwd_short / bwd_short, with them fwd_out / bwd_mma.
TEST_CASE("cuda ssd bf16: short tracks under max_seqlen_hint, with and without states", "[cuda]") {
  SsdCase sc;
  sc.lens = std::vector<int64_t>(120, 16);
  sc.lens.insert(sc.lens.end(), {1, 5, 0, 13, 9});
  sc.H = 8;
  sc.P = 64;
  sc.N = 128;
  sc.G = 1;
  sc.chunks = {64};
  sc.hint = 16;
  sc.init = sc.dfinal = sc.dinit = sc.final_out = false;
  sc.saved = true;  // single chunk: nothing to save, both backward runs recompute nothing
  run_case<bfloat16>(sc, test::test_seed(619), kTolBF16);
  sc.lens = {30, 17, 5, 32, 0, 1, 32};
  sc.H = 12;
  sc.P = 16;
  sc.N = 32;
  sc.hint = 32;  // chunk 32
  run_case<bfloat16>(sc, test::test_seed(620), kTolBF16);
  sc.init = sc.dfinal = sc.dinit = sc.final_out = true;
  sc.G = 2;
  sc.H = 4;
  run_case<bfloat16>(sc, test::test_seed(621), kTolBF16);
  sc.lens = {7, 12, 0, 3};  // fp32: SIMT kernels, single chunk
  sc.P = sc.N = 12;
  sc.hint = 12;
  run_case<float>(sc, test::test_seed(622), kTolF32);
}

// Saved states: the backward reads the forward's chunk-start states instead of recomputing them
// and gives the same bits (run_case compares the two backward runs); the bf16 target shape runs
// the forward at chunk 64 over states saved at the backward's chunk 32.
TEST_CASE("cuda ssd: saved states give the recomputing backward's bits", "[cuda]") {
  SsdCase sc;
  sc.lens = {100, 3, 64, 0, 200};
  sc.H = 2;
  sc.P = 64;
  sc.N = 128;
  sc.G = 1;
  sc.chunks = {64};
  sc.saved = true;
  run_case<bfloat16>(sc, test::test_seed(623), kTolBF16);
  sc.lens = {1, 2, 3, 7, 64, 100, 0, 33};
  sc.H = 4;
  sc.P = 16;
  sc.N = 16;
  sc.G = 2;
  sc.chunks = {16, 24};
  sc.hint = 100;  // above the chunk: only caps it
  run_case<float>(sc, test::test_seed(624), kTolF32);
}

TEST_CASE("cuda ssd: a max_seqlen_hint below a sequence's length gives NaN, not wrong numbers", "[cuda]") {
  const int64_t L = 25, H = 2, P = 16, N = 16;
  Philox rng(test::test_seed(625), 23);
  auto x = make<bfloat16>(Shape{L, H, P}, rng, -1, 1);
  auto dt = make<bfloat16>(Shape{L, H}, rng, -1.5, 1.0);
  auto A = make<bfloat16>(Shape{H}, rng, -2.0, -0.3);
  auto B = make<bfloat16>(Shape{L, 1, N}, rng, -1, 1);
  auto C = make<bfloat16>(Shape{L, 1, N}, rng, -1, 1);
  Tensor<int64_t> cu_h(Shape{3});
  cu_h[0] = 0;
  cu_h[1] = 20;  // longer than the hint's chunk of 16
  cu_h[2] = L;
  auto cu = to_device<int64_t>(cu_h.view());
  SsdInputs<bfloat16, Cuda> in;
  in.x = x.dev.view();
  in.dt = dt.dev.view();
  in.A = A.dev.view();
  in.B = B.dev.view();
  in.C = C.dev.view();
  in.cu_seqlens = cu.view();
  in.max_seqlen_hint = 16;
  Tensor<bfloat16, Cuda> y(Shape{L, H, P});
  MAMBATRACK_CUDA_CHECK(cudaMemset(y.data(), 0, y.bytes()));  // finite: the NaN must come from the kernel
  SsdFwdArgs<bfloat16, Cuda> fa{in, y.view(), {}};
  fa.chunk_size = 64;
  cuda::ssd_fwd<bfloat16>(fa);
  MAMBATRACK_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<double> yv = to_doubles(y);
  int64_t nan_first = 0, nan_second = 0;
  for (int64_t i = 0; i < L * H * P; ++i) (i < 20 * H * P ? nan_first : nan_second) += std::isnan(yv[static_cast<std::size_t>(i)]);
  CHECK(nan_first == 20 * H * P);  // the too-long sequence: every output NaN
  CHECK(nan_second == 0);          // the other one computed
}

TEST_CASE("cuda ssd: bad shapes and unsupported d_state / headdim throw", "[cuda]") {
  const int64_t L = 10, H = 2, P = 8, N = 16;
  Tensor<float, Cuda> x(Shape{L, H, P}), dt(Shape{L, H}), A(Shape{H}), B(Shape{L, 1, N}), C(Shape{L, 1, N});
  Tensor<float, Cuda> y(Shape{L, H, P}), bad(Shape{L, H, P + 1}), B5(Shape{L, 1, 5}), x7(Shape{L, H, 7}),
      y7(Shape{L, H, 7});
  Tensor<int64_t> cu_h(Shape{2});
  cu_h[0] = 0;
  cu_h[1] = L;
  auto cu = to_device<int64_t>(cu_h.view());
  SsdInputs<float, Cuda> in;
  in.x = x.view();
  in.dt = dt.view();
  in.A = A.view();
  in.B = B.view();
  in.C = C.view();
  in.cu_seqlens = cu.view();
  CHECK_THROWS_AS(cuda::ssd_fwd<float>({in, bad.view(), {}}), ShapeError);
  auto in2 = in;
  in2.B = B5.view();
  in2.C = B5.view();
  CHECK_THROWS_AS(cuda::ssd_fwd<float>({in2, y.view(), {}}), ConfigError);
  auto in3 = in;
  in3.x = x7.view();
  CHECK_THROWS_AS(cuda::ssd_fwd<float>({in3, y7.view(), {}}), ConfigError);
  SsdFwdArgs<float, Cuda> f{in, y.view(), {}};
  f.chunk_size = 0;
  CHECK_THROWS_AS(cuda::ssd_fwd<float>(f), ConfigError);
  SsdBwdArgs<float, Cuda> bw;
  bw.in = in;
  bw.dy = y.view();
  bw.dx = y.view();
  bw.ddt = dt.view();
  bw.dB = B.view();
  bw.dC = bad.view();  // wrong shape
  bw.dA = A.view();
  CHECK_THROWS_AS(cuda::ssd_bwd<float>(bw), ShapeError);
}
