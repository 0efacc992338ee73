// Tests of data/simulator.hpp: determinism, geometry and physics of the generated hits, truth
// weights, options, and a comparison with the real TrackML event 1000 (shared/data/trackml).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <tuple>

#include "mambatrack/data/score.hpp"
#include "mambatrack/data/simulator.hpp"
#include "mambatrack/data/trackml_io.hpp"
#include "data_test_util.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::data;

namespace {

const Detector& builtin() {
  static const Detector det = Detector::trackml_builtin();
  return det;
}

SimulatorOptions small_options(uint64_t seed) {
  SimulatorOptions o;
  o.seed = seed;
  o.n_particles = 400;
  o.n_vertices = 20;
  o.noise_per_module = 0.05;
  return o;
}

double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1))];
}

template <class T>
void require_equal(const std::vector<T>& a, const std::vector<T>& b, const char* what) {
  INFO(what);
  REQUIRE(a.size() == b.size());
  REQUIRE(a == b);
}

void require_same_event(const Event& a, const Event& b) {
  require_equal(a.hits.hit_id, b.hits.hit_id, "hit_id");
  require_equal(a.hits.x, b.hits.x, "x");
  require_equal(a.hits.y, b.hits.y, "y");
  require_equal(a.hits.z, b.hits.z, "z");
  require_equal(a.hits.module_id, b.hits.module_id, "module_id");
  require_equal(a.truth.particle_id, b.truth.particle_id, "truth particle_id");
  require_equal(a.truth.tx, b.truth.tx, "tx");
  require_equal(a.truth.tpz, b.truth.tpz, "tpz");
  require_equal(a.truth.weight, b.truth.weight, "weight");
  require_equal(a.particles.particle_id, b.particles.particle_id, "particle_id");
  require_equal(a.particles.px, b.particles.px, "px");
  require_equal(a.particles.nhits, b.particles.nhits, "nhits");
  require_equal(a.cells.ch0, b.cells.ch0, "ch0");
  require_equal(a.cells.value, b.cells.value, "value");
}

}  // namespace

TEST_CASE("simulator: same seed gives the same event, other seeds differ", "[data][cpu]") {
  const uint64_t seed = test::test_seed(21);
  INFO("seed " << seed);
  const Simulator a(builtin(), small_options(seed));
  const Simulator b(builtin(), small_options(seed));
  const Event e1 = a.generate(7), e2 = b.generate(7);
  REQUIRE(e1.hits.size() > 1000);
  require_same_event(e1, e2);
  const Event e3 = Simulator(builtin(), small_options(seed + 1)).generate(7);
  const Event e4 = a.generate(8);
  CHECK(e3.hits.x != e1.hits.x);
  CHECK(e4.hits.x != e1.hits.x);
  CHECK(e4.particles.px != e1.particles.px);
  CHECK(e1.event_id == 7);
}

