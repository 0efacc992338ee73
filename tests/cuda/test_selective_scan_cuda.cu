// [cuda] selective scan: CUDA forward/backward against the float64 reference on fresh random
// inputs (float and bfloat16 storage), packed varlen batches, ngroups, initial/final state, saved
// chunk states in the CPU slot layout, every output written (poisoned first), accumulation of
// the parameter gradients, bit-identical backward runs, and shape errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "mambatrack/cuda.cuh"
#include "mambatrack/ops/cuda/selective_scan.cuh"
#include "mambatrack/ops/reference/selective_scan.hpp"
#include "cuda_test_util.cuh"
#include "support/test_support.hpp"

using namespace mambatrack;

namespace {

struct ScanCase {
  std::vector<int64_t> lens;
  int64_t dim = 64, N = 16, G = 1, chunk = 64;
  bool z = true, D = true, bias = true, init = true, dfinal = true, softplus = true;
  int64_t max_len_hint = 0;  // SelectiveScanInputs::max_seqlen_hint
  cuda::scan_detail::ScanPath path = cuda::scan_detail::ScanPath::kAuto;
  cuda::scan_detail::BwdKernel bwd = cuda::scan_detail::BwdKernel::kAuto;
};

// Forces a scan path and backward kernel for its lifetime (restores the automatic selection even
// when a check throws).
struct PathGuard {
  PathGuard(cuda::scan_detail::ScanPath p, cuda::scan_detail::BwdKernel k) {
    cuda::scan_detail::scan_path_override() = p;
    cuda::scan_detail::bwd_kernel_override() = k;
  }
  ~PathGuard() {
    cuda::scan_detail::scan_path_override() = cuda::scan_detail::ScanPath::kAuto;
    cuda::scan_detail::bwd_kernel_override() = cuda::scan_detail::BwdKernel::kAuto;
  }
  PathGuard(const PathGuard&) = delete;
  PathGuard& operator=(const PathGuard&) = delete;
};

// Every CUDA output of one case, in a fixed order (see run_case), for comparing two paths.
struct ScanOutputs {
  std::vector<const char*> names;
  std::vector<std::vector<double>> values;
};

using test::count_nonfinite;
using test::make;
using test::Pair;
using test::poisoned;
using test::to_doubles;
using test::values;

template <class T>
ScanOutputs run_case(const ScanCase& sc, uint64_t seed, double tol) {
  INFO("seed " << seed << ", dim " << sc.dim << ", d_state " << sc.N << ", ngroups " << sc.G << ", chunk "
                << sc.chunk << ", max_seqlen_hint " << sc.max_len_hint << ", path "
                << static_cast<int>(sc.path) << ", backward kernel " << static_cast<int>(sc.bwd));
  PathGuard guard(sc.path, sc.bwd);
  ScanOutputs result;
  Philox rng(seed, 11);
  const int64_t batch = static_cast<int64_t>(sc.lens.size());
  Tensor<int64_t> cu(Shape{batch + 1});
  cu[0] = 0;
  for (int64_t b = 0; b < batch; ++b) cu[b + 1] = cu[b] + sc.lens[static_cast<std::size_t>(b)];
  const int64_t L = cu[batch], dim = sc.dim, N = sc.N, G = sc.G;
  Tensor<int64_t, Cuda> cu_dev = to_device<int64_t>(cu.view());

  auto u = make<T>(Shape{L, dim}, rng, -1, 1);
  auto delta = sc.softplus ? make<T>(Shape{L, dim}, rng, -3, 1) : make<T>(Shape{L, dim}, rng, 0.01, 0.5);
  auto A = make<T>(Shape{dim, N}, rng, -4, -0.3);
  auto B = make<T>(Shape{L, G, N}, rng, -1, 1);
  auto C = make<T>(Shape{L, G, N}, rng, -1, 1);
  auto D = make<T>(Shape{dim}, rng, -1, 1);
  auto bias = make<T>(Shape{dim}, rng, -1, 0.5);
  auto z = make<T>(Shape{L, dim}, rng, -2, 2);
  using S = scan_state_t<T>;  // states: float for bfloat16 storage
  auto init = make<S>(Shape{batch, dim, N}, rng, -0.5, 0.5);
  auto dout = make<T>(Shape{L, dim}, rng, -1, 1);
  auto dfinal = make<S>(Shape{batch, dim, N}, rng, -0.5, 0.5);
  auto dA0 = make<T>(Shape{dim, N}, rng, -1, 1);  // accumulated into
  auto dD0 = make<T>(Shape{dim}, rng, -1, 1);
  auto ddb0 = make<T>(Shape{dim}, rng, -1, 1);

  // Reference (float64 on the stored values).
  SelectiveScanInputs<double> rin;
  rin.u = u.d.view();
  rin.delta = delta.d.view();
  rin.A = A.d.view();
  rin.B = B.d.view();
  rin.C = C.d.view();
  if (sc.D) rin.D = D.d.view();
  if (sc.bias) rin.delta_bias = bias.d.view();
  if (sc.z) rin.z = z.d.view();
  if (sc.init) rin.initial_state = init.d.view();
  rin.cu_seqlens = cu.view();
  rin.delta_softplus = sc.softplus;
  rin.chunk = sc.chunk;
  const Shape saved_shape = selective_scan_saved_shape(rin);
  Tensor<double> r_out(Shape{L, dim}), r_final(Shape{batch, dim, N}), r_saved(saved_shape);
  fill(r_saved.view(), 0.0);
  reference::selective_scan_fwd({rin, r_out.view(), r_final.view(), r_saved.view()});

  // CUDA forward.
  SelectiveScanInputs<T, Cuda> in;
  in.u = u.dev.view();
  in.delta = delta.dev.view();
  in.A = A.dev.view();
  in.B = B.dev.view();
  in.C = C.dev.view();
  if (sc.D) in.D = D.dev.view();
  if (sc.bias) in.delta_bias = bias.dev.view();
  if (sc.z) in.z = z.dev.view();
  if (sc.init) in.initial_state = init.dev.view();
  in.cu_seqlens = cu_dev.view();
  in.delta_softplus = sc.softplus;
  in.chunk = sc.chunk;
  in.max_seqlen_hint = sc.max_len_hint;
  auto out = poisoned<T>(Shape{L, dim});
  auto fin = poisoned<S>(Shape{batch, dim, N});
  // Slots that no chunk uses stay poisoned: compare the used ones only (zero elsewhere).
  auto saved = poisoned<S>(saved_shape);
  cuda::selective_scan_fwd<T>({in, out.view(), fin.view(), saved.view()});
  MAMBATRACK_CUDA_CHECK(cudaDeviceSynchronize());
  CHECK_CLOSE("out", to_doubles(out), values(r_out), tol);
  CHECK_CLOSE("final_state", to_doubles(fin), values(r_final), tol);
  {
    std::vector<double> got = to_doubles(saved), want = values(r_saved);
    std::vector<char> used(static_cast<std::size_t>(saved_shape[0]), 0);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t k = 0; k * sc.chunk < sc.lens[static_cast<std::size_t>(b)]; ++k)
        used[static_cast<std::size_t>(selective_scan_slot(b, cu[b], k, sc.chunk))] = 1;
    const std::size_t per_slot = static_cast<std::size_t>(dim * N);
    for (std::size_t s = 0; s < used.size(); ++s)
      if (!used[s])
        for (std::size_t i = 0; i < per_slot; ++i) got[s * per_slot + i] = want[s * per_slot + i] = 0.0;
    CHECK_CLOSE("saved_states", got, want, tol);
    result.names = {"out", "final_state", "saved_states (used slots)"};
    result.values = {to_doubles(out), to_doubles(fin), got};
  }

