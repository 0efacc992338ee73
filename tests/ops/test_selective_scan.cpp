// Tests of the Mamba-1 selective scan: the double reference against finite differences, the CPU
// float version against the reference (forward and backward), packed varlen batches against
// one sequence at a time, chunk-size independence of the backward, and argument errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "mambatrack/ops/cpu/selective_scan.hpp"
#include "mambatrack/ops/reference/selective_scan.hpp"
#include "op_test_util.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using test::rel_err;

namespace {

struct ScanConfig {
  std::vector<int64_t> lens;
  int64_t dim = 8, d_state = 4, ngroups = 1;
  bool z = true, D = true, bias = true, init = true, softplus = true, dfinal = true;
  bool large_delta = false;  // raw delta up to 26: both sides of the softplus threshold 20
  int64_t chunk = 64;
  int64_t tokens() const { return std::accumulate(lens.begin(), lens.end(), int64_t(0)); }
  int64_t batch() const { return static_cast<int64_t>(lens.size()); }
  std::string str() const {
    std::string s = "lens {";
    for (auto l : lens) s += std::to_string(l) + ",";
    return s + "} dim " + std::to_string(dim) + " d_state " + std::to_string(d_state) + " ngroups " +
           std::to_string(ngroups) + " z " + std::to_string(z) + " D " + std::to_string(D) + " bias " +
           std::to_string(bias) + " init " + std::to_string(init) + " softplus " + std::to_string(softplus) +
           " chunk " + std::to_string(chunk);
  }
};

// Every input, output and gradient of one run, in precision T.
template <class T>
struct ScanData {
  std::vector<T> u, delta, A, B, C, D, bias, z, init, dout, dfinal;
  std::vector<int64_t> cu;
  std::vector<T> out, final_state, saved;
  std::vector<T> du, ddelta, dA, dB, dC, dD, dbias, dz, dinit;
};

ScanData<double> make_data(const ScanConfig& c, uint64_t seed) {
  ScanData<double> d;
  const auto T = static_cast<std::size_t>(c.tokens()), dim = static_cast<std::size_t>(c.dim),
             N = static_cast<std::size_t>(c.d_state), G = static_cast<std::size_t>(c.ngroups),
             batch = static_cast<std::size_t>(c.batch());
  d.u = test::random_uniform<double>(T * dim, seed + 1);
  // Raw delta: softplus(-3 + bias .. 1 + bias) spans ~0.02..1.5, the usual range of Δ; without
  // softplus Δ itself must stay positive.
  d.delta = c.softplus ? test::random_uniform<double>(T * dim, seed + 2, -3.0, c.large_delta ? 26.0 : 1.0)
                       : test::random_uniform<double>(T * dim, seed + 2, 0.05, 0.8);
  d.A = test::random_uniform<double>(dim * N, seed + 3, -1.0, 1.5);
  for (auto& a : d.A) a = -std::exp(a);  // A = -exp(A_log), in [-4.5, -0.37]
  d.B = test::random_uniform<double>(T * G * N, seed + 4);
  d.C = test::random_uniform<double>(T * G * N, seed + 5);
  if (c.D) d.D = test::random_uniform<double>(dim, seed + 6);
  if (c.bias) d.bias = test::random_uniform<double>(dim, seed + 7, -1.0, 0.5);
  if (c.z) d.z = test::random_uniform<double>(T * dim, seed + 8, -2.0, 2.0);
  if (c.init) d.init = test::random_uniform<double>(batch * dim * N, seed + 9);
  d.dout = test::random_uniform<double>(T * dim, seed + 10);
  if (c.dfinal) d.dfinal = test::random_uniform<double>(batch * dim * N, seed + 11);
  d.cu.assign(1, 0);
  for (auto l : c.lens) d.cu.push_back(d.cu.back() + l);
  return d;
}

template <class T>
ScanData<T> convert(const ScanData<double>& s) {
  ScanData<T> d;
  auto cv = [](const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); };
  d.u = cv(s.u), d.delta = cv(s.delta), d.A = cv(s.A), d.B = cv(s.B), d.C = cv(s.C), d.D = cv(s.D);
  d.bias = cv(s.bias), d.z = cv(s.z), d.init = cv(s.init), d.dout = cv(s.dout), d.dfinal = cv(s.dfinal);
  d.cu = s.cu;
  return d;
}