TEST_CASE("simulator: hits lie on their modules, residuals match the resolutions",
          "[data][cpu]") {
  const uint64_t seed = test::test_seed(22);
  INFO("seed " << seed);
  SimulatorOptions o = small_options(seed);
  o.n_particles = 1500;
  const Simulator sim(builtin(), o);
  const Event ev = sim.generate(1);
  const Detector& det = builtin();
  double sum2[3][2] = {}, n[3] = {};
  double worst_w = 0, worst_out = 0;
  for (std::size_t i = 0; i < ev.hits.size(); ++i) {
    const Module& m = det.module(ev.hits.volume_id[i], ev.hits.layer_id[i], ev.hits.module_id[i]);
    const auto l = m.to_local(ev.hits.x[i], ev.hits.y[i], ev.hits.z[i]);
    const auto t = m.to_local(ev.truth.tx[i], ev.truth.ty[i], ev.truth.tz[i]);
    worst_w = std::max({worst_w, std::abs(l[2]), std::abs(t[2])});
    // Outside distance of measured and true points (0 when inside).
    for (const auto& p : {l, t}) {
      const double ov = std::max(0.0, std::abs(p[1]) - m.hv);
      const double ou = std::max(0.0, std::abs(p[0]) - m.half_u_at(std::clamp(p[1], -m.hv, m.hv)));
      worst_out = std::max({worst_out, ov, ou});
    }
    if (ev.truth.particle_id[i] == 0) continue;
    const int k = static_cast<int>(m.kind());
    // Residuals away from the module edges (the smearing is clipped at the edges).
    if (std::abs(t[1]) > m.hv - 10 || std::abs(t[0]) > m.half_u_at(t[1]) - 0.5) continue;
    sum2[k][0] += (l[0] - t[0]) * (l[0] - t[0]);
    sum2[k][1] += (l[1] - t[1]) * (l[1] - t[1]);
    n[k] += 1;
  }
  // Coordinates are stored as float (~1e-4 mm at 3 m): the plane w = 0 holds to 2e-3 mm.
  CHECK(worst_w < 2e-3);
  CHECK(worst_out < 2e-3);
  const double want[3][2] = {{o.sigma_u_pixel, o.sigma_v_pixel},
                             {o.sigma_u_short_strip, o.sigma_v_short_strip},
                             {o.sigma_u_long_strip, o.sigma_v_long_strip}};
  for (int k = 0; k < 3; ++k) {
    INFO("sensor kind " << k << " with " << n[k] << " hits");
    REQUIRE(n[k] > 300);
    // RMS of >300 Gaussian residuals: statistical error ~4%; float storage adds ~1e-4 mm.
    CHECK(std::sqrt(sum2[k][0] / n[k]) == Approx(want[k][0]).epsilon(0.12));
    CHECK(std::sqrt(sum2[k][1] / n[k]) == Approx(want[k][1]).epsilon(0.12));
  }
}

TEST_CASE("simulator: truth points lie on the helix of radius pT / (0.3 B)", "[data][cpu]") {
  const uint64_t seed = test::test_seed(23);
  INFO("seed " << seed);
  SimulatorOptions o = small_options(seed);
  o.multiple_scattering = false;
  o.interaction_probability = 0;
  o.noise_per_module = 0;
  o.pt_max = 5;
  const Simulator sim(builtin(), o);
  const Event ev = sim.generate(3);
  std::map<uint64_t, std::size_t> row;
  for (std::size_t i = 0; i < ev.particles.size(); ++i) row[ev.particles.particle_id[i]] = i;
  double worst_rel = 0, worst_tangent = 0, worst_pt = 0;
  int checked = 0;
  for (std::size_t i = 0; i < ev.truth.size(); ++i) {
    const std::size_t p = row.at(ev.truth.particle_id[i]);
    const double px = ev.particles.px[p], py = ev.particles.py[p];
    const double pt = std::hypot(px, py);
    // R [mm] = 1000 pT [GeV] / (0.299792458 B [T]); for q B > 0 the centre is to the right
    // of the momentum (clockwise seen from +z).
    const double R = 1000 * pt / (0.299792458 * o.bz);
    const double side = ev.particles.q[p] * o.bz > 0 ? 1.0 : -1.0;
    const double xc = ev.particles.vx[p] + side * R * py / pt;
    const double yc = ev.particles.vy[p] - side * R * px / pt;
    const double dx = ev.truth.tx[i] - xc, dy = ev.truth.ty[i] - yc;
    worst_rel = std::max(worst_rel, std::abs(std::hypot(dx, dy) - R) / R);
    const double tpt = std::hypot(ev.truth.tpx[i], ev.truth.tpy[i]);
    worst_tangent = std::max(worst_tangent, std::abs(dx * ev.truth.tpx[i] + dy * ev.truth.tpy[i]) /
                                                (tpt * std::hypot(dx, dy)));
    worst_pt = std::max(worst_pt, std::abs(tpt - pt) / pt);
    ++checked;
  }
  REQUIRE(checked > 2000);
  // Float coordinates (~1e-4 mm) and float momenta (~1e-7 relative): 1e-4 relative on R.
  CHECK(worst_rel < 1e-4);
  CHECK(worst_tangent < 1e-4);
  CHECK(worst_pt < 1e-5);
}