  // Reference backward.
  Tensor<double> r_du(Shape{L, dim}), r_ddelta(Shape{L, dim}), r_dB(Shape{L, G, N}), r_dC(Shape{L, G, N}),
      r_dz(Shape{L, dim}), r_dinit(Shape{batch, dim, N}), r_dA(Shape{dim, N}), r_dD(Shape{dim}), r_ddb(Shape{dim});
  copy<double>(dA0.d.view(), r_dA.view());
  copy<double>(dD0.d.view(), r_dD.view());
  copy<double>(ddb0.d.view(), r_ddb.view());
  SelectiveScanBwdArgs<double> rb;
  rb.in = rin;
  rb.dout = dout.d.view();
  if (sc.dfinal) rb.dfinal_state = dfinal.d.view();
  rb.du = r_du.view();
  rb.ddelta = r_ddelta.view();
  rb.dB = r_dB.view();
  rb.dC = r_dC.view();
  if (sc.z) rb.dz = r_dz.view();
  if (sc.init) rb.dinitial_state = r_dinit.view();
  rb.dA = r_dA.view();
  if (sc.D) rb.dD = r_dD.view();
  if (sc.bias) rb.ddelta_bias = r_ddb.view();
  reference::selective_scan_bwd(rb);

  // CUDA backward, twice from the same accumulators: bit-identical.
  std::vector<std::vector<double>> runs[2];
  for (int run = 0; run < 2; ++run) {
    auto du = poisoned<T>(Shape{L, dim});
    auto ddelta = poisoned<T>(Shape{L, dim});
    auto dB = poisoned<T>(Shape{L, G, N});
    auto dC = poisoned<T>(Shape{L, G, N});
    auto dz = poisoned<T>(Shape{L, dim});
    auto dinit = poisoned<S>(Shape{batch, dim, N});
    auto dA = to_device<T>(dA0.t.view());
    auto dD = to_device<T>(dD0.t.view());
    auto ddb = to_device<T>(ddb0.t.view());
    SelectiveScanBwdArgs<T, Cuda> cb;
    cb.in = in;
    cb.saved_states = saved.view();
    cb.dout = dout.dev.view();
    if (sc.dfinal) cb.dfinal_state = dfinal.dev.view();
    cb.du = du.view();
    cb.ddelta = ddelta.view();
    cb.dB = dB.view();
    cb.dC = dC.view();
    if (sc.z) cb.dz = dz.view();
    if (sc.init) cb.dinitial_state = dinit.view();
    cb.dA = dA.view();
    if (sc.D) cb.dD = dD.view();
    if (sc.bias) cb.ddelta_bias = ddb.view();
    cuda::selective_scan_bwd<T>(cb);
    MAMBATRACK_CUDA_CHECK(cudaDeviceSynchronize());
    runs[run] = {to_doubles(du), to_doubles(ddelta), to_doubles(dB), to_doubles(dC), to_doubles(dA)};
    if (sc.z) runs[run].push_back(to_doubles(dz));
    if (sc.init) runs[run].push_back(to_doubles(dinit));
    if (sc.D) runs[run].push_back(to_doubles(dD));
    if (sc.bias) runs[run].push_back(to_doubles(ddb));
  }
  const auto& g = runs[0];
  CHECK_CLOSE("du", g[0], values(r_du), tol);
  CHECK_CLOSE("ddelta", g[1], values(r_ddelta), tol);
  CHECK_CLOSE("dB", g[2], values(r_dB), tol);
  CHECK_CLOSE("dC", g[3], values(r_dC), tol);
  CHECK_CLOSE("dA (accumulated)", g[4], values(r_dA), tol);
  std::size_t k = 5;
  if (sc.z) CHECK_CLOSE("dz", g[k++], values(r_dz), tol);
  if (sc.init) CHECK_CLOSE("dinitial_state", g[k++], values(r_dinit), tol);
  if (sc.D) CHECK_CLOSE("dD (accumulated)", g[k++], values(r_dD), tol);
  if (sc.bias) CHECK_CLOSE("ddelta_bias (accumulated)", g[k++], values(r_ddb), tol);
  // Determinism: no atomics, fixed-order sums.
  int64_t differing = 0;
  for (std::size_t i = 0; i < runs[0].size(); ++i)
    for (std::size_t j = 0; j < runs[0][i].size(); ++j)
      differing += !(runs[0][i][j] == runs[1][i][j]) && !(std::isnan(runs[0][i][j]) && std::isnan(runs[1][i][j]));
  INFO("gradient elements differing between two identical backward runs");
  CHECK(differing == 0);
  const char* grad_names[] = {"du", "ddelta", "dB", "dC", "dA", "dz", "dinitial_state", "dD", "ddelta_bias"};
  const bool present[] = {true, true, true, true, true, sc.z, sc.init, sc.D, sc.bias};
  for (std::size_t i = 0, j = 0; i < 9; ++i)
    if (present[i]) {
      result.names.push_back(grad_names[i]);
      result.values.push_back(runs[0][j++]);
    }
  return result;
}

