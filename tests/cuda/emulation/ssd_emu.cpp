// Host emulation of the CUDA SSD launch sequence (see run.sh) against the double reference:
// packed varlen batches, ngroups 1/2, options on/off, dt clamp, chunk sizes that do and do not
// divide the lengths, and a small shared-memory limit that forces the chunk down.
#include "ssd_kern.hpp"  // written by make_kernels.py
#include "mambatrack/ops/reference/ssd.hpp"
#include <cstdio>
#include <cstring>
#include <string>
#include <random>
using namespace mambatrack;
namespace D = mambatrack::cuda::ssd_cuda_detail;

struct Case {
  std::vector<int64_t> lens; int64_t H, P, N, G, chunk; bool Dp, bias, init, dfinal, dinit, clamp; size_t smem;
  int64_t hint = 0;    // SsdInputs::max_seqlen_hint
  bool saved = false;  // the forward saves its chunk-start states; the backward runs with them and
                       // without them (the two must agree bit for bit)
  bool final_out = true;  // the forward writes final_state
};

template <class T>
double rel(const std::vector<T>& g, const std::vector<double>& w) {
  double n = 0, d = 0;
  for (size_t i = 0; i < w.size(); ++i) { double e = static_cast<float>(g[i]) - w[i]; n += e * e; d += w[i] * w[i]; }
  for (const T& x : g) if (!std::isfinite(static_cast<float>(x))) return 1e30;
  return d == 0 ? std::sqrt(n) : std::sqrt(n / d);
}