TEST_CASE("simulator: TrackML weights, nhits and hit ordering", "[data][cpu]") {
  // Order weights against trackml.md 3.1 (percent, 1 decimal).
  const auto w4 = trackml_order_weights(4), w5 = trackml_order_weights(5),
             w10 = trackml_order_weights(10);
  const double e4[] = {41.1, 21.9, 12.3, 24.7}, e5[] = {35.7, 21.4, 10.7, 10.7, 21.4},
               e10[] = {18.4, 15.1, 11.8, 9.8, 7.1, 5.5, 5.5, 6.3, 9.4, 11.0};
  for (int i = 0; i < 4; ++i) CHECK(100 * w4[i] == Approx(e4[i]).margin(0.06));
  for (int i = 0; i < 5; ++i) CHECK(100 * w5[i] == Approx(e5[i]).margin(0.06));
  for (int i = 0; i < 10; ++i) CHECK(100 * w10[i] == Approx(e10[i]).margin(0.06));
  CHECK(trackml_order_weights(3) == std::vector<double>(3, 0.0));
  const auto w25 = trackml_order_weights(25);
  CHECK(w25[19] > 0);
  CHECK(w25[20] == 0);
  CHECK(trackml_pt_weight(0.04) == 0);
  CHECK(trackml_pt_weight(0.3) == 0.2);
  CHECK(trackml_pt_weight(1.75) == Approx(0.6));
  CHECK(trackml_pt_weight(10) == 1.0);

  const uint64_t seed = test::test_seed(24);
  INFO("seed " << seed);
  SimulatorOptions o = small_options(seed);
  o.n_particles = 2000;
  const Event ev = Simulator(builtin(), o).generate(5);
  double sum = 0;
  std::map<uint64_t, int> rows;
  for (std::size_t i = 0; i < ev.truth.size(); ++i) {
    sum += ev.truth.weight[i];
    if (ev.truth.particle_id[i] == 0) CHECK(ev.truth.weight[i] == 0);
    rows[ev.truth.particle_id[i]]++;
  }
  CHECK(sum == Approx(1.0).margin(1e-4));  // float weights summed in double
  int short_tracks = 0;
  for (std::size_t p = 0; p < ev.particles.size(); ++p) {
    const uint64_t id = ev.particles.particle_id[p];
    const auto it = rows.find(id);
    REQUIRE(ev.particles.nhits[p] == (it == rows.end() ? 0 : it->second));
    const ParticleBarcode bc = decode_particle_id(id);
    REQUIRE(bc.vertex_id >= 1);
    REQUIRE(bc.primary_id >= 1);
    REQUIRE(bc.generation <= 1);
    if (bc.generation == 1) REQUIRE(bc.secondary_id >= 1);
    if (ev.particles.nhits[p] > 0 && ev.particles.nhits[p] < 4) ++short_tracks;
  }
  REQUIRE(short_tracks > 0);
  // Overlapping modules give a particle two hits in one layer (real data has these too).
  std::set<std::tuple<uint64_t, int, int>> seen;
  int double_hits = 0;
  for (std::size_t i = 0; i < ev.truth.size(); ++i)
    if (ev.truth.particle_id[i] != 0 &&
        !seen.insert({ev.truth.particle_id[i], ev.hits.volume_id[i], ev.hits.layer_id[i]}).second)
      ++double_hits;
  CHECK(double_hits > 0.01 * static_cast<double>(ev.truth.size()));
  CHECK(double_hits < 0.3 * static_cast<double>(ev.truth.size()));
  for (std::size_t i = 0; i < ev.truth.size(); ++i) {
    const auto it = std::find(ev.particles.particle_id.begin(), ev.particles.particle_id.end(),
                              ev.truth.particle_id[i]);
    if (it == ev.particles.particle_id.end()) continue;
    const auto p = static_cast<std::size_t>(it - ev.particles.particle_id.begin());
    if (ev.particles.nhits[p] < 4) REQUIRE(ev.truth.weight[i] == 0);
  }
  // hit_id = 1..N in (volume, layer, module) order; truth rows aligned with hits.
  for (std::size_t i = 0; i < ev.hits.size(); ++i) {
    REQUIRE(ev.hits.hit_id[i] == static_cast<int32_t>(i + 1));
    REQUIRE(ev.truth.hit_id[i] == ev.hits.hit_id[i]);
    if (i > 0) {
      const auto a = std::make_tuple(ev.hits.volume_id[i - 1], ev.hits.layer_id[i - 1],
                                     ev.hits.module_id[i - 1]);
      const auto b = std::make_tuple(ev.hits.volume_id[i], ev.hits.layer_id[i],
                                     ev.hits.module_id[i]);
      REQUIRE(a <= b);
    }
  }
  // Cells: at least one per hit, in hit order, channels inside the module.
  REQUIRE(ev.cells.size() >= ev.hits.size());
  std::vector<int> per_hit(ev.hits.size() + 1, 0);
  for (std::size_t c = 0; c < ev.cells.size(); ++c) {
    if (c > 0) REQUIRE(ev.cells.hit_id[c] >= ev.cells.hit_id[c - 1]);
    const auto h = static_cast<std::size_t>(ev.cells.hit_id[c]);
    per_hit[h]++;
    const Module& m = builtin().module(ev.hits.volume_id[h - 1], ev.hits.layer_id[h - 1],
                                       ev.hits.module_id[h - 1]);
    REQUIRE(ev.cells.ch0[c] >= 0);
    REQUIRE(ev.cells.ch0[c] < static_cast<int32_t>(2 * m.max_hu / m.pitch_u) + 1);
    REQUIRE(ev.cells.ch1[c] >= 0);
    REQUIRE(ev.cells.ch1[c] < static_cast<int32_t>(2 * m.hv / m.pitch_v) + 1);
    REQUIRE(ev.cells.value[c] > 0);
  }
  for (std::size_t h = 1; h <= ev.hits.size(); ++h) REQUIRE(per_hit[h] >= 1);
}