// Elements of the named outputs that differ bit for bit between two runs (NaN equals NaN).
int64_t bitwise_differences(const ScanOutputs& a, const ScanOutputs& b, const std::vector<std::string>& names) {
  int64_t differing = 0;
  for (const std::string& name : names) {
    std::size_t i = 0;
    while (i < a.names.size() && name != a.names[i]) ++i;
    REQUIRE(i < a.names.size());
    REQUIRE(i < b.names.size());
    REQUIRE(a.values[i].size() == b.values[i].size());
    for (std::size_t j = 0; j < a.values[i].size(); ++j) {
      const double x = a.values[i][j], y = b.values[i][j];
      if (!(x == y) && !(std::isnan(x) && std::isnan(y))) {
        if (differing == 0) UNSCOPED_INFO("first difference: " << name << "[" << j << "] " << x << " vs " << y);
        ++differing;
      }
    }
  }
  return differing;
}

// float32: the CUDA scan uses __expf (ex2.approx, ~2 ulp) and float sums over up to 130 tokens and
// 16 states against a float64 reference: ~1e-6 expected, 1e-5 allowed.
constexpr double kTolF32 = 1e-5;
// bfloat16 storage (8-bit mantissa, 2^-9 relative rounding of every stored value): 1e-2.
constexpr double kTolBF16 = 1e-2;

}  // namespace