template <class T>
View<const T> cview(const std::vector<T>& v, Shape s) {
  return v.empty() ? View<const T>() : View<const T>(v.data(), s);
}
template <class T>
View<T> mview(std::vector<T>& v, Shape s) {
  return v.empty() ? View<T>() : View<T>(v.data(), s);
}
// Required arguments: a view even when empty (a sequence of length 0).
template <class T>
View<const T> rview(const std::vector<T>& v, Shape s) {
  return View<const T>(v.data(), s);
}
template <class T>
View<T> rmview(std::vector<T>& v, Shape s) {
  return View<T>(v.data(), s);
}

template <class T>
SelectiveScanInputs<T> inputs(const ScanConfig& c, const ScanData<T>& d) {
  const int64_t tok = c.tokens();
  SelectiveScanInputs<T> in;
  in.u = rview(d.u, {tok, c.dim});
  in.delta = rview(d.delta, {tok, c.dim});
  in.A = rview(d.A, {c.dim, c.d_state});
  in.B = rview(d.B, {tok, c.ngroups, c.d_state});
  in.C = rview(d.C, {tok, c.ngroups, c.d_state});
  in.D = cview(d.D, {c.dim});
  in.delta_bias = cview(d.bias, {c.dim});
  in.z = cview(d.z, {tok, c.dim});
  in.initial_state = cview(d.init, {c.batch(), c.dim, c.d_state});
  in.cu_seqlens = View<const int64_t>(d.cu.data(), {c.batch() + 1});
  in.delta_softplus = c.softplus;
  in.chunk = c.chunk;
  return in;
}

template <class T>
void forward(const ScanConfig& c, ScanData<T>& d) {
  const int64_t tok = c.tokens();
  const Shape saved = selective_scan_saved_shape(c.batch(), tok, c.dim, c.d_state, c.chunk);
  REQUIRE(saved == selective_scan_saved_shape(inputs(c, d)));
  d.out.assign(static_cast<std::size_t>(tok * c.dim), T(0));
  d.final_state.assign(static_cast<std::size_t>(c.batch() * c.dim * c.d_state), T(0));
  d.saved.assign(static_cast<std::size_t>(saved.numel()), T(0));
  SelectiveScanFwdArgs<T> a;
  a.in = inputs(c, d);
  a.out = rmview(d.out, {tok, c.dim});
  a.final_state = mview(d.final_state, {c.batch(), c.dim, c.d_state});
  a.saved_states = mview(d.saved, saved);
  if constexpr (std::is_same_v<T, double>) reference::selective_scan_fwd(a);
  else cpu::selective_scan_fwd(a);
}

// Backward after forward(). Activation gradients start as NaN (they must be overwritten),
// parameter gradients as 0 unless `keep_params` (then they accumulate onto what is there).
template <class T>
void backward(const ScanConfig& c, ScanData<T>& d, bool keep_params = false) {
  const int64_t tok = c.tokens(), N = c.d_state, G = c.ngroups;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  auto act = [&](std::vector<T>& v, int64_t n) { v.assign(static_cast<std::size_t>(n), nan); };
  auto par = [&](std::vector<T>& v, int64_t n) {
    if (!keep_params) v.assign(static_cast<std::size_t>(n), T(0));
  };
  act(d.du, tok * c.dim), act(d.ddelta, tok * c.dim), act(d.dB, tok * G * N), act(d.dC, tok * G * N);
  if (c.z) act(d.dz, tok * c.dim);
  if (c.init) act(d.dinit, c.batch() * c.dim * N);
  par(d.dA, c.dim * N);
  if (c.D) par(d.dD, c.dim);
  if (c.bias) par(d.dbias, c.dim);
  SelectiveScanBwdArgs<T> a;
  a.in = inputs(c, d);
  a.saved_states = cview(d.saved, selective_scan_saved_shape(c.batch(), tok, c.dim, N, c.chunk));
  a.dout = rview(d.dout, {tok, c.dim});
  a.dfinal_state = cview(d.dfinal, {c.batch(), c.dim, N});
  a.du = rmview(d.du, {tok, c.dim});
  a.ddelta = rmview(d.ddelta, {tok, c.dim});
  a.dB = rmview(d.dB, {tok, G, N});
  a.dC = rmview(d.dC, {tok, G, N});
  a.dz = mview(d.dz, {tok, c.dim});
  a.dinitial_state = mview(d.dinit, {c.batch(), c.dim, N});
  a.dA = rmview(d.dA, {c.dim, N});
  a.dD = mview(d.dD, {c.dim});
  a.ddelta_bias = mview(d.dbias, {c.dim});
  if constexpr (std::is_same_v<T, double>) reference::selective_scan_bwd(a);
  else cpu::selective_scan_bwd(a);
}