TEST_CASE("simulator: options restrict volumes, pT and eta; bad options throw", "[data][cpu]") {
  const uint64_t seed = test::test_seed(25);
  INFO("seed " << seed);
  SimulatorOptions o = small_options(seed);
  o.volumes = {8, 13, 17};
  o.pt_min = 1.0;
  o.pt_max = 2.0;
  o.eta_max = 1.5;
  const Event ev = Simulator(builtin(), o).generate(2);
  REQUIRE(ev.hits.size() > 500);
  for (std::size_t i = 0; i < ev.hits.size(); ++i) {
    const int v = ev.hits.volume_id[i];
    REQUIRE((v == 8 || v == 13 || v == 17));
  }
  int secondaries = 0;
  for (std::size_t p = 0; p < ev.particles.size(); ++p) {
    // The ranges apply to generation-0 particles; secondaries have their own spectrum.
    if (decode_particle_id(ev.particles.particle_id[p]).generation != 0) {
      ++secondaries;
      continue;
    }
    const double pt = std::hypot(ev.particles.px[p], ev.particles.py[p]);
    REQUIRE(pt >= 1.0 * (1 - 1e-6));
    REQUIRE(pt <= 2.0 * (1 + 1e-6));
    REQUIRE(std::abs(std::asinh(ev.particles.pz[p] / pt)) <= 1.5 + 1e-5);
  }
  CHECK(secondaries > 0);
  o.secondaries_mean = 0;
  const Event none = Simulator(builtin(), o).generate(2);
  for (uint64_t id : none.particles.particle_id) REQUIRE(decode_particle_id(id).generation == 0);
  SimulatorOptions bad = small_options(seed);
  bad.volumes = {10};
  try {
    Simulator s(builtin(), bad);
    FAIL("expected ConfigError");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()).find("volume 10") != std::string::npos);
    CHECK(std::string(e.what()).find("8 9 12") != std::string::npos);
  }
  bad = small_options(seed);
  bad.pt_max = bad.pt_min;
  CHECK_THROWS_AS(Simulator(builtin(), bad), ConfigError);
  bad = small_options(seed);
  bad.eta_max = 0;
  CHECK_THROWS_AS(Simulator(builtin(), bad), ConfigError);
  bad = small_options(seed);
  bad.bz = 0;
  CHECK_THROWS_AS(Simulator(builtin(), bad), ConfigError);
  bad = small_options(seed);
  bad.n_vertices = 0;
  CHECK_THROWS_AS(Simulator(builtin(), bad), ConfigError);
}