TEST_CASE("cuda selective_scan fp32: packed varlen, ngroups 2, all options, multi-chunk", "[cuda]") {
  ScanCase sc;
  sc.lens = {1, 2, 3, 7, 64, 130, 0, 33};
  sc.dim = 64;
  sc.N = 16;
  sc.G = 2;
  sc.chunk = 16;
  run_case<float>(sc, test::test_seed(101), kTolF32);
}

TEST_CASE("cuda selective_scan fp32: d_state 4, no optional inputs, no softplus", "[cuda]") {
  ScanCase sc;
  sc.lens = {5, 1, 64, 17};
  sc.dim = 40;
  sc.N = 4;
  sc.z = sc.D = sc.bias = sc.init = sc.dfinal = sc.softplus = false;
  sc.chunk = 8;
  run_case<float>(sc, test::test_seed(202), kTolF32);
}

TEST_CASE("cuda selective_scan fp32: d_state 32, ngroups 3, chunk longer than a backward segment", "[cuda]") {
  ScanCase sc;
  sc.lens = {100, 5, 12, 70};
  sc.dim = 96;
  sc.N = 32;
  sc.G = 3;
  sc.chunk = 64;
  run_case<float>(sc, test::test_seed(303), kTolF32);
}

TEST_CASE("cuda selective_scan fp32: d_state 12 and 128 dispatch", "[cuda]") {
  ScanCase sc;
  sc.lens = {9, 3, 20};
  sc.dim = 32;
  sc.N = 12;
  sc.chunk = 8;
  run_case<float>(sc, test::test_seed(404), kTolF32);
  sc.N = 128;
  sc.dim = 16;
  run_case<float>(sc, test::test_seed(405), kTolF32);
}

TEST_CASE("cuda selective_scan bf16: many short tracks and one long sequence", "[cuda]") {
  ScanCase sc;
  sc.lens = std::vector<int64_t>(200, 12);
  sc.lens.push_back(300);
  sc.lens.push_back(1);
  sc.dim = 128;
  sc.N = 16;
  sc.chunk = 64;
  run_case<bfloat16>(sc, test::test_seed(505), kTolBF16);
}

