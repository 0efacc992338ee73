// Tests of the causal depthwise conv1d (+ SiLU): the double reference against finite differences,
// the CPU float version against the reference, packed varlen batches against one sequence at a
// time, gradient overwrite/accumulate rules, and argument errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "mambatrack/ops/cpu/causal_conv1d.hpp"
#include "mambatrack/ops/reference/causal_conv1d.hpp"
#include "op_test_util.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using test::rel_err;

namespace {

struct ConvConfig {
  std::vector<int64_t> lens;
  int64_t channels = 8, d_conv = 4;
  bool bias = true, silu = true;
  int64_t tokens() const { return std::accumulate(lens.begin(), lens.end(), int64_t(0)); }
  int64_t batch() const { return static_cast<int64_t>(lens.size()); }
  std::string str() const {
    std::string s = "lens {";
    for (auto l : lens) s += std::to_string(l) + ",";
    return s + "} channels " + std::to_string(channels) + " d_conv " + std::to_string(d_conv) + " bias " +
           std::to_string(bias) + " silu " + std::to_string(silu);
  }
};

template <class T>
struct ConvData {
  std::vector<T> x, weight, bias, dout, out, dx, dweight, dbias;
  std::vector<int64_t> cu;
};

ConvData<double> make_data(const ConvConfig& c, uint64_t seed) {
  ConvData<double> d;
  const auto T = static_cast<std::size_t>(c.tokens()), C = static_cast<std::size_t>(c.channels);
  d.x = test::random_uniform<double>(T * C, seed + 1, -2.0, 2.0);
  d.weight = test::random_uniform<double>(C * static_cast<std::size_t>(c.d_conv), seed + 2, -0.5, 0.5);  // torch init range
  if (c.bias) d.bias = test::random_uniform<double>(C, seed + 3, -0.5, 0.5);
  d.dout = test::random_uniform<double>(T * C, seed + 4);
  d.cu.assign(1, 0);
  for (auto l : c.lens) d.cu.push_back(d.cu.back() + l);
  return d;
}

template <class T>
ConvData<T> convert(const ConvData<double>& s) {
  auto cv = [](const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); };
  ConvData<T> d;
  d.x = cv(s.x), d.weight = cv(s.weight), d.bias = cv(s.bias), d.dout = cv(s.dout);
  d.cu = s.cu;
  return d;
}

template <class T>
CausalConv1dInputs<T> inputs(const ConvConfig& c, const ConvData<T>& d) {
  CausalConv1dInputs<T> in;
  in.x = View<const T>(d.x.data(), {c.tokens(), c.channels});
  in.weight = View<const T>(d.weight.data(), {c.channels, c.d_conv});
  if (c.bias) in.bias = View<const T>(d.bias.data(), {c.channels});
  in.cu_seqlens = View<const int64_t>(d.cu.data(), {c.batch() + 1});
  in.silu = c.silu;
  return in;
}

template <class T>
void forward(const ConvConfig& c, ConvData<T>& d) {
  d.out.assign(d.x.size(), T(0));
  CausalConv1dFwdArgs<T> a;
  a.in = inputs(c, d);
  a.out = View<T>(d.out.data(), {c.tokens(), c.channels});
  if constexpr (std::is_same_v<T, double>) reference::causal_conv1d_fwd(a);
  else cpu::causal_conv1d_fwd(a);
}

// dx starts as NaN (must be overwritten); dweight/dbias as 0 unless keep_params (accumulate).
template <class T>
void backward(const ConvConfig& c, ConvData<T>& d, bool keep_params = false) {
  d.dx.assign(d.x.size(), std::numeric_limits<T>::quiet_NaN());
  if (!keep_params) {
    d.dweight.assign(d.weight.size(), T(0));
    d.dbias.assign(d.bias.size(), T(0));
  }
  CausalConv1dBwdArgs<T> a;
  a.in = inputs(c, d);
  a.dout = View<const T>(d.dout.data(), {c.tokens(), c.channels});
  a.dx = View<T>(d.dx.data(), {c.tokens(), c.channels});
  a.dweight = View<T>(d.dweight.data(), {c.channels, c.d_conv});
  if (c.bias) a.dbias = View<T>(d.dbias.data(), {c.channels});
  if constexpr (std::is_same_v<T, double>) reference::causal_conv1d_bwd(a);
  else cpu::causal_conv1d_bwd(a);
}