TEST_CASE("simulator: spectra inverse CDFs are consistent", "[data][cpu]") {
  for (double u : {0.0, 0.03, 0.25, 0.5, 0.77, 0.95, 0.99, 0.995, 0.9999}) {
    INFO("u = " << u);
    CHECK(Simulator::pt_cdf(Simulator::pt_quantile(u)) == Approx(u).margin(1e-9));
  }
  CHECK(Simulator::pt_quantile(0.5) == Approx(0.4441).epsilon(1e-6));
  const double total = Simulator::abs_eta_cdf(4.0);
  for (double f : {0.0, 0.1, 0.5, 0.93}) {
    CHECK(Simulator::abs_eta_cdf(Simulator::abs_eta_quantile(f * total)) ==
          Approx(f * total).margin(1e-6 * total));
  }
}

TEST_CASE("simulator: statistics match the real event 1000", "[data][cpu]") {
  const std::string dir = test::shared_dir() + "/data/trackml/";
  const std::string particles_path = dir + "event000001000-particles.csv";
  const std::string ez1_hits = dir + "qallse_ez-1.0_hpt-1.0/event000001000-hits.csv";
  const std::string ez05 = dir + "qallse_ez-0.5_hpt-1.0/event000001000-";
  if (!test::path_exists(particles_path) || !test::path_exists(ez1_hits) ||
      !test::path_exists(ez05 + "truth.csv")) {
    WARN("real TrackML event 1000 files not found under " << dir << "; skipping");
    return;
  }
  // Spectra and hits per particle compare generation-0 particles; layer and hit totals all.
  const Particles rp = read_particles(particles_path);
  const auto& ids = rp.particle_id;
  const auto &px = rp.px, &py = rp.py, &pz = rp.pz;
  const auto& nh = rp.nhits;
  std::vector<double> real_pt, real_abs_eta;
  double real_hits = 0, real_with = 0, real_ge4 = 0, real_sec = 0, real_sec_hits = 0;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (decode_particle_id(ids[i]).generation != 0) {
      real_sec += 1;
      real_sec_hits += nh[i];
      continue;
    }
    const double pt = std::hypot(static_cast<double>(px[i]), static_cast<double>(py[i]));
    real_pt.push_back(pt);
    real_abs_eta.push_back(std::abs(std::asinh(pz[i] / pt)));
    if (nh[i] > 0) real_hits += nh[i], real_with += 1;
    if (nh[i] >= 4) real_ge4 += 1;
  }
  const double n_real = static_cast<double>(real_pt.size());

  SimulatorOptions o;
  o.seed = test::test_seed(26);
  INFO("seed " << o.seed);
  o.n_particles = static_cast<int64_t>(real_pt.size());  // 9,431 like event 1000
  SimulatorStats stats;
  const Event ev = Simulator(builtin(), o).generate(1000, stats);
  std::vector<double> sim_pt, sim_abs_eta;
  double sim_hits = 0, sim_with = 0, sim_ge4 = 0, sim_sec = 0, sim_sec_hits = 0;
  std::vector<double> sim_nh_hist(25, 0), sim_n;
  for (std::size_t p = 0; p < ev.particles.size(); ++p) {
    if (decode_particle_id(ev.particles.particle_id[p]).generation != 0) {
      sim_sec += 1;
      sim_sec_hits += ev.particles.nhits[p];
      continue;
    }
    sim_n.push_back(ev.particles.nhits[p]);
    const double pt = std::hypot(ev.particles.px[p], ev.particles.py[p]);
    sim_pt.push_back(pt);
    sim_abs_eta.push_back(std::abs(std::asinh(ev.particles.pz[p] / pt)));
    const int n = ev.particles.nhits[p];
    if (n > 0) sim_hits += n, sim_with += 1;
    if (n >= 4) sim_ge4 += 1;
    sim_nh_hist[static_cast<std::size_t>(std::min(n, 24))] += 1;
  }
  const double n_sim = static_cast<double>(sim_pt.size());
  const int mode = static_cast<int>(std::max_element(sim_nh_hist.begin() + 1, sim_nh_hist.end()) -
                                    sim_nh_hist.begin());

  // Barrel hits per layer after removing a particle's second hit in a layer (as the qallse
  // subsets do), noise included; real counts from the ez-1.0 subset (all barrel hits).
  const int layer_keys[10][2] = {{8, 2},  {8, 4},  {8, 6},  {8, 8},  {13, 2},
                                 {13, 4}, {13, 6}, {13, 8}, {17, 2}, {17, 4}};
  auto layer_slot = [&](int v, int l) {
    for (int k = 0; k < 10; ++k)
      if (layer_keys[k][0] == v && layer_keys[k][1] == l) return k;
    return -1;
  };
  std::vector<double> real_layer(10, 0), sim_layer(10, 0);
  {
    const Hits rh = read_hits(ez1_hits);
    for (std::size_t i = 0; i < rh.size(); ++i) {
      const int k = layer_slot(rh.volume_id[i], rh.layer_id[i]);
      if (k >= 0) real_layer[static_cast<std::size_t>(k)] += 1;
    }
    std::set<std::tuple<uint64_t, int, int>> seen;
    for (std::size_t i = 0; i < ev.hits.size(); ++i) {
      const int k = layer_slot(ev.hits.volume_id[i], ev.hits.layer_id[i]);
      if (k < 0) continue;
      const uint64_t p = ev.truth.particle_id[i];
      if (p != 0 && !seen.insert({p, ev.hits.volume_id[i], ev.hits.layer_id[i]}).second) continue;
      sim_layer[static_cast<std::size_t>(k)] += 1;
    }
  }
  // Barrel residual RMS (measured - true) in r*phi and z, real from the ez-0.5 truth.
  auto residuals = [](const Hits& h, const Truth& t, int volume, double& rphi, double& dz) {
    double s1 = 0, s2 = 0, n = 0;
    for (std::size_t i = 0; i < h.size(); ++i) {
      if (h.volume_id[i] != volume || t.particle_id[i] == 0) continue;
      const double r = std::hypot(t.tx[i], t.ty[i]);
      const double d =
          std::remainder(std::atan2(h.y[i], h.x[i]) - std::atan2(t.ty[i], t.tx[i]), 2 * kPi);
      s1 += (r * d) * (r * d);
      s2 += (static_cast<double>(h.z[i]) - t.tz[i]) * (static_cast<double>(h.z[i]) - t.tz[i]);
      n += 1;
    }
    rphi = std::sqrt(s1 / n);
    dz = std::sqrt(s2 / n);
  };
  double real_res[3][2], sim_res[3][2];
  {
    const Hits rh = read_hits(ez05 + "hits.csv");
    const Truth rt = read_truth(ez05 + "truth.csv");
    REQUIRE(rt.hit_id == rh.hit_id);
    const int vols[3] = {8, 13, 17};
    for (int k = 0; k < 3; ++k) {
      residuals(rh, rt, vols[k], real_res[k][0], real_res[k][1]);
      residuals(ev.hits, ev.truth, vols[k], sim_res[k][0], sim_res[k][1]);
    }
  }

  // Mean nhits of 0.15 < pT < 0.2 GeV particles over that of pT > 1 GeV: low-pT tracks curl
  // (R = 250-330 mm at 2 T) and miss the outer layers, so this ratio measures field x radius.
  auto low_high = [](const std::vector<double>& pt, const std::vector<double>& n) {
    double s[2] = {0, 0}, c[2] = {0, 0};
    for (std::size_t i = 0; i < pt.size(); ++i) {
      const int b = pt[i] > 0.15 && pt[i] < 0.2 ? 0 : pt[i] > 1.0 ? 1 : -1;
      if (b >= 0) s[b] += n[i], c[b] += 1;
    }
    return (s[0] / c[0]) / (s[1] / c[1]);
  };
  std::vector<double> real_n;
  for (std::size_t i = 0; i < ids.size(); ++i)
    if (decode_particle_id(ids[i]).generation == 0) real_n.push_back(nh[i]);
  const double real_ratio = low_high(real_pt, real_n), sim_ratio = low_high(sim_pt, sim_n);
  const double real_mean = real_hits / real_with, sim_mean = sim_hits / sim_with;
  std::ostringstream table;
  table << "| quantity | simulated | real event 1000 |\n|---|---|---|\n";
  table << "| particles: generation 0 / secondaries | " << n_sim << " / " << sim_sec << " | "
        << n_real << " / " << real_sec << " |\n";
  table << "| true hits: generation 0 / secondaries | " << sim_hits << " / " << sim_sec_hits
        << " | " << real_hits << " / " << real_sec_hits << " |\n";
  table << "| hits (true + noise) | " << ev.hits.size() << " (" << stats.true_hits << " + "
        << stats.noise_hits << ") | ~120,939 (103,305 + ~17.6k) |\n";
  for (double q : {0.1, 0.5, 0.9, 0.99})
    table << "| pT " << 100 * q << "% quantile [GeV] | " << quantile(sim_pt, q) << " | "
          << quantile(real_pt, q) << " |\n";
  for (int b = 0; b < 4; ++b) {
    double fs = 0, fr = 0;
    for (double e : sim_abs_eta) fs += (e >= b && e < b + 1) ? 1 : 0;
    for (double e : real_abs_eta) fr += (e >= b && e < b + 1) ? 1 : 0;
    table << "| fraction with " << b << " <= abs(eta) < " << b + 1 << " | " << fs / n_sim << " | "
          << fr / n_real << " |\n";
    CHECK(fs / n_sim == Approx(fr / n_real).margin(0.03));  // ~0.005 statistical per bin
  }
  table << "| mean hits per generation-0 particle with hits | " << sim_mean << " | " << real_mean << " |\n";
  table << "| fraction with >= 4 hits | " << sim_ge4 / n_sim << " | " << real_ge4 / n_real
        << " |\n";
  table << "| fraction with 0 hits | " << 1 - sim_with / n_sim << " | " << 1 - real_with / n_real
        << " |\n";
  table << "| mean nhits (0.15<pT<0.2) / mean nhits (pT>1) | " << sim_ratio << " | " << real_ratio
        << " |\n";
  table << "| most common nhits | " << mode << " | 12 |\n";
  for (int k = 0; k < 10; ++k)
    table << "| barrel layer (" << layer_keys[k][0] << "," << layer_keys[k][1]
          << ") hits, one per particle | " << sim_layer[static_cast<std::size_t>(k)] << " | "
          << real_layer[static_cast<std::size_t>(k)] << " |\n";
  const char* names[3] = {"pixel (8)", "short strip (13)", "long strip (17)"};
  for (int k = 0; k < 3; ++k)
    table << "| residual r*phi / z " << names[k] << " [mm] | " << sim_res[k][0] << " / "
          << sim_res[k][1] << " | " << real_res[k][0] << " / " << real_res[k][1] << " |\n";
  INFO(table.str());
  if (std::getenv("MAMBATRACK_PRINT_SIM_TABLE")) WARN(table.str());

  // Spectra: the built-in pT table is the real quantile table, |eta| its histogram.
  CHECK(quantile(sim_pt, 0.5) == Approx(quantile(real_pt, 0.5)).epsilon(0.05));
  CHECK(quantile(sim_pt, 0.9) == Approx(quantile(real_pt, 0.9)).epsilon(0.08));
  // Hits per particle: a wrong field or wrong radii moves these by far more than 10%.
  CHECK(sim_mean == Approx(real_mean).epsilon(0.12));
  CHECK(sim_ge4 / n_sim == Approx(real_ge4 / n_real).margin(0.05));
  // Sensitivity (measured with the simulator): B = 1.6 T gives 0.97, 2.5 T 0.85, 4 T 0.73.
  CHECK(sim_ratio == Approx(real_ratio).margin(0.08));
  CHECK(mode >= 10);
  CHECK(mode <= 13);
  // Per barrel layer (one hit per particle and layer, noise included): 20% each (the innermost
  // layer is ~15% high); the outer/inner ratio checks the radial profile.
  for (int k = 0; k < 10; ++k) {
    INFO("layer (" << layer_keys[k][0] << "," << layer_keys[k][1] << ")");
    CHECK(sim_layer[static_cast<std::size_t>(k)] ==
          Approx(real_layer[static_cast<std::size_t>(k)]).epsilon(0.2));
  }
  CHECK(sim_layer[9] / sim_layer[1] == Approx(real_layer[9] / real_layer[1]).epsilon(0.15));
  // Secondaries: about as many as in the real event, with few hits each.
  CHECK(sim_sec == Approx(real_sec).epsilon(0.3));
  CHECK(sim_sec_hits / sim_sec == Approx(real_sec_hits / real_sec).epsilon(0.3));
  // Total hits near the ~120,939 of the real event.
  CHECK(static_cast<double>(ev.hits.size()) == Approx(120939).epsilon(0.15));
  // Residuals: the built-in resolutions are the real ones (20%: r*phi of tilted modules and
  // edge clipping differ slightly).
  for (int k = 0; k < 3; ++k) {
    INFO(names[k]);
    CHECK(sim_res[k][0] == Approx(real_res[k][0]).epsilon(0.25));
    CHECK(sim_res[k][1] == Approx(real_res[k][1]).epsilon(0.25));
  }
}