// Σ out·dout + Σ final_state·dfinal: the loss whose gradients backward() computes.
double loss(const ScanConfig& c, ScanData<double> d) {
  forward(c, d);
  double l = 0;
  for (std::size_t i = 0; i < d.out.size(); ++i) l += d.out[i] * d.dout[i];
  for (std::size_t i = 0; i < d.dfinal.size(); ++i) l += d.final_state[i] * d.dfinal[i];
  return l;
}

// Named (input, gradient) pairs, for loops over every tensor.
template <class T>
std::vector<std::pair<std::string, std::pair<std::vector<T>*, std::vector<T>*>>> grads(ScanData<T>& d) {
  return {{"u", {&d.u, &d.du}},         {"delta", {&d.delta, &d.ddelta}}, {"A", {&d.A, &d.dA}},
          {"B", {&d.B, &d.dB}},         {"C", {&d.C, &d.dC}},             {"D", {&d.D, &d.dD}},
          {"delta_bias", {&d.bias, &d.dbias}}, {"z", {&d.z, &d.dz}},     {"initial_state", {&d.init, &d.dinit}}};
}

}  // namespace

TEST_CASE("reference selective scan backward matches central finite differences", "[grad]") {
  const uint64_t seed = test::test_seed(101);
  INFO("seed " << seed);
  std::vector<ScanConfig> configs(4);
  configs[0].lens = {3, 1, 4}, configs[0].dim = 4, configs[0].d_state = 4, configs[0].ngroups = 2;
  configs[1].lens = {5}, configs[1].dim = 2, configs[1].d_state = 3, configs[1].softplus = false;
  configs[1].z = configs[1].D = configs[1].bias = configs[1].init = configs[1].dfinal = false;
  configs[2].lens = {0, 6, 2}, configs[2].dim = 3, configs[2].d_state = 2, configs[2].ngroups = 3;
  configs[3].lens = {4, 3}, configs[3].dim = 4, configs[3].d_state = 2, configs[3].large_delta = true;
  for (const auto& c : configs) {
    INFO(c.str());
    ScanData<double> d = make_data(c, seed);
    forward(c, d);
    backward(c, d);
    ScanData<double> probe = d;
    for (auto& [name, pair] : grads(probe)) {
      std::vector<double>& x = *pair.first;
      const std::vector<double>& g = *pair.second;
      if (x.empty()) continue;
      INFO("input " << name);
      // central differences, h = 1e-5: O(h²) truncation, ~1e-11 rounding
      const std::vector<double> numeric = test::fd_grad(x, [&] { return loss(c, probe); });
      CHECK(rel_err(g, numeric) <= 1e-6);
    }
  }
}

namespace {

// CPU float against the double reference, forward and backward. Tolerances on the relative L2
// error, float32 (2^-24 ≈ 6e-8 per operation, exp_approx ~1e-7): outputs and per-token gradients
// are short sums (d_state terms, a recurrence over <= 130 steps), measured <= 1e-6: 5e-6; dA, dD,
// ddelta_bias sum over every token of the batch, and dB/dC over the channels of a group, with
// cancellation, measured <= 6e-7: 2e-5.
void compare_cpu_to_reference(const ScanConfig& c, uint64_t seed) {
  INFO(c.str() << ", seed " << seed);
  ScanData<double> ref = make_data(c, seed);
  ScanData<float> cpu = convert<float>(ref);
  forward(c, ref), forward(c, cpu);
  backward(c, ref), backward(c, cpu);
  CHECK(rel_err(cpu.out, ref.out) <= 5e-6);
  CHECK(rel_err(cpu.final_state, ref.final_state) <= 5e-6);
  CHECK(rel_err(cpu.saved, ref.saved) <= 5e-6);
  auto check = [&](const char* name, const std::vector<float>& got, const std::vector<double>& want,
                   double tol) {
    INFO("gradient " << name);
    REQUIRE(got.size() == want.size());
    CHECK(rel_err(got, want) <= tol);
  };
  check("du", cpu.du, ref.du, 5e-6);
  check("ddelta", cpu.ddelta, ref.ddelta, 5e-6);
  check("dB", cpu.dB, ref.dB, 2e-5);
  check("dC", cpu.dC, ref.dC, 2e-5);
  check("dA", cpu.dA, ref.dA, 2e-5);
  check("dz", cpu.dz, ref.dz, 5e-6);
  check("dD", cpu.dD, ref.dD, 2e-5);
  check("ddelta_bias", cpu.dbias, ref.dbias, 2e-5);
  check("dinitial_state", cpu.dinit, ref.dinit, 5e-6);
}

}  // namespace