// The sequential path (one kernel per direction, taken when the host knows every sequence fits
// in one chunk) does per chunk exactly what the chunked path does: every per-token and per-state
// output must match the chunked path bit for bit; only dA, dD and ddelta_bias (sums over a
// different set of partial rows) may differ, within the reference tolerance checked by run_case.
template <class T>
void check_sequential_matches_chunked(ScanCase sc, uint64_t seed, double tol) {
  using cuda::scan_detail::ScanPath;
  sc.path = ScanPath::kAuto;  // must pick the sequential path from the hint
  REQUIRE(sc.max_len_hint > 0);
  REQUIRE(sc.max_len_hint <= sc.chunk);
  const ScanOutputs seq = run_case<T>(sc, seed, tol);
  sc.path = ScanPath::kChunked;
  const ScanOutputs chunked = run_case<T>(sc, seed, tol);
  std::vector<std::string> exact = {"out", "final_state", "saved_states (used slots)", "du", "ddelta", "dB", "dC"};
  if (sc.z) exact.push_back("dz");
  if (sc.init) exact.push_back("dinitial_state");
  INFO("elements differing bit for bit between the sequential and the chunked path");
  CHECK(bitwise_differences(seq, chunked, exact) == 0);
}

TEST_CASE("cuda selective_scan fp32 sequential path: every sequence shorter than the chunk", "[cuda]") {
  ScanCase sc;
  sc.lens = {1, 5, 12, 63, 0, 30, 2};
  sc.dim = 64;
  sc.N = 16;
  sc.G = 2;
  sc.chunk = 64;
  sc.max_len_hint = 64;
  check_sequential_matches_chunked<float>(sc, test::test_seed(601), kTolF32);
}

TEST_CASE("cuda selective_scan fp32 sequential path: sequences of exactly the chunk length, mixed", "[cuda]") {
  ScanCase sc;
  sc.lens = {16, 3, 16, 0, 9, 16, 1, 16};
  sc.dim = 40;  // partial channel block
  sc.N = 4;
  sc.chunk = 16;
  sc.max_len_hint = 16;
  sc.z = sc.bias = false;
  check_sequential_matches_chunked<float>(sc, test::test_seed(602), kTolF32);
  // Every sequence exactly one chunk; d_state 32 (several backward segments per chunk).
  sc.lens = std::vector<int64_t>(5, 16);
  sc.dim = 96;
  sc.N = 32;
  sc.G = 3;
  sc.z = sc.bias = true;
  check_sequential_matches_chunked<float>(sc, test::test_seed(603), kTolF32);
}

TEST_CASE("cuda selective_scan bf16 sequential path: many short tracks (more sequences than blocks)", "[cuda]") {
  // 3000 sequences: more than one GPU wave of backward blocks, so each block walks several.
  ScanCase sc;
  sc.lens.clear();
  for (int i = 0; i < 3000; ++i) sc.lens.push_back(1 + (i * 7) % 12);
  sc.lens[17] = 0;
  sc.dim = 128;
  sc.N = 16;
  sc.chunk = 16;
  sc.max_len_hint = 12;
  check_sequential_matches_chunked<bfloat16>(sc, test::test_seed(604), kTolBF16);
}

TEST_CASE("cuda selective_scan fp32 sequential path forced on multi-chunk sequences stays exact", "[cuda]") {
  // A wrong max_seqlen_hint (or a forced path) must cost time, never correctness.
  ScanCase sc;
  sc.lens = {1, 2, 3, 7, 64, 130, 0, 33};
  sc.dim = 64;
  sc.N = 16;
  sc.G = 2;
  sc.chunk = 16;
  sc.path = cuda::scan_detail::ScanPath::kSequential;
  run_case<float>(sc, test::test_seed(605), kTolF32);
  sc.path = cuda::scan_detail::ScanPath::kAuto;
  sc.max_len_hint = 16;  // wrong: 130 > 16
  run_case<float>(sc, test::test_seed(606), kTolF32);
}

TEST_CASE("cuda selective_scan fp32: automatic path with many balanced multi-chunk sequences", "[cuda]") {
  // 200 sequences × 4 channel blocks fill an H100 with backward blocks, and the lengths are
  // balanced (hint <= 2 × mean): the automatic choice takes the sequential path over multi-chunk
  // sequences (on smaller GPUs too; on much larger ones it may stay chunked: exact either way).
  ScanCase sc;
  sc.lens.clear();
  for (int i = 0; i < 200; ++i) sc.lens.push_back(20 + (i * 11) % 21);
  sc.dim = 256;
  sc.N = 16;
  sc.chunk = 16;
  sc.max_len_hint = 40;
  run_case<float>(sc, test::test_seed(704), kTolF32);
}