TEST_CASE("simulator: events survive write_event / read_event exactly", "[data][cpu]") {
  const uint64_t seed = test::test_seed(27);
  INFO("seed " << seed);
  SimulatorOptions o = small_options(seed);
  o.volumes = {7, 8, 9};
  const Event ev = Simulator(builtin(), o).generate(42);
  REQUIRE(ev.hits.size() > 100);
  for (bool gz : {false, true}) {
    INFO("gzip " << gz);
    test::ScratchDir dir;
    write_event(dir.path(), ev, gz);
    const auto listed = list_events(dir.path());
    REQUIRE(listed.size() == 1);
    REQUIRE(listed[0].event_id == 42);
    const Event back = read_event(listed[0].prefix);
    CHECK(back.event_id == 42);
    require_same_event(ev, back);
    require_equal(back.hits.volume_id, ev.hits.volume_id, "volume_id");
    require_equal(back.hits.layer_id, ev.hits.layer_id, "layer_id");
    require_equal(back.truth.ty, ev.truth.ty, "ty");
    require_equal(back.truth.tpx, ev.truth.tpx, "tpx");
    require_equal(back.particles.vz, ev.particles.vz, "vz");
    require_equal(back.particles.q, ev.particles.q, "q");
    require_equal(back.cells.hit_id, ev.cells.hit_id, "cells hit_id");
    require_equal(back.cells.ch1, ev.cells.ch1, "ch1");
  }
}