template <class T>
int run(const Case& c, uint64_t seed) {
  const bool bf = !std::is_same_v<T, float>;
  const double kA = bf ? 1e-2 : 2e-5, kD = bf ? 1e-2 : 5e-5, kP = bf ? 1e-2 : 1e-4;  // activations, ddt, params
  std::mt19937_64 rng(seed);
  auto uni = [&](size_t n, double lo, double hi) { std::uniform_real_distribution<double> u(lo, hi); std::vector<double> v(n); for (auto& x : v) x = double(float(T(float(u(rng))))); return v; };
  const int64_t batch = c.lens.size();
  std::vector<int64_t> cu(batch + 1, 0);
  for (int64_t b = 0; b < batch; ++b) cu[b + 1] = cu[b] + c.lens[b];
  const int64_t L = cu[batch], H = c.H, P = c.P, N = c.N, G = c.G;
  auto x = uni(L * H * P, -1, 1), dt = uni(L * H, -1.5, 1), bias = uni(H, -2, 0), A = uni(H, -2, -0.3),
       B = uni(L * G * N, -1, 1), C = uni(L * G * N, -1, 1), Dv = uni(H, 0.5, 1.5), init = uni(batch * H * P * N, -1, 1),
       dy = uni(L * H * P, -1, 1), dfin = uni(batch * H * P * N, -1, 1), dA0 = uni(H, -.1, .1), dD0 = uni(H, -.1, .1), db0 = uni(H, -.1, .1);
  auto f = [](const std::vector<double>& v) { std::vector<T> o; for (double x : v) o.push_back(T(float(x))); return o; };
  const double dmin = c.clamp ? double(float(T(0.15f))) : 0.0,
               dmax = c.clamp ? double(float(T(0.6f))) : std::numeric_limits<double>::infinity();
  // reference
  SsdInputs<double> ri;
  const Shape xs{L, H, P}, hs{H}, bs{L, G, N}, ss{batch, H, P, N};
  ri.x = View<const double>(x.data(), xs); ri.dt = View<const double>(dt.data(), Shape{L, H});
  if (c.bias) ri.dt_bias = View<const double>(bias.data(), hs);
  ri.A = View<const double>(A.data(), hs); ri.B = View<const double>(B.data(), bs); ri.C = View<const double>(C.data(), bs);
  if (c.Dp) ri.D = View<const double>(Dv.data(), hs);
  if (c.init) ri.initial_state = View<const double>(init.data(), ss);
  ri.cu_seqlens = View<const int64_t>(cu.data(), Shape{batch + 1});
  ri.dt_min = dmin; ri.dt_max = dmax;
  std::vector<double> ry(L * H * P), rf(batch * H * P * N);
  reference::ssd_fwd({ri, View<double>(ry.data(), xs), View<double>(rf.data(), ss)});
  std::vector<double> rdx(L * H * P), rddt(L * H), rdB(L * G * N), rdC(L * G * N), rdi(batch * H * P * N), rdA = dA0, rdD = dD0, rdb = db0;
  SsdBwdArgs<double> rb; rb.in = ri; rb.dy = View<const double>(dy.data(), xs);
  if (c.dfinal) rb.dfinal_state = View<const double>(dfin.data(), ss);
  rb.dx = View<double>(rdx.data(), xs); rb.ddt = View<double>(rddt.data(), Shape{L, H}); rb.dB = View<double>(rdB.data(), bs); rb.dC = View<double>(rdC.data(), bs);
  if (c.dinit) rb.dinitial_state = View<double>(rdi.data(), ss);
  rb.dA = View<double>(rdA.data(), hs); if (c.Dp) rb.dD = View<double>(rdD.data(), hs); if (c.bias) rb.ddt_bias = View<double>(rdb.data(), hs);
  reference::ssd_bwd(rb);
  // "device" inputs (exact-size float vectors)
  auto fx = f(x), fdt = f(dt), fbias = f(bias), fA = f(A), fB = f(B), fC = f(C), fD = f(Dv), finit = f(init), fdy = f(dy), fdfin = f(dfin);
  const T kNaN = T(std::numeric_limits<float>::quiet_NaN());
  SsdInputs<T, Cuda> in;
  in.x = View<const T, Cuda>(fx.data(), xs); in.dt = View<const T, Cuda>(fdt.data(), Shape{L, H});
  if (c.bias) in.dt_bias = View<const T, Cuda>(fbias.data(), hs);
  in.A = View<const T, Cuda>(fA.data(), hs); in.B = View<const T, Cuda>(fB.data(), bs); in.C = View<const T, Cuda>(fC.data(), bs);
  if (c.Dp) in.D = View<const T, Cuda>(fD.data(), hs);
  if (c.init) in.initial_state = View<const T, Cuda>(finit.data(), ss);
  in.cu_seqlens = View<const int64_t, Cuda>(cu.data(), Shape{batch + 1});
  in.dt_min = T(float(dmin)); in.dt_max = T(float(dmax));
  emu::kSmemLimit = c.smem;
  int bad = 0;
  auto report = [&](const char* n, const std::vector<T>& g, const std::vector<double>& w, double tol) {
    const double e = rel(g, w);
    std::printf("  %-8s %.2e%s\n", n, e, e <= tol ? "" : "   <-- FAIL");
    bad += e > tol;
  };
  in.max_seqlen_hint = c.hint;
  const float fN = std::numeric_limits<float>::quiet_NaN();
  auto build_map = [&](auto& p, std::vector<int>& map) {
    map.assign(2 * p.slots, -1);
    p.slot_seq = map.data(); p.slot_k = map.data() + p.slots;
    emu::launch(dim3((p.batch + 127) / 128), dim3(128), 0, [&] { D::map_slots<0>(p.cu, p.batch, p.tokens, p.Q, p.slots, p.slot_seq, p.slot_k); });
  };
  std::vector<float> saved;  // the forward's saved states (empty: none)
  // ---------- forward (mirror of ssd_fwd) ----------
  std::vector<T> y(L * H * P, kNaN), fin(batch * H * P * N, kNaN);
  {
    SsdFwdArgs<T, Cuda> a{in, View<T, Cuda>(y.data(), xs), View<T, Cuda>(fin.data(), ss)};
    if (!c.final_out) a.final_state = {};
    a.chunk_size = c.chunk;
    const SsdDims d = validate_ssd_fwd(a);
    auto p = D::make_params<T>(a.in, d, a.chunk_size, false);
    auto ps = p;
    bool save = false;
    if (c.saved) {
      ps = D::make_params<T>(a.in, d, a.chunk_size, true);
      save = !ps.single;
      if (save && p.Q % ps.Q != 0) {
        if (size_t(D::fwd_floats(ps.Q, N, P, p.mma)) * 4 <= D::smem_limit()) { p.Q = ps.Q; p.single = false; p.slots = ps.slots; p.nb = ps.nb; }
        else save = false;
      }
    }
    p.y = y.data(); p.final_state = c.final_out ? fin.data() : nullptr;
    std::vector<int> map, map2;
    std::vector<float> wsH, wsdec, wsdec2;
    if (save) {
      saved.assign(ps.nb * H * P * N, fN);
      ps.final_state = p.final_state;
      build_map(ps, map);
      wsdec.assign(ps.nb * H, fN);
      ps.ws_H = saved.data(); ps.ws_dec = wsdec.data();
      emu::launch(D::outer_grid(ps), dim3(D::kThreads), D::outer_floats(ps.Q, N, P) * 4, [&] { D::chunk_outer<T>(ps, 0); });
      emu::launch(D::pass_grid(ps), dim3(D::kThreads), 0, [&] { D::pass_states<T>(ps, 0); });
      if (p.Q == ps.Q) { p.slot_seq = ps.slot_seq; p.slot_k = ps.slot_k; p.ws_H = ps.ws_H; }
      else {
        if (!p.single) build_map(p, map2);
        p.ws_H = saved.data(); p.Qs = ps.Q;
      }
    } else if (!p.single) {
      build_map(p, map);
      wsH.assign(p.nb * H * P * N, fN); wsdec.assign(p.nb * H, fN);
      p.ws_H = wsH.data(); p.ws_dec = wsdec.data();
      emu::launch(D::outer_grid(p), dim3(D::kThreads), D::outer_floats(p.Q, N, P) * 4, [&] { D::chunk_outer<T>(p, 0); });
      emu::launch(D::pass_grid(p), dim3(D::kThreads), 0, [&] { D::pass_states<T>(p, 0); });
    }
    const bool short_fwd = bf && D::use_short(p, false, D::smem_limit());
    if (short_fwd)
      emu::launch(dim3(p.slots, G), dim3(D::short_threads(p.hpg)), D::short_floats(p.Q, N, P, p.hpg, false) * 4, [&] { D::fwd_short<T>(p); });
    else
      emu::launch(dim3(p.slots, G), dim3(D::kThreads), D::fwd_floats(p.Q, N, P, p.mma) * 4, [&] { D::fwd_out<T>(p); });
    if (p.single) emu::launch(dim3(p.batch), dim3(128), 0, [&] { D::single_edges<T>(p, false); });
    std::printf("case %s H%ld P%ld N%ld G%ld chunk %ld hint %ld (fwd Q %d%s%s)\n", bf ? "bf16" : "fp32", H, P, N, G, c.chunk, c.hint, p.Q,
                p.single ? (short_fwd ? ", single chunk, fwd_short" : ", single chunk") : "", save ? (p.Qs ? ", states saved at the backward's chunk" : ", states saved") : "");
    report("y", y, ry, kA);
    if (c.final_out) report("final", fin, rf, kA);
  }
  // ---------- backward (mirror of ssd_bwd) ----------
  struct Grads { std::vector<T> dx, ddt, dB, dC, di, dA, dD, ddb; };
  auto backward = [&](bool use_saved) {
    Grads o{std::vector<T>(L * H * P, kNaN), std::vector<T>(L * H, kNaN), std::vector<T>(L * G * N, kNaN), std::vector<T>(L * G * N, kNaN),
            std::vector<T>(batch * H * P * N, kNaN), f(dA0), f(dD0), f(db0)};
    SsdBwdArgs<T, Cuda> a;
    a.in = in; a.dy = View<const T, Cuda>(fdy.data(), xs);
    if (c.dfinal) a.dfinal_state = View<const T, Cuda>(fdfin.data(), ss);
    a.dx = View<T, Cuda>(o.dx.data(), xs); a.ddt = View<T, Cuda>(o.ddt.data(), Shape{L, H});
    a.dB = View<T, Cuda>(o.dB.data(), bs); a.dC = View<T, Cuda>(o.dC.data(), bs);
    if (c.dinit) a.dinitial_state = View<T, Cuda>(o.di.data(), ss);
    a.dA = View<T, Cuda>(o.dA.data(), hs); if (c.Dp) a.dD = View<T, Cuda>(o.dD.data(), hs); if (c.bias) a.ddt_bias = View<T, Cuda>(o.ddb.data(), hs);
    a.chunk_size = c.chunk;
    const SsdDims d = validate_ssd_bwd(a);
    auto p = D::make_params<T>(a.in, d, a.chunk_size, true);
    const bool with_saved = use_saved && !p.single && !saved.empty();
    if (with_saved && int64_t(saved.size()) != p.nb * H * P * N) { std::printf("  saved states of the wrong size\n"); std::exit(1); }
    p.dy = fdy.data(); p.dfinal = c.dfinal ? fdfin.data() : nullptr; p.dx = o.dx.data(); p.ddt = o.ddt.data(); p.dB = o.dB.data(); p.dC = o.dC.data();
    p.dinit = c.dinit ? o.di.data() : nullptr;
    std::vector<int> map;
    std::vector<float> wsH, wsdec, wsG, wsdecb, par(p.slots * 3 * H, fN);
    p.ws_par = par.data();
    if (!p.single) {
      build_map(p, map);
      wsdec.assign(p.nb * H, fN); wsG.assign(p.nb * H * P * N, fN); wsdecb.assign(p.nb * H, fN);
      if (!with_saved) wsH.assign(p.nb * H * P * N, fN);
      p.ws_H = with_saved ? saved.data() : wsH.data(); p.ws_dec = wsdec.data(); p.ws_G = wsG.data(); p.ws_decb = wsdecb.data();
      if (!with_saved) {
        emu::launch(D::outer_grid(p), dim3(D::kThreads), D::outer_floats(p.Q, N, P) * 4, [&] { D::chunk_outer<T>(p, 0); });
        emu::launch(D::pass_grid(p), dim3(D::kThreads), 0, [&] { D::pass_states<T>(p, 0); });
      }
      emu::launch(D::outer_grid(p), dim3(D::kThreads), D::outer_floats(p.Q, N, P) * 4, [&] { D::chunk_outer<T>(p, 1); });
      emu::launch(D::pass_grid(p), dim3(D::kThreads), 0, [&] { D::pass_states<T>(p, 1); });
    }
    // the main kernel that ssd_bwd runs (launch_bwd_main): bwd_mma on the tensor-core path
    const bool short_kernel = bf && D::use_short(p, true, D::smem_limit());
    const bool mma_kernel = bf && D::kBwdMma && p.mma;
    const int threads = short_kernel ? D::short_threads(p.hpg) : mma_kernel ? D::bwd_mma_threads(p.Q) : D::kThreads;
    if (short_kernel)
      emu::launch(dim3(p.slots, G), dim3(threads), D::short_floats(p.Q, N, P, p.hpg, true) * 4, [&] { D::bwd_short<T>(p); });
    else
      emu::launch(dim3(p.slots, G), dim3(threads), D::bwd_floats(p.Q, N, P, p.mma) * 4, [&] {
        if (mma_kernel) D::bwd_mma<T>(p);
        else D::bwd_main<T>(p);
      });
    if (p.single) emu::launch(dim3(p.batch), dim3(128), 0, [&] { D::single_edges<T>(p, true); });
    for (int q = 0; q < 3; ++q) {
      if (q == 1 && !c.Dp) continue;
      if (q == 2 && !c.bias) continue;
      T* out = q == 0 ? o.dA.data() : q == 1 ? o.dD.data() : o.ddb.data();
      for (int64_t h = 0; h < H; ++h) {
        float s = 0;
        for (int64_t r = 0; r < p.slots; ++r) s += par[r * 3 * H + q * H + h];
        out[h] = T(static_cast<float>(out[h]) + s);
      }
    }
    std::printf("  (bwd Q %d, %s, %d threads%s%s)\n", p.Q, short_kernel ? "bwd_short" : mma_kernel ? "bwd_mma" : "bwd_main", threads, p.single ? ", single chunk" : "",
                with_saved ? ", saved states" : "");
    return o;
  };
  Grads gr = backward(true);
  if (!saved.empty()) {  // the recomputed states give the same bits
    const Grads g2 = backward(false);
    auto same = [](const std::vector<T>& u, const std::vector<T>& v) { return std::memcmp(u.data(), v.data(), u.size() * sizeof(T)) == 0; };
    const bool ok = same(gr.dx, g2.dx) && same(gr.ddt, g2.ddt) && same(gr.dB, g2.dB) && same(gr.dC, g2.dC) && same(gr.di, g2.di) &&
                    same(gr.dA, g2.dA) && same(gr.dD, g2.dD) && same(gr.ddb, g2.ddb);
    std::printf("  saved vs recomputed states: %s\n", ok ? "bit-identical" : "DIFFER   <-- FAIL");
    bad += !ok;
  }
  auto& dx = gr.dx; auto& ddt = gr.ddt; auto& dB = gr.dB; auto& dC = gr.dC; auto& di = gr.di; auto& dA = gr.dA; auto& dD = gr.dD; auto& ddb = gr.ddb;
  report("dx", dx, rdx, kA);
  report("ddt", ddt, rddt, kD);
  report("dB", dB, rdB, kA);
  report("dC", dC, rdC, kA);
  if (c.dinit) report("dinit", di, rdi, kA);
  report("dA", dA, rdA, kP);
  if (c.Dp) report("dD", dD, rdD, kP);
  if (c.bias) report("ddtb", ddb, rdb, kP);
  return bad;
}