TEST_CASE("cpu selective scan matches the reference in forward and backward", "[cpu][grad]") {
  const uint64_t seed = test::test_seed(202);
  ScanConfig c;
  SECTION("length 1") {
    c.lens = {1}, c.dim = 5, c.d_state = 4;
    compare_cpu_to_reference(c, seed);
  }
  SECTION("lengths not multiples of the chunk, two groups, d_state 16") {
    c.lens = {70, 5, 130}, c.dim = 32, c.d_state = 16, c.ngroups = 2, c.chunk = 64;
    compare_cpu_to_reference(c, seed);
  }
  SECTION("no z, D, delta_bias, initial state; a partial channel block") {
    c.lens = {33, 1, 17}, c.dim = 20, c.d_state = 16, c.chunk = 8;
    c.z = c.D = c.bias = c.init = c.dfinal = false;
    compare_cpu_to_reference(c, seed);
  }
  SECTION("z only, two groups of 12 channels, chunk 3") {
    c.lens = {40, 7}, c.dim = 24, c.d_state = 4, c.ngroups = 2, c.chunk = 3;
    c.D = c.bias = c.init = false;
    compare_cpu_to_reference(c, seed);
  }
  SECTION("raw delta on both sides of the softplus threshold 20") {
    c.lens = {15, 6}, c.dim = 16, c.d_state = 4, c.large_delta = true;
    compare_cpu_to_reference(c, seed);
  }
  SECTION("no softplus") {
    c.lens = {12, 9}, c.dim = 17, c.d_state = 8, c.softplus = false;
    compare_cpu_to_reference(c, seed);
  }
  SECTION("every compiled d_state") {
    for (int n : {4, 8, 12, 16, 32, 48, 64, 96, 128}) {
      c.lens = {9, 4}, c.dim = 16, c.d_state = n, c.chunk = 5;
      compare_cpu_to_reference(c, seed + static_cast<uint64_t>(n));
    }
  }
}

TEST_CASE("cpu selective scan backward overwrites activation gradients and accumulates parameter gradients",
          "[cpu][grad]") {
  const uint64_t seed = test::test_seed(303);
  INFO("seed " << seed);
  ScanConfig c;
  c.lens = {6, 11}, c.dim = 18, c.d_state = 8, c.ngroups = 2;
  ScanData<float> d = convert<float>(make_data(c, seed));
  forward(c, d);
  backward(c, d);  // activation gradients start as NaN: all must be written
  const ScanData<float> once = d;
  backward(c, d, /*keep_params=*/true);
  for (auto* v : {&d.du, &d.ddelta, &d.dB, &d.dC, &d.dz, &d.dinit})
    for (float x : *v) REQUIRE(std::isfinite(x));
  CHECK(d.du == once.du);  // overwritten with the same values, not added
  CHECK(d.dB == once.dB);
  CHECK(d.dinit == once.dinit);
  auto doubled = [](std::vector<float> v) {
    for (auto& x : v) x *= 2;
    return v;
  };
  // The second call adds the same per-part sums onto the first result: equal up to float rounding.
  CHECK(rel_err(d.dA, doubled(once.dA)) <= 1e-6);
  CHECK(rel_err(d.dD, doubled(once.dD)) <= 1e-6);
  CHECK(rel_err(d.dbias, doubled(once.dbias)) <= 1e-6);
}