// The chunked path's passes over groups of saved chunks (chunk_group_override: 3 chunks of 12 per
// pass, carrying the state and the adjoint between them), against the reference on varlen
// sequences spanning several groups; and bit-identical to single-chunk passes when every
// sequence fits in one chunk.
TEST_CASE("cuda selective_scan: grouped chunked passes stay exact", "[cuda]") {
  struct GroupGuard {
    explicit GroupGuard(int m) { cuda::scan_detail::chunk_group_override() = m; }
    ~GroupGuard() { cuda::scan_detail::chunk_group_override() = 0; }
  };
  ScanCase sc;
  sc.lens = {1, 5, 12, 13, 36, 37, 100, 0, 71};
  sc.dim = 64;
  sc.N = 16;
  sc.G = 2;
  sc.chunk = 12;
  sc.path = cuda::scan_detail::ScanPath::kChunked;
  {
    GroupGuard g(3);
    run_case<float>(sc, test::test_seed(611), kTolF32);
    run_case<bfloat16>(sc, test::test_seed(612), kTolBF16);
  }
  ScanCase shorter = sc;
  shorter.lens = {1, 5, 12, 9, 0, 11, 12, 3};
  ScanOutputs grouped, single;
  {
    GroupGuard g(3);
    grouped = run_case<float>(shorter, test::test_seed(613), kTolF32);
  }
  {
    GroupGuard g(1);
    single = run_case<float>(shorter, test::test_seed(613), kTolF32);
  }
  REQUIRE(grouped.values.size() == single.values.size());
  for (std::size_t k = 0; k < grouped.values.size(); ++k) {
    INFO(grouped.names[k]);
    CHECK(grouped.values[k] == single.values[k]);
  }
}

TEST_CASE("cuda selective_scan: the per-channel backward kernel (d_state not split over lanes)", "[cuda]") {
  // d_state 16 and 32 use the split backward by default; the per-channel kernel stays reachable
  // (bisection) and must stay exact on both paths.
  using cuda::scan_detail::BwdKernel;
  ScanCase sc;
  sc.lens = {1, 2, 3, 7, 64, 130, 0, 33};
  sc.dim = 64;
  sc.N = 16;
  sc.G = 2;
  sc.chunk = 16;
  sc.bwd = BwdKernel::kPerChannel;
  run_case<float>(sc, test::test_seed(701), kTolF32);
  sc.lens = {1, 5, 12, 16, 0, 9};
  sc.N = 32;
  sc.max_len_hint = 16;
  check_sequential_matches_chunked<float>(sc, test::test_seed(702), kTolF32);
}

TEST_CASE("cuda selective_scan bf16: split backward, d_state 32, chunk of several segments", "[cuda]") {
  ScanCase sc;
  sc.lens = {40, 3, 128, 0, 17};
  sc.dim = 136;  // three channel blocks per group, the last one partial
  sc.N = 32;
  sc.G = 1;
  sc.chunk = 32;
  sc.bwd = cuda::scan_detail::BwdKernel::kSplit;
  run_case<bfloat16>(sc, test::test_seed(703), kTolBF16);
}

// The scan's bfloat16 store (one cvt.rn.bf16.f32) must give the bits of bfloat16(float), the
// portable round-to-nearest-even conversion, for every non-NaN float: exact comparison.
__global__ void scan_store_kernel(const float* in, int64_t n, bfloat16* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) cuda::scan_detail::store(out, i, in[i]);
}

