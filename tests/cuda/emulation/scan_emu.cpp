// Host emulation of the CUDA selective-scan launch sequences (see run.sh) against the double
// reference, float storage: the tiled kernels (ScanImpl::kTiled: fwd_seq / fwd_chunk with
// fwd_tokens_tiled, bwd_tiled; d_state 12: the tiled forward with the per-channel backward) on
// the sequential and the chunked path (passes over single chunks, and over 3 chunks each:
// grouped_params, bit-identical to the former when every sequence fits one chunk), packed varlen
// batches with
// an empty sequence and sequences longer than a staging tile (64 tokens) and than a chunk, groups
// and channel blocks with inactive lanes, all options on and off; and bit-identical outputs of
// the two paths when every sequence fits one chunk (as test_selective_scan_cuda requires).
#include "scan_kern.hpp"  // written by scan_make_kernel.py
#include "mambatrack/ops/reference/selective_scan.hpp"
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
using namespace mambatrack;
namespace SD = mambatrack::cuda::scan_detail;

struct Case {
  std::vector<int64_t> lens;
  int64_t dim, N, G, chunk;
  bool z, D, bias, init, dfinal, dinit, softplus;
};

double rel(const std::vector<float>& g, const std::vector<double>& w) {
  double n = 0, d = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    if (!std::isfinite(g[i])) return 1e30;
    const double e = g[i] - w[i];
    n += e * e;
    d += w[i] * w[i];
  }
  return d == 0 ? std::sqrt(n) : std::sqrt(n / d);
}

struct Out {
  std::vector<float> out, fin, du, ddelta, dB, dC, dz, dinit, dA, dD, ddb;
};