TEST_CASE("simulator: truth as submission scores 1, singletons score 0", "[data][cpu]") {
  const uint64_t seed = test::test_seed(28);
  INFO("seed " << seed);
  SimulatorOptions o = small_options(seed);
  o.n_particles = 1000;
  const Event ev = Simulator(builtin(), o).generate(9);
  std::map<uint64_t, int64_t> track_of;
  std::vector<int64_t> tracks(ev.truth.size()), singles(ev.truth.size());
  for (std::size_t i = 0; i < ev.truth.size(); ++i) {
    const auto it = track_of.emplace(ev.truth.particle_id[i], static_cast<int64_t>(track_of.size()));
    tracks[i] = it.first->second;
    singles[i] = static_cast<int64_t>(i);
  }
  // The score's long-double sums make a perfect submission exactly 1 (up to rounding).
  CHECK(trackml_score(ev.truth, ev.truth.hit_id, tracks) == Approx(1.0).margin(1e-9));
  CHECK(trackml_score(ev.truth, ev.truth.hit_id, singles) == 0.0);
  // Splitting every particle into its first and second half scores 0 for particles with an
  // even number of hits and less than 1 overall.
  std::vector<int64_t> halves(tracks);
  std::map<int64_t, int> seen;
  for (std::size_t i = 0; i < halves.size(); ++i)
    if (++seen[tracks[i]] % 2 == 0) halves[i] += 1000000;
  CHECK(trackml_score(ev.truth, ev.truth.hit_id, halves) < 0.9);
}
