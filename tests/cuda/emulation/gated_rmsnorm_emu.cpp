// Host emulation of the CUDA gated RMSNorm kernels (see run.sh) against the double reference.
#include "grn_kern.hpp"
#include "mambatrack/ops/reference/gated_rmsnorm.hpp"
#include <cstdio>
#include <random>
using namespace mambatrack;
namespace K = mambatrack::cuda::grn_detail;
// 16-byte aligned float buffers (the packed kernels' accesses; the host checks that alignment).
template <class U>
struct Aligned16 {
  using value_type = U;
  Aligned16() = default;
  template <class X>
  Aligned16(const Aligned16<X>&) {}
  U* allocate(std::size_t n) { return static_cast<U*>(::operator new(n * sizeof(U), std::align_val_t(16))); }
  void deallocate(U* p, std::size_t) { ::operator delete(p, std::align_val_t(16)); }
  bool operator==(const Aligned16&) const { return true; }
  bool operator!=(const Aligned16&) const { return false; }
};
using FV = std::vector<float, Aligned16<float>>;
template <class G>
double rel(const G& g, const std::vector<double>& w) {
  double n = 0, d = 0;
  for (size_t i = 0; i < w.size(); ++i) { double e = g[i] - w[i]; n += e * e; d += w[i] * w[i]; }
  for (float x : g) if (!std::isfinite(x)) return 1e30;
  return std::sqrt(n / d);
}
template <int V = 1>
int run(int64_t T, int64_t ch, int64_t G) {
  std::mt19937_64 rng(T * 7 + ch);
  auto uni = [&](size_t n, double lo, double hi) { std::uniform_real_distribution<double> u(lo, hi); std::vector<double> v(n); for (auto& x : v) x = double(float(u(rng))); return v; };
  auto y = uni(T * ch, -2, 2), z = uni(T * ch, -3, 3), w = uni(ch, .5, 1.5), dout = uni(T * ch, -1, 1), dw0 = uni(ch, -.1, .1);
  auto f = [](const std::vector<double>& v) { return FV(v.begin(), v.end()); };
  const Shape s{T, ch};
  std::vector<double> ro(T * ch), rdy(T * ch), rdz(T * ch), rdw = dw0;
  const double eps = double(1e-5f);
  reference::gated_rmsnorm_fwd({View<const double>(y.data(), s), View<const double>(z.data(), s), View<const double>(w.data(), Shape{ch}), G, eps, View<double>(ro.data(), s)});
  reference::gated_rmsnorm_bwd({View<const double>(y.data(), s), View<const double>(z.data(), s), View<const double>(w.data(), Shape{ch}), View<const double>(dout.data(), s), G, eps, View<double>(rdy.data(), s), View<double>(rdz.data(), s), View<double>(rdw.data(), Shape{ch})});
  auto fy = f(y), fz = f(z), fw = f(w), fd = f(dout);
  const float NaN = std::numeric_limits<float>::quiet_NaN();
  FV out(T * ch, NaN), dy(T * ch, NaN), dz(T * ch, NaN), dw = f(dw0);
  const int64_t rows = T * G, n = ch / G;
  const unsigned grid = (rows + 7) / 8;
  emu::launch(dim3(grid), dim3(256), 0, [&] { K::fwd_kernel<float, V>(fy.data(), fz.data(), fw.data(), out.data(), rows, G, n, 1e-5f); });
  const int64_t rpp = 128, parts = (T + rpp - 1) / rpp;
  std::vector<float> r(rows, NaN), part(parts * ch, NaN);
  emu::launch(dim3(grid), dim3(256), 0, [&] { K::stats_kernel<float, V>(fy.data(), fz.data(), r.data(), rows, G, n, 1e-5f); });
  emu::launch(dim3((ch + 127) / 128, parts), dim3(128), 0, [&] { K::dweight_partials<float>(fy.data(), fz.data(), fd.data(), r.data(), T, ch, n, rpp, part.data()); });
  emu::launch(dim3(grid), dim3(256), 0, [&] { K::dx_kernel<float, V>(fy.data(), fz.data(), fw.data(), fd.data(), r.data(), dy.data(), dz.data(), rows, G, n); });
  for (int64_t c = 0; c < ch; ++c) { float sacc = 0; for (int64_t p = 0; p < parts; ++p) sacc += part[p * ch + c]; dw[c] += sacc; }
  double e[4] = {rel(out, ro), rel(dy, rdy), rel(dz, rdz), rel(dw, rdw)};
  std::printf("V%d T%ld ch%ld G%ld: out %.1e dy %.1e dz %.1e dw %.1e\n", V, T, ch, G, e[0], e[1], e[2], e[3]);
  int bad = 0; for (double x : e) bad += !(x < 1e-5);
  return bad;
}
int main() { int b = run(300, 512, 1) + run(77, 96, 2) + run(5, 40, 4) + run(260, 64, 2) + run<4>(300, 512, 1) + run<4>(77, 96, 2) + run<4>(5, 48, 4) + run<4>(260, 64, 2) + run<4>(9, 24, 2); std::printf("%s\n", b ? "FAIL" : "all ok"); return b; }