// Chunked path: saved chunks per pass chunk (grouped_params; 1 = the passes over single chunks).
template <int N>
Out run_emu(const Case& c, bool seq, int64_t group, const std::vector<int64_t>& cu, const std::vector<float>& u,
            const std::vector<float>& delta, const std::vector<float>& A, const std::vector<float>& B,
            const std::vector<float>& C, const std::vector<float>& Dv, const std::vector<float>& bias,
            const std::vector<float>& z, const std::vector<float>& init, const std::vector<float>& dout,
            const std::vector<float>& dfin, const std::vector<float>& dA0, const std::vector<float>& dD0,
            const std::vector<float>& db0) {
  using T = float;
  const float kNaN = std::numeric_limits<float>::quiet_NaN();
  const int64_t batch = static_cast<int64_t>(c.lens.size()), L = cu[batch], dim = c.dim, G = c.G;
  SelectiveScanInputs<T, Cuda> in;
  in.u = View<const T, Cuda>(u.data(), Shape{L, dim});
  in.delta = View<const T, Cuda>(delta.data(), Shape{L, dim});
  in.A = View<const T, Cuda>(A.data(), Shape{dim, N});
  in.B = View<const T, Cuda>(B.data(), Shape{L, G, N});
  in.C = View<const T, Cuda>(C.data(), Shape{L, G, N});
  if (c.D) in.D = View<const T, Cuda>(Dv.data(), Shape{dim});
  if (c.bias) in.delta_bias = View<const T, Cuda>(bias.data(), Shape{dim});
  if (c.z) in.z = View<const T, Cuda>(z.data(), Shape{L, dim});
  if (c.init) in.initial_state = View<const T, Cuda>(init.data(), Shape{batch, dim, N});
  in.cu_seqlens = View<const int64_t, Cuda>(cu.data(), Shape{batch + 1});
  in.delta_softplus = c.softplus;
  in.chunk = c.chunk;
  const SelectiveScanSizes s = validate_selective_scan_inputs(in);
  const SD::Params<T> p0 = SD::make_params<T>(in, s);
  SD::Params<T> p = SD::grouped_params(p0, seq ? 1 : group);  // the forward's passes
  Out o;
  o.out.assign(L * dim, kNaN);
  o.fin.assign(batch * dim * N, kNaN);
  std::vector<float> saved(selective_scan_saved_shape(in).numel(), kNaN);
  p.out = o.out.data();
  p.final_state = o.fin.data();
  p.saved = saved.data();
  const unsigned gy = static_cast<unsigned>(p.ngroups * p.bpg);
  // Workspaces (exact size, NaN-filled) and the slot map, as prepare() makes them.
  std::vector<int> map(2 * p.slots, -1);
  std::vector<float> ws_state(p.slots * dim * N, kNaN), ws_sd(p.slots * dim, kNaN);
  p.slot_seq = map.data();
  p.slot_k = map.data() + p.slots;
  p.ws_state = ws_state.data();
  p.ws_sd = ws_sd.data();
  const auto map_slots = [&] {
    std::fill(map.begin(), map.begin() + p.slots, -1);
    emu::launch(dim3(static_cast<unsigned>((batch + 127) / 128)), dim3(128), 0,
                [&] { SD::map_slots<0>(p.cu, p.batch, p.tokens, p.chunk, p.slots, p.slot_seq, p.slot_k); });
  };
  const unsigned comb = static_cast<unsigned>((batch * dim * N + 255) / 256);
  SD::scan_impl_override() = SD::ScanImpl::kTiled;
  constexpr bool kTiledFwd = SD::tiled_fwd_supported<N>();
  if (seq) {
    emu::launch(dim3(static_cast<unsigned>(batch), gy), dim3(SD::kThreads), 0, [&] { SD::fwd_seq<T, N, kTiledFwd>(p); });
  } else {
    map_slots();
    emu::launch(dim3(static_cast<unsigned>(p.slots), gy), dim3(SD::kThreads), 0, [&] { SD::fwd_local<T, N, kTiledFwd>(p); });
    emu::launch(dim3(comb), dim3(256), 0, [&] { SD::fwd_combine<T, N>(p); });
    if (p.chunk != p.save_chunk)
      emu::launch(dim3(static_cast<unsigned>(p.slots), gy), dim3(SD::kThreads), 0, [&] { SD::fwd_chunk<T, N, kTiledFwd, true>(p); });
    else
      emu::launch(dim3(static_cast<unsigned>(p.slots), gy), dim3(SD::kThreads), 0, [&] { SD::fwd_chunk<T, N, kTiledFwd>(p); });
  }
  if (!SD::tiled_bwd_supported<N>() && p.chunk != p0.chunk) {  // launch_bwd groups the passes of the tiled backward only
    const SD::Params<T> pg = p;
    p = p0;
    p.out = pg.out;
    p.final_state = pg.final_state;
    p.saved = pg.saved;
    map.assign(2 * p.slots, -1);
    ws_state.assign(p.slots * dim * N, kNaN);
    ws_sd.assign(p.slots * dim, kNaN);
    p.slot_seq = map.data();
    p.slot_k = map.data() + p.slots;
    p.ws_state = ws_state.data();
    p.ws_sd = ws_sd.data();
  }
  // Backward.
  o.du.assign(L * dim, kNaN);
  o.ddelta.assign(L * dim, kNaN);
  o.dz.assign(L * dim, kNaN);
  o.dB.assign(L * G * N, kNaN);
  o.dC.assign(L * G * N, kNaN);
  o.dinit.assign(batch * dim * N, kNaN);
  o.dA = dA0;
  o.dD = dD0;
  o.ddb = db0;
  p.saved_in = saved.data();
  p.dout = dout.data();
  p.dfinal = c.dfinal ? dfin.data() : nullptr;
  p.du = o.du.data();
  p.ddelta = o.ddelta.data();
  p.dz = c.z ? o.dz.data() : nullptr;
  p.dinit = (c.init && c.dinit) ? o.dinit.data() : nullptr;
  constexpr bool kTiledBwd = SD::tiled_bwd_supported<N>();  // else the per-channel backward
  constexpr int S = kTiledBwd ? SD::tiled_lanes<N>() : 1;
  const int64_t W = dim * N + 2 * dim;
  const int64_t rows = seq ? std::min<int64_t>(2, batch) : p.slots;  // seq: 2 rows, several sequences per block
  const int64_t wpg = kTiledBwd ? p.bpg : 2 * p.bpg;  // dB/dC partial rows per (token, group)
  std::vector<float> ws_par(rows * W, kNaN), ws_bc(L * G * wpg * 2 * N, kNaN);
  p.ws_par = ws_par.data();
  p.ws_bc = ws_bc.data();
  if (!seq) {
    std::fill(ws_state.begin(), ws_state.end(), kNaN);
    std::fill(ws_sd.begin(), ws_sd.end(), kNaN);
    map_slots();
    emu::launch(dim3(static_cast<unsigned>(p.slots), gy), dim3(SD::kThreads), 0, [&] { SD::bwd_local<T, N>(p); });
    emu::launch(dim3(comb), dim3(256), 0, [&] { SD::bwd_combine<T, N>(p); });
  }
  if constexpr (kTiledBwd) {
    const auto tiled = [&](auto lanes) {
      constexpr int kS = decltype(lanes)::value;
      const std::size_t smem = SD::bwd_tiled_smem_bytes<N, kS>(c.chunk);
      if (smem > emu::kSmemLimit) std::abort();
      if (seq)
        emu::launch(dim3(static_cast<unsigned>(rows), gy), dim3(SD::kThreads * kS), smem, [&] { SD::bwd_tiled<T, N, kS, true>(p); });
      else
        emu::launch(dim3(static_cast<unsigned>(rows), gy), dim3(SD::kThreads * kS), smem, [&] { SD::bwd_tiled<T, N, kS, false>(p); });
    };
    if (SD::tiled_lanes_now<N>() == 4) tiled(std::integral_constant<int, 4>{});  // tiled_lanes_override
    else tiled(std::integral_constant<int, S>{});
  } else {
    const std::size_t smem = SD::bwd_smem_bytes<N>();
    if (seq) emu::launch(dim3(static_cast<unsigned>(rows), gy), dim3(SD::kThreads), smem, [&] { SD::bwd_seq<T, N>(p); });
    else emu::launch(dim3(static_cast<unsigned>(rows), gy), dim3(SD::kThreads), smem, [&] { SD::bwd_chunk<T, N>(p); });
  }
  const int64_t bc_rows = L * G;
  if (bc_rows > 0)
    emu::launch(dim3(static_cast<unsigned>((bc_rows * 2 * N + 255) / 256)), dim3(256), 0, [&] {
      SD::bwd_reduce_bc<T>(p.ws_bc, bc_rows, wpg, N, o.dB.data(), o.dC.data());
    });
  for (int64_t col = 0; col < W; ++col) {  // sum_params: fixed order over the partial rows
    float acc = 0.0f;
    for (int64_t r = 0; r < rows; ++r) acc += ws_par[r * W + col];
    if (col < dim * N) o.dA[col] += acc;
    else if (col < dim * N + dim) { if (c.D) o.dD[col - dim * N] += acc; }
    else if (c.bias) o.ddb[col - dim * N - dim] += acc;
  }
  return o;
}