TEST_CASE("cuda selective_scan: bfloat16 store rounds like bfloat16(float)", "[cuda]") {
  const uint64_t seed = test::test_seed(801);
  INFO("seed " << seed);
  Philox rng(seed);
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, 3.0e38f, -3.0e38f, 3.4028235e38f, 1.0e-40f, -1.0e-40f,
                          1.1754944e-38f, std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()};
  // Exact ties (low 16 bits 0x8000) with even and odd kept bits, and their neighbours.
  for (uint32_t hi : {0x3f80u, 0x3f81u, 0xbf80u, 0xbf81u, 0x7f7fu, 0x0001u, 0x0002u}) {
    for (uint32_t lo : {0x7fffu, 0x8000u, 0x8001u}) {
      const uint32_t bits = (hi << 16) | lo;
      float f;
      std::memcpy(&f, &bits, sizeof f);
      v.push_back(f);
    }
  }
  for (int i = 0; i < 4000; ++i) {  // random magnitudes over the whole exponent range
    const double m = rng.uniform(-1.0, 1.0), e = rng.uniform(-140.0, 127.0);
    v.push_back(static_cast<float>(std::ldexp(m, static_cast<int>(e))));
  }
  const int64_t n = static_cast<int64_t>(v.size());
  float* din = nullptr;
  bfloat16* dout = nullptr;
  MAMBATRACK_CUDA_CHECK(cudaMalloc(&din, v.size() * sizeof(float)));
  MAMBATRACK_CUDA_CHECK(cudaMalloc(&dout, v.size() * sizeof(bfloat16)));
  MAMBATRACK_CUDA_CHECK(cudaMemcpy(din, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice));
  scan_store_kernel<<<static_cast<unsigned>((n + 255) / 256), 256>>>(din, n, dout);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  std::vector<bfloat16> got(v.size());
  MAMBATRACK_CUDA_CHECK(cudaMemcpy(got.data(), dout, v.size() * sizeof(bfloat16), cudaMemcpyDeviceToHost));
  MAMBATRACK_CUDA_CHECK(cudaFree(din));
  MAMBATRACK_CUDA_CHECK(cudaFree(dout));
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (got[static_cast<std::size_t>(i)].bits != bfloat16(v[static_cast<std::size_t>(i)]).bits) {
      ++bad;
      if (first < 0) first = i;
    }
  }
  INFO("values whose stored bits differ from bfloat16(float): " << bad << ", first at " << first << " ("
                                                                << (first >= 0 ? v[static_cast<std::size_t>(first)] : 0.0f)
                                                                << ")");
  CHECK(bad == 0);
}

TEST_CASE("cuda selective_scan: bad shapes and unsupported d_state throw", "[cuda]") {
  const int64_t L = 10, dim = 8, N = 16;
  Tensor<float, Cuda> u(Shape{L, dim}), delta(Shape{L, dim}), A(Shape{dim, N}), B(Shape{L, 1, N}), C(Shape{L, 1, N});
  Tensor<float, Cuda> out(Shape{L, dim}), bad(Shape{L, dim + 1}), A5(Shape{dim, 5}), B5(Shape{L, 1, 5});
  Tensor<int64_t> cu_h(Shape{2});
  cu_h[0] = 0;
  cu_h[1] = L;
  auto cu = to_device<int64_t>(cu_h.view());
  SelectiveScanInputs<float, Cuda> in;
  in.u = u.view();
  in.delta = delta.view();
  in.A = A.view();
  in.B = B.view();
  in.C = C.view();
  in.cu_seqlens = cu.view();
  CHECK_THROWS_AS(cuda::selective_scan_fwd<float>({in, bad.view(), {}, {}}), ShapeError);
  auto in2 = in;
  in2.delta = bad.view();
  CHECK_THROWS_AS(cuda::selective_scan_fwd<float>({in2, out.view(), {}, {}}), ShapeError);
  auto in3 = in;
  in3.A = A5.view();
  in3.B = B5.view();
  in3.C = B5.view();
  CHECK_THROWS_AS(cuda::selective_scan_fwd<float>({in3, out.view(), {}, {}}), ConfigError);
  SelectiveScanBwdArgs<float, Cuda> bw;
  bw.in = in;  // no saved_states: the CUDA backward needs them
  bw.dout = out.view();
  bw.du = out.view();
  bw.ddelta = out.view();
  bw.dB = B.view();
  bw.dC = C.view();
  bw.dA = A.view();
  CHECK_THROWS_AS(cuda::selective_scan_bwd<float>(bw), ShapeError);
}