namespace {

// The tokens [from, from + n) of a (tokens, ...) array with `row` values per token.
template <class T>
std::vector<T> slice(const std::vector<T>& v, int64_t from, int64_t n, int64_t row) {
  return std::vector<T>(v.begin() + from * row, v.begin() + (from + n) * row);
}

}  // namespace

TEST_CASE("cpu selective scan of a packed batch equals each sequence run alone", "[cpu]") {
  const uint64_t seed = test::test_seed(404);
  INFO("seed " << seed);
  ScanConfig c;
  c.lens = {1, 2, 3, 7, 64, 2, 0, 9}, c.dim = 24, c.d_state = 16, c.ngroups = 2, c.chunk = 4;
  ScanData<float> all = convert<float>(make_data(c, seed));
  forward(c, all);
  backward(c, all);
  std::vector<double> dA(all.dA.size()), dD(all.dD.size()), dbias(all.dbias.size());
  const int64_t dim = c.dim, N = c.d_state, G = c.ngroups;
  for (int64_t b = 0; b < c.batch(); ++b) {
    INFO("sequence " << b << " of length " << c.lens[b]);
    const int64_t s = all.cu[b], l = c.lens[b];
    ScanConfig one = c;
    one.lens = {l};
    ScanData<float> d = all;
    d.cu = {0, l};
    for (auto* v : {&d.u, &d.delta, &d.z, &d.dout}) *v = slice(*v, s, l, dim);
    d.B = slice(all.B, s, l, G * N), d.C = slice(all.C, s, l, G * N);
    d.init = slice(all.init, b, 1, dim * N), d.dfinal = slice(all.dfinal, b, 1, dim * N);
    forward(one, d);
    backward(one, d);
    // Every token's values come from the same arithmetic on the same inputs: exactly equal.
    CHECK(d.out == slice(all.out, s, l, dim));
    CHECK(d.final_state == slice(all.final_state, b, 1, dim * N));
    CHECK(d.du == slice(all.du, s, l, dim));
    CHECK(d.ddelta == slice(all.ddelta, s, l, dim));
    CHECK(d.dz == slice(all.dz, s, l, dim));
    CHECK(d.dB == slice(all.dB, s, l, G * N));
    CHECK(d.dC == slice(all.dC, s, l, G * N));
    CHECK(d.dinit == slice(all.dinit, b, 1, dim * N));
    for (std::size_t i = 0; i < dA.size(); ++i) dA[i] += d.dA[i];
    for (std::size_t i = 0; i < dD.size(); ++i) dD[i] += d.dD[i], dbias[i] += d.dbias[i];
  }
  // Parameter gradients: the same terms summed in another order (float): 1e-6.
  CHECK(rel_err(all.dA, dA) <= 1e-6);
  CHECK(rel_err(all.dD, dD) <= 1e-6);
  CHECK(rel_err(all.dbias, dbias) <= 1e-6);
}

TEST_CASE("cpu selective scan backward does not depend on the chunk size", "[cpu][grad]") {
  const uint64_t seed = test::test_seed(505);
  INFO("seed " << seed);
  ScanConfig c;
  c.lens = {50, 1, 23}, c.dim = 16, c.d_state = 16, c.ngroups = 1;
  c.chunk = 1000;  // longer than every sequence: one recompute from the initial state, no chunks
  const ScanData<double> ref_in = make_data(c, seed);
  ScanData<float> whole = convert<float>(ref_in);
  forward(c, whole);
  backward(c, whole);
  ScanData<double> ref = ref_in;  // the reference recomputes every sequence in full
  forward(c, ref);
  backward(c, ref);
  CHECK(rel_err(whole.ddelta, ref.ddelta) <= 5e-6);  // float vs double, as in the test above
  CHECK(rel_err(whole.dA, ref.dA) <= 2e-5);
  for (int64_t chunk : {1, 3, 64, 50}) {
    INFO("chunk " << chunk);
    ScanConfig cc = c;
    cc.chunk = chunk;
    ScanData<float> d = convert<float>(ref_in);
    forward(cc, d);
    backward(cc, d);
    // Recomputed states equal the saved ones bit for bit (one shared step function), and the
    // reverse walk runs in the same order: identical gradients.
    CHECK(d.out == whole.out);
    CHECK(d.du == whole.du);
    CHECK(d.ddelta == whole.ddelta);
    CHECK(d.dB == whole.dB);
    CHECK(d.dC == whole.dC);
    CHECK(d.dz == whole.dz);
    CHECK(d.dA == whole.dA);
    CHECK(d.dD == whole.dD);
    CHECK(d.dbias == whole.dbias);
    CHECK(d.dinit == whole.dinit);
  }
}