// The short-track skip (max_seqlen_hint: one chunk per sequence, no state passing; empty
// sequences and initial / final states handled by the output kernels) and saved states (the
// forward's chunk-start states reused by the backward, bit-identical to recomputing them).
Case with(Case c, int64_t hint, bool saved, bool final_out = true) { c.hint = hint; c.saved = saved; c.final_out = final_out; return c; }
int run_new(int64_t smem_small) {
  int bad = 0;
  bad += run<bfloat16>(with({{16, 16, 5, 16, 0, 13, 1}, 4, 16, 16, 1, 16, true, true, true, true, true, true, 232448}, 16, true), 21);
  bad += run<bfloat16>(with({{9, 0, 16, 3}, 4, 16, 32, 2, 64, true, true, false, false, true, false, 232448}, 16, false), 22);
  bad += run<float>(with({{7, 12, 0, 3}, 4, 12, 12, 2, 64, true, true, true, true, true, false, 232448}, 12, false), 23);
  bad += run<float>(with({{1, 2, 3, 7, 64, 100, 0, 33}, 4, 16, 16, 2, 16, true, true, true, true, true, false, 232448}, 0, true), 24);
  bad += run<bfloat16>(with({{100, 70, 3, 64, 0}, 2, 16, 32, 1, 64, true, true, true, true, true, false, 232448}, 0, true), 25);
  // a shared-memory limit under which the backward runs half the forward's chunk: the forward's
  // chunks read every other saved state
  bad += run<bfloat16>(with({{100, 70, 3, 64, 0, 130}, 2, 16, 32, 1, 64, true, true, true, true, true, false, size_t(smem_small)}, 0, true), 26);
  // the short kernels (no initial / final states): chunk 16 and 32, several heads per warp
  // (12 heads: 8 warps), one head per group, and an empty sequence
  bad += run<bfloat16>(with({{16, 16, 5, 16, 0, 13, 1}, 4, 16, 16, 1, 16, true, true, false, false, false, true, 232448}, 16, false, false), 28);
  bad += run<bfloat16>(with({{30, 17, 5, 32, 0, 1}, 12, 16, 32, 1, 64, true, true, false, false, false, false, 232448}, 32, false, false), 29);
  bad += run<bfloat16>(with({{9, 0, 16, 3}, 4, 32, 48, 4, 64, false, false, false, false, false, false, 232448}, 16, true, false), 30);
  // a hint above the chunk: the usual path (hint only caps the chunk)
  bad += run<bfloat16>(with({{40, 3, 17}, 2, 16, 16, 1, 16, true, true, true, true, true, true, 232448}, 40, true), 27);
  return bad;
}