template <int N>
int run(const Case& c, uint64_t seed, bool check_paths_equal) {
  std::mt19937_64 rng(seed);
  auto uni = [&](size_t n, double lo, double hi) {
    std::uniform_real_distribution<double> d(lo, hi);
    std::vector<double> v(n);
    for (auto& x : v) x = double(float(d(rng)));
    return v;
  };
  const int64_t batch = static_cast<int64_t>(c.lens.size());
  std::vector<int64_t> cu(batch + 1, 0);
  for (int64_t b = 0; b < batch; ++b) cu[b + 1] = cu[b] + c.lens[b];
  const int64_t L = cu[batch], dim = c.dim, G = c.G;
  // Without softplus Δ = delta + bias itself: kept positive (a negative Δ grows the state).
  auto u = uni(L * dim, -1, 1), delta = c.softplus ? uni(L * dim, -3, 0.5) : uni(L * dim, 0.05, 1), A = uni(dim * N, -3, -0.3), B = uni(L * G * N, -1, 1),
       C = uni(L * G * N, -1, 1), Dv = uni(dim, -1, 1), bias = uni(dim, -1, 0.5), z = uni(L * dim, -2, 2),
       init = uni(batch * dim * N, -1, 1), dout = uni(L * dim, -1, 1), dfin = uni(batch * dim * N, -1, 1),
       dA0 = uni(dim * N, -.1, .1), dD0 = uni(dim, -.1, .1), db0 = uni(dim, -.1, .1);
  // Reference.
  const Shape td{L, dim}, bs{L, G, N}, st{batch, dim, N}, an{dim, N}, dd{dim};
  SelectiveScanInputs<double> ri;
  ri.u = View<const double>(u.data(), td);
  ri.delta = View<const double>(delta.data(), td);
  ri.A = View<const double>(A.data(), an);
  ri.B = View<const double>(B.data(), bs);
  ri.C = View<const double>(C.data(), bs);
  if (c.D) ri.D = View<const double>(Dv.data(), dd);
  if (c.bias) ri.delta_bias = View<const double>(bias.data(), dd);
  if (c.z) ri.z = View<const double>(z.data(), td);
  if (c.init) ri.initial_state = View<const double>(init.data(), st);
  ri.cu_seqlens = View<const int64_t>(cu.data(), Shape{batch + 1});
  ri.delta_softplus = c.softplus;
  ri.chunk = c.chunk;
  std::vector<double> rout(L * dim), rfin(batch * dim * N);
  SelectiveScanFwdArgs<double> rf{ri, View<double>(rout.data(), td), View<double>(rfin.data(), st), {}};
  reference::selective_scan_fwd(rf);
  std::vector<double> rdu(L * dim), rddelta(L * dim), rdz(L * dim), rdB(L * G * N), rdC(L * G * N),
      rdinit(batch * dim * N), rdA = dA0, rdD = dD0, rdb = db0;
  SelectiveScanBwdArgs<double> rb;
  rb.in = ri;
  rb.dout = View<const double>(dout.data(), td);
  if (c.dfinal) rb.dfinal_state = View<const double>(dfin.data(), st);
  rb.du = View<double>(rdu.data(), td);
  rb.ddelta = View<double>(rddelta.data(), td);
  rb.dB = View<double>(rdB.data(), bs);
  rb.dC = View<double>(rdC.data(), bs);
  if (c.z) rb.dz = View<double>(rdz.data(), td);
  if (c.init && c.dinit) rb.dinitial_state = View<double>(rdinit.data(), st);
  rb.dA = View<double>(rdA.data(), an);
  if (c.D) rb.dD = View<double>(rdD.data(), dd);
  if (c.bias) rb.ddelta_bias = View<double>(rdb.data(), dd);
  reference::selective_scan_bwd(rb);
  auto f = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  const auto fu = f(u), fdelta = f(delta), fA = f(A), fB = f(B), fC = f(C), fD = f(Dv), fbias = f(bias), fz = f(z),
             finit = f(init), fdout = f(dout), fdfin = f(dfin), fdA0 = f(dA0), fdD0 = f(dD0), fdb0 = f(db0);
  int fails = 0;
  // Paths: sequential; chunked over single chunks; chunked with passes over 3 chunks (grouped_params).
  Out res[3];
  const char* names[3] = {"sequential", "chunked", "chunked x3"};
  for (int path = 0; path < 3; ++path) {
    const bool seq = path == 0;
    const Out o = run_emu<N>(c, seq, path == 2 ? 3 : 1, cu, fu, fdelta, fA, fB, fC, fD, fbias, fz, finit, fdout, fdfin, fdA0, fdD0, fdb0);
    // Tolerances (fp32 storage and arithmetic, MUFU-free emulation): 2e-5 on activations and
    // states (relative 2-norm), 5e-5 on ddelta (a sum of many products), 1e-4 on the parameter
    // gradients (sums over every token).
    struct Chk { const char* name; const std::vector<float>& g; const std::vector<double>& w; double tol; bool on; };
    const Chk chks[] = {
        {"out", o.out, rout, 2e-5, true},           {"final_state", o.fin, rfin, 2e-5, true},
        {"du", o.du, rdu, 2e-5, true},              {"ddelta", o.ddelta, rddelta, 5e-5, true},
        {"dB", o.dB, rdB, 2e-5, true},              {"dC", o.dC, rdC, 2e-5, true},
        {"dz", o.dz, rdz, 2e-5, c.z},               {"dinitial_state", o.dinit, rdinit, 2e-5, c.init && c.dinit},
        {"dA", o.dA, rdA, 1e-4, true},              {"dD", o.dD, rdD, 1e-4, c.D},
        {"ddelta_bias", o.ddb, rdb, 1e-4, c.bias},
    };
    for (const Chk& k : chks) {
      if (!k.on) continue;
      const double e = rel(k.g, k.w);
      const bool ok = e <= k.tol;
      if (!ok) ++fails;
      std::printf("  %-10s N %2d chunk %2lld %-14s rel %.2e %s\n", names[path], N,
                  static_cast<long long>(c.chunk), k.name, e, ok ? "ok" : "FAIL");
    }
    res[path] = o;
  }
  if (check_paths_equal) {  // every sequence fits one chunk: both paths do the same per chunk
    const std::pair<const char*, std::pair<const std::vector<float>*, const std::vector<float>*>> eq[] = {
        {"out", {&res[0].out, &res[1].out}}, {"final_state", {&res[0].fin, &res[1].fin}},
        {"du", {&res[0].du, &res[1].du}},    {"ddelta", {&res[0].ddelta, &res[1].ddelta}},
        {"dB", {&res[0].dB, &res[1].dB}},    {"dC", {&res[0].dC, &res[1].dC}},
        {"dz", {&res[0].dz, &res[1].dz}},    {"dinitial_state", {&res[0].dinit, &res[1].dinit}}};
    for (const auto& e : eq) {
      const bool same = std::memcmp(e.second.first->data(), e.second.second->data(), e.second.first->size() * 4) == 0;
      if (!same) ++fails;
      std::printf("  sequential == chunked bit for bit: %-14s %s\n", e.first, same ? "ok" : "FAIL");
    }
    // The grouped passes against the single-chunk ones (the same per-chunk work when every
    // sequence fits one chunk).
    const std::vector<float> Out::*fields[] = {&Out::out, &Out::fin, &Out::du, &Out::ddelta, &Out::dB, &Out::dC,
                                               &Out::dz, &Out::dinit};
    bool same3 = true;
    for (auto fld : fields)
      same3 = same3 && std::memcmp((res[1].*fld).data(), (res[2].*fld).data(), (res[1].*fld).size() * 4) == 0;
    if (!same3) ++fails;
    std::printf("  chunked == chunked x3 bit for bit: %s\n", same3 ? "ok" : "FAIL");
  }
  return fails;
}