TEST_CASE("cpu selective scan gives the same results with 1 and 2 threads", "[cpu]") {
  const uint64_t seed = test::test_seed(606);
  INFO("seed " << seed);
  ScanConfig c;
  // Four sequences: 2 threads split them; one sequence: 2 threads split its 3 channel blocks
  // into 2 slabs whose dB/dC copies are added afterwards.
  for (auto lens : {std::vector<int64_t>{30, 2, 17, 5}, std::vector<int64_t>{77}}) {
    c.lens = lens, c.dim = 48, c.d_state = 16, c.ngroups = 1;
    INFO(c.str());
    const ScanData<double> in = make_data(c, seed);
    const int threads = num_threads();
    set_num_threads(1);
    ScanData<float> one = convert<float>(in);
    forward(c, one);
    backward(c, one);
    set_num_threads(2);
    ScanData<float> two = convert<float>(in);
    forward(c, two);
    backward(c, two);
    set_num_threads(threads);
    CHECK(one.out == two.out);
    CHECK(one.du == two.du);
    CHECK(one.ddelta == two.ddelta);
    CHECK(one.dinit == two.dinit);
    // dB/dC (slab copies) and parameter gradients (per-thread partial sums) are added in another
    // order: float rounding only.
    CHECK(rel_err(one.dB, two.dB) <= 1e-6);
    CHECK(rel_err(one.dC, two.dC) <= 1e-6);
    CHECK(rel_err(one.dA, two.dA) <= 1e-6);
    CHECK(rel_err(one.dbias, two.dbias) <= 1e-6);
    ScanData<double> ref = in;
    forward(c, ref);
    backward(c, ref);
    CHECK(rel_err(two.dB, ref.dB) <= 2e-5);  // as in the reference comparison above
    CHECK(rel_err(two.dC, ref.dC) <= 2e-5);
  }
}