double loss(const ConvConfig& c, ConvData<double> d) {
  forward(c, d);
  double l = 0;
  for (std::size_t i = 0; i < d.out.size(); ++i) l += d.out[i] * d.dout[i];
  return l;
}

}  // namespace

TEST_CASE("reference causal conv1d backward matches central finite differences", "[grad]") {
  const uint64_t seed = test::test_seed(111);
  INFO("seed " << seed);
  std::vector<ConvConfig> configs(3);
  configs[0].lens = {5, 1, 3}, configs[0].channels = 3, configs[0].d_conv = 4;
  configs[1].lens = {4, 2}, configs[1].channels = 2, configs[1].d_conv = 3, configs[1].silu = false;
  configs[2].lens = {0, 6}, configs[2].channels = 2, configs[2].d_conv = 2, configs[2].bias = false;
  for (const auto& c : configs) {
    INFO(c.str());
    ConvData<double> d = make_data(c, seed);
    forward(c, d);
    backward(c, d);
    ConvData<double> probe = d;
    std::pair<const char*, std::pair<std::vector<double>*, std::vector<double>*>> tensors[] = {
        {"x", {&probe.x, &d.dx}}, {"weight", {&probe.weight, &d.dweight}}, {"bias", {&probe.bias, &d.dbias}}};
    for (auto& [name, pair] : tensors) {
      std::vector<double>& x = *pair.first;
      if (x.empty()) continue;
      INFO("input " << name);
      // central differences, h = 1e-5: O(h²) truncation, ~1e-11 rounding
      const std::vector<double> numeric = test::fd_grad(x, [&] { return loss(c, probe); });
      CHECK(rel_err(*pair.second, numeric) <= 1e-6);
    }
  }
}

TEST_CASE("cpu causal conv1d matches the reference in forward and backward", "[cpu][grad]") {
  const uint64_t seed = test::test_seed(222);
  for (int64_t k : {2, 3, 4}) {
    for (bool silu : {true, false}) {
      for (bool bias : {true, false}) {
        ConvConfig c;
        c.lens = {1, 2, 3, 7, 64, 130}, c.channels = 72, c.d_conv = k, c.silu = silu, c.bias = bias;
        INFO(c.str() << ", seed " << seed);
        ConvData<double> ref = make_data(c, seed);
        ConvData<float> cpu = convert<float>(ref);
        forward(c, ref), forward(c, cpu);
        backward(c, ref), backward(c, cpu);
        // float32: out and dx are sums of <= 4 products (+ the SiLU): ~1e-7 measured, 1e-6;
        // dweight and dbias sum over all 207 tokens: 1e-5.
        CHECK(rel_err(cpu.out, ref.out) <= 1e-6);
        CHECK(rel_err(cpu.dx, ref.dx) <= 1e-6);
        CHECK(rel_err(cpu.dweight, ref.dweight) <= 1e-5);
        if (bias) CHECK(rel_err(cpu.dbias, ref.dbias) <= 1e-5);
      }
    }
  }
}