int main(int argc, char** argv) {
  const bool big = argc > 1 && std::string(argv[1]) == "big";
  int fails = 0;
  // lens: an empty sequence, sequences longer than a chunk and than the 64-token staging tile;
  // dim 80 with 2 groups: 40 channels per group (24 inactive lanes per block); dim 72, 1 group:
  // two channel blocks, the second with 8 active lanes.
  std::printf("scan_emu: d_state 16, chunk 16, all options, 2 groups\n");
  fails += run<16>({{70, 0, 13, 33}, 80, 16, 2, 16, true, true, true, true, true, true, true}, 11, false);
  std::printf("scan_emu: d_state 16, chunk 8, no z / D / bias / initial state, no softplus\n");
  fails += run<16>({{9, 17, 3}, 72, 16, 1, 8, false, false, false, false, true, false, false}, 12, false);
  std::printf("scan_emu: d_state 16, chunk 16, every sequence within one chunk (paths bit-identical)\n");
  fails += run<16>({{12, 16, 1, 0, 7}, 64, 16, 1, 16, true, true, true, true, true, true, true}, 13, true);
  std::printf("scan_emu: d_state 32, chunk 12 (segments of 4 + 8), ngroups 1\n");
  fails += run<32>({{25, 4}, 64, 32, 1, 12, true, true, true, true, false, true, true}, 14, false);
  std::printf("scan_emu: d_state 16, chunk 16, the tiled backward with 4 lanes per channel\n");
  SD::tiled_lanes_override() = 4;
  fails += run<16>({{40, 0, 13}, 80, 16, 2, 16, true, true, true, true, true, true, true}, 17, false);
  SD::tiled_lanes_override() = 0;
  std::printf("scan_emu: d_state 12 (tiled forward, per-channel backward), chunk 8\n");
  fails += run<12>({{11, 20}, 64, 12, 1, 8, true, true, true, true, true, true, true}, 16, false);
  if (big) {
    std::printf("scan_emu: d_state 16, chunk 16, 2 sequences of 150 tokens, 3 channel blocks\n");
    fails += run<16>({{150, 141}, 160, 16, 1, 16, true, true, true, true, true, true, true}, 15, false);
  }
  std::printf(fails ? "scan_emu: %d FAILED\n" : "scan_emu: all passed\n", fails);
  return fails ? 1 : 0;
}