TEST_CASE("selective scan rejects bad arguments with errors that name the sizes", "[cpu]") {
  const uint64_t seed = test::test_seed(707);
  ScanConfig c;
  c.lens = {3, 4}, c.dim = 8, c.d_state = 4;
  ScanData<float> d = convert<float>(make_data(c, seed));
  forward(c, d);
  SECTION("delta of another shape") {
    SelectiveScanFwdArgs<float> a;
    a.in = inputs(c, d);
    a.in.delta = View<const float>(d.delta.data(), {c.tokens(), c.dim / 2});
    a.out = mview(d.out, {c.tokens(), c.dim});
    REQUIRE_THROWS_AS(cpu::selective_scan_fwd(a), ShapeError);
    REQUIRE_THROWS_WITH(cpu::selective_scan_fwd(a), Catch::Contains("delta has shape (7, 4), expected (7, 8)"));
  }
  SECTION("B with a dim not divisible by ngroups") {
    SelectiveScanFwdArgs<float> a;
    a.in = inputs(c, d);
    a.in.B = View<const float>(d.B.data(), {c.tokens(), 3, 1});
    a.in.A = View<const float>(d.A.data(), {c.dim, 1});
    a.out = mview(d.out, {c.tokens(), c.dim});
    REQUIRE_THROWS_WITH(cpu::selective_scan_fwd(a), Catch::Contains("dim 8 is not a multiple of ngroups 3"));
  }
  SECTION("unsupported d_state") {
    const int64_t N = 17;
    std::vector<float> A(static_cast<std::size_t>(c.dim * N), -1.0f),
        B(static_cast<std::size_t>(c.tokens() * N), 0.5f);
    SelectiveScanFwdArgs<float> a;
    a.in = inputs(c, d);
    a.in.A = View<const float>(A.data(), {c.dim, N});
    a.in.B = a.in.C = View<const float>(B.data(), {c.tokens(), 1, N});
    a.in.initial_state = {};
    a.out = mview(d.out, {c.tokens(), c.dim});
    REQUIRE_THROWS_AS(cpu::selective_scan_fwd(a), ConfigError);
    REQUIRE_THROWS_WITH(cpu::selective_scan_fwd(a),
                        Catch::Contains("d_state = 17") && Catch::Contains("supported: 4, 8, 12, 16, 32, 48, 64, 96, 128"));
  }
  SECTION("chunk below 1") {
    SelectiveScanFwdArgs<float> a;
    a.in = inputs(c, d);
    a.in.chunk = 0;
    a.out = mview(d.out, {c.tokens(), c.dim});
    REQUIRE_THROWS_AS(cpu::selective_scan_fwd(a), ConfigError);
    REQUIRE_THROWS_WITH(cpu::selective_scan_fwd(a), Catch::Contains("chunk must be >= 1, got 0"));
  }
  SECTION("cu_seqlens decreasing or not ending at the token count") {
    SelectiveScanFwdArgs<float> a;
    a.in = inputs(c, d);
    a.out = mview(d.out, {c.tokens(), c.dim});
    std::vector<int64_t> bad = {0, 5, 3};
    a.in.cu_seqlens = View<const int64_t>(bad.data(), {3});
    REQUIRE_THROWS_AS(cpu::selective_scan_fwd(a), ShapeError);
    REQUIRE_THROWS_WITH(cpu::selective_scan_fwd(a), Catch::Contains("cu_seqlens[2] = 3 < cu_seqlens[1] = 5"));
    bad = {0, 3, 6};
    REQUIRE_THROWS_WITH(cpu::selective_scan_fwd(a),
                        Catch::Contains("cu_seqlens[2] = 6 must equal the number of tokens 7"));
    REQUIRE_THROWS_AS(reference::selective_scan_fwd(SelectiveScanFwdArgs<double>{}), ShapeError);
  }
  SECTION("backward without saved states, or with the wrong gradient shape") {
    ScanData<float> g = d;
    backward(c, g);
    SelectiveScanBwdArgs<float> a;
    a.in = inputs(c, d);
    a.dout = rview(d.dout, {c.tokens(), c.dim});
    a.du = mview(g.du, {c.tokens(), c.dim});
    a.ddelta = mview(g.ddelta, {c.tokens(), c.dim});
    a.dB = mview(g.dB, {c.tokens(), 1, c.d_state});
    a.dC = mview(g.dC, {c.tokens(), 1, c.d_state});
    a.dz = mview(g.dz, {c.tokens(), c.dim});
    a.dA = mview(g.dA, {c.dim, c.d_state});
    a.dD = mview(g.dD, {c.dim});
    a.ddelta_bias = mview(g.dbias, {c.dim});
    REQUIRE_THROWS_WITH(cpu::selective_scan_bwd(a), Catch::Contains("saved_states has shape (), expected (2, 8, 4)"));
    a.saved_states = cview(d.saved, selective_scan_saved_shape(c.batch(), c.tokens(), c.dim, c.d_state, c.chunk));
    a.dA = mview(g.dA, {c.d_state, c.dim});
    REQUIRE_THROWS_WITH(cpu::selective_scan_bwd(a), Catch::Contains("dA has shape (4, 8), expected (8, 4)"));
  }
}

TEST_CASE("selective scan chunk slots are distinct and fit the saved-state shape", "[cpu]") {
  const uint64_t seed = test::test_seed(808);
  INFO("seed " << seed);
  Philox rng(seed);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t batch = 1 + static_cast<int64_t>(rng.below(12)), chunk = 1 + static_cast<int64_t>(rng.below(9));
    std::vector<int64_t> lens;
    int64_t tokens = 0;
    for (int64_t b = 0; b < batch; ++b) lens.push_back(static_cast<int64_t>(rng.below(30))), tokens += lens.back();
    const int64_t rows = selective_scan_saved_shape(batch, tokens, 1, 1, chunk)[0];
    std::vector<int> used(static_cast<std::size_t>(rows), 0);
    int64_t start = 0;
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t k = 0; k * chunk < lens[b]; ++k) {
        const int64_t slot = selective_scan_slot(b, start, k, chunk);
        INFO("trial " << trial << " sequence " << b << " chunk " << k << " slot " << slot << " of " << rows);
        REQUIRE(slot >= 0);
        REQUIRE(slot < rows);
        REQUIRE(used[static_cast<std::size_t>(slot)]++ == 0);
      }
      start += lens[b];
    }
  }
}