int main(int argc, char** argv) {
  int bad = 0;
  // "mma": only the bfloat16 cases of the tensor-core backward (quick check of bwd_mma).
  const bool only_mma = argc > 1 && std::string(argv[1]) == "mma";
  if (argc > 1 && std::string(argv[1]) == "new") {
    bad += run_new(argc > 2 ? std::atol(argv[2]) : 100000);
    std::printf("%s\n", bad ? "FAILURES" : "all ok");
    return bad != 0;
  }
  if (only_mma) {
    bad += run<bfloat16>({{1, 2, 3, 7, 64, 100, 0, 33}, 4, 16, 32, 2, 24, true, true, true, true, true, false, 232448}, 7);
    bad += run<bfloat16>({{16, 16, 5, 16, 33, 1}, 4, 16, 16, 1, 16, false, true, false, false, true, true, 232448}, 10);
    bad += run<bfloat16>({{70, 33, 64, 2}, 4, 32, 16, 2, 32, true, false, true, false, true, false, 232448}, 11);
    bad += run<bfloat16>({{50, 3, 40}, 2, 16, 48, 1, 32, true, true, false, true, false, false, 232448}, 12);
  // chunk 64: four 16-token tile rows (the triangular k ranges of the W and M products)
  bad += run<bfloat16>({{100, 70, 3, 64}, 2, 16, 32, 1, 64, true, true, true, true, true, false, 232448}, 13);
    std::printf("%s\n", bad ? "FAILURES" : "all ok");
    return bad != 0;
  }
  bad += run<float>({{1, 2, 3, 7, 64, 100, 0, 33}, 4, 16, 16, 2, 16, true, true, true, true, true, false, 232448}, 1);
  bad += run<float>({{1, 2, 3, 7, 64, 100, 0, 33}, 4, 16, 16, 2, 24, true, true, true, true, true, false, 232448}, 2);
  bad += run<float>({{100, 1, 64, 2, 7, 3}, 2, 8, 4, 1, 7, true && false, false, false, false, false, false, 232448}, 3);
  bad += run<float>({{7, 64, 100, 1}, 4, 12, 12, 2, 32, true, true, false, true, true, true, 232448}, 4);
  if (argc > 1 && !only_mma) bad += run<float>({{100, 3, 64}, 2, 64, 128, 1, 64, true, true, true, true, true, false, 232448}, 5);
  if (argc > 1 && !only_mma) bad += run<bfloat16>({{100, 3, 64}, 2, 64, 128, 1, 64, true, true, true, true, true, false, 232448}, 9);
  // a small shared-memory limit forces the chunk down (odd sizes)
  bad += run<float>({{1, 2, 3, 7, 64, 100}, 2, 16, 32, 2, 64, true, true, true, true, true, false, 40000}, 6);
  // bfloat16 storage: the tensor-core chunk states (headdim, d_state multiples of 16) and the
  // SIMT path otherwise.
  bad += run<bfloat16>({{1, 2, 3, 7, 64, 100, 0, 33}, 4, 16, 32, 2, 24, true, true, true, true, true, false, 232448}, 7);
  bad += run<bfloat16>({{40, 3, 17}, 2, 12, 12, 1, 16, true, true, true, true, true, true, 232448}, 8);
  // bwd_mma: no initial / final state (chunks without H or G), several heads per group, short
  // tracks at chunk 16, and chunk 32 over long sequences (partial last chunks, dt clamp).
  bad += run<bfloat16>({{16, 16, 5, 16, 33, 1}, 4, 16, 16, 1, 16, false, true, false, false, true, true, 232448}, 10);
  bad += run<bfloat16>({{70, 33, 64, 2}, 4, 32, 16, 2, 32, true, false, true, false, true, false, 232448}, 11);
  bad += run<bfloat16>({{50, 3, 40}, 2, 16, 48, 1, 32, true, true, false, true, false, false, 232448}, 12);
  // chunk 64: four 16-token tile rows (the triangular k ranges of the W and M products)
  bad += run<bfloat16>({{100, 70, 3, 64}, 2, 16, 32, 1, 64, true, true, true, true, true, false, 232448}, 13);
  bad += run_new(100000);
  std::printf("%s\n", bad ? "FAILURES" : "all ok");
  return bad != 0;
}