TEST_CASE("cpu causal conv1d of a packed batch equals each sequence run alone", "[cpu]") {
  const uint64_t seed = test::test_seed(333);
  INFO("seed " << seed);
  ConvConfig c;
  c.lens = {1, 2, 3, 7, 64, 0, 5}, c.channels = 80, c.d_conv = 4;  // 1, 2, 3 < d_conv
  ConvData<float> all = convert<float>(make_data(c, seed));
  forward(c, all);
  backward(c, all);
  std::vector<double> dw(all.dweight.size()), db(all.dbias.size());
  for (int64_t b = 0; b < c.batch(); ++b) {
    INFO("sequence " << b << " of length " << c.lens[b]);
    const int64_t s = all.cu[b], l = c.lens[b], C = c.channels;
    ConvConfig one = c;
    one.lens = {l};
    ConvData<float> d = all;
    d.cu = {0, l};
    d.x.assign(all.x.begin() + s * C, all.x.begin() + (s + l) * C);
    d.dout.assign(all.dout.begin() + s * C, all.dout.begin() + (s + l) * C);
    forward(one, d);
    backward(one, d);
    // Same arithmetic on the same inputs, nothing crosses a sequence start: exactly equal.
    CHECK(d.out == std::vector<float>(all.out.begin() + s * C, all.out.begin() + (s + l) * C));
    CHECK(d.dx == std::vector<float>(all.dx.begin() + s * C, all.dx.begin() + (s + l) * C));
    for (std::size_t i = 0; i < dw.size(); ++i) dw[i] += d.dweight[i];
    for (std::size_t i = 0; i < db.size(); ++i) db[i] += d.dbias[i];
  }
  // Parameter gradients: the same terms summed in another order (float): 1e-6.
  CHECK(rel_err(all.dweight, dw) <= 1e-6);
  CHECK(rel_err(all.dbias, db) <= 1e-6);
}

TEST_CASE("cpu causal conv1d backward overwrites dx and accumulates dweight and dbias", "[cpu][grad]") {
  const uint64_t seed = test::test_seed(444);
  INFO("seed " << seed);
  ConvConfig c;
  c.lens = {9, 3}, c.channels = 20, c.d_conv = 3;
  ConvData<float> d = convert<float>(make_data(c, seed));
  forward(c, d);
  backward(c, d);
  const ConvData<float> once = d;
  backward(c, d, /*keep_params=*/true);
  for (float x : d.dx) REQUIRE(std::isfinite(x));
  CHECK(d.dx == once.dx);
  std::vector<float> w2 = once.dweight, b2 = once.dbias;
  for (auto& x : w2) x *= 2;
  for (auto& x : b2) x *= 2;
  CHECK(rel_err(d.dweight, w2) <= 1e-6);  // per-part sums added twice: float rounding only
  CHECK(rel_err(d.dbias, b2) <= 1e-6);
}

TEST_CASE("causal conv1d rejects bad arguments with errors that name the sizes", "[cpu]") {
  const uint64_t seed = test::test_seed(555);
  ConvConfig c;
  c.lens = {3, 4}, c.channels = 6, c.d_conv = 4;
  ConvData<float> d = convert<float>(make_data(c, seed));
  forward(c, d);
  CausalConv1dFwdArgs<float> a;
  a.in = inputs(c, d);
  a.out = View<float>(d.out.data(), {c.tokens(), c.channels});
  SECTION("weight of another shape") {
    a.in.weight = View<const float>(d.weight.data(), {c.d_conv, c.channels});
    REQUIRE_THROWS_AS(cpu::causal_conv1d_fwd(a), ShapeError);
    REQUIRE_THROWS_WITH(cpu::causal_conv1d_fwd(a), Catch::Contains("weight must be (channels, d_conv) = (6, K), got (4, 6)"));
  }
  SECTION("out of another shape") {
    a.out = View<float>(d.out.data(), {c.channels, c.tokens()});
    REQUIRE_THROWS_WITH(cpu::causal_conv1d_fwd(a), Catch::Contains("out has shape (6, 7), expected (7, 6)"));
  }
  SECTION("unsupported d_conv") {
    std::vector<float> w(static_cast<std::size_t>(c.channels * 5), 0.25f);
    a.in.weight = View<const float>(w.data(), {c.channels, 5});
    REQUIRE_THROWS_AS(cpu::causal_conv1d_fwd(a), ConfigError);
    REQUIRE_THROWS_WITH(cpu::causal_conv1d_fwd(a), Catch::Contains("d_conv = 5") && Catch::Contains("supported: 2, 3, 4"));
  }
  SECTION("cu_seqlens decreasing") {
    std::vector<int64_t> bad = {0, 5, 2, 7};
    a.in.cu_seqlens = View<const int64_t>(bad.data(), {4});
    REQUIRE_THROWS_AS(cpu::causal_conv1d_fwd(a), ShapeError);
    REQUIRE_THROWS_WITH(cpu::causal_conv1d_fwd(a), Catch::Contains("cu_seqlens[2] = 2 < cu_seqlens[1] = 5"));
  }
}
