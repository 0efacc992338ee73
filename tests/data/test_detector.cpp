// Tests of data/detector.hpp: lookup, local <-> global round trips, shapes, the candidate grid,
// and the built-in TrackML layout against the real detectors.csv (shared/data/trackml).
#include <catch2/catch.hpp>

#include <cmath>
#include <string>

#include "mambatrack/data/detector.hpp"
#include "mambatrack/data/trackml_io.hpp"
#include "data_test_util.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::data;

namespace {

std::string real_detectors_path() { return test::shared_dir() + "/data/trackml/detectors.csv"; }

}  // namespace

TEST_CASE("detector: built-in layout has the TrackML module and layer counts", "[data][cpu]") {
  const Detector det = Detector::trackml_builtin();
  CHECK(det.size() == 18728);
  CHECK(det.layers().size() == 48);
  int barrels = 0;
  for (const auto& L : det.layers()) barrels += L.barrel ? 1 : 0;
  CHECK(barrels == 10);
  // Spot values from trackml.md section 2.
  CHECK(det.layer(8, 2).n_modules == 224);
  CHECK(det.layer(17, 4).n_modules == 3192);
  CHECK(det.layer(12, 2).n_modules == 170);
  CHECK(det.layer(8, 8).radius == Approx(172).margin(0.5));
  CHECK(det.layer(9, 2).z == Approx(600).margin(1.0));
  CHECK(det.layer(7, 2).z == Approx(-1500).margin(1.0));
}

TEST_CASE("detector: lookup by (volume, layer, module) and unknown triples", "[data][cpu]") {
  const Detector det = Detector::trackml_builtin();
  const uint64_t seed = test::test_seed(11);
  INFO("seed " << seed);
  Philox rng(seed);
  for (int t = 0; t < 2000; ++t) {
    const auto i = static_cast<std::size_t>(rng.below(det.size()));
    const Module& m = det.modules()[i];
    REQUIRE(det.index(m.volume_id, m.layer_id, m.module_id) == static_cast<int64_t>(i));
    REQUIRE(det.layers()[static_cast<std::size_t>(det.layer_of(static_cast<int64_t>(i)))]
                .layer_id == m.layer_id);
  }
  CHECK(det.find(8, 2, 225) == -1);
  CHECK(det.find(10, 2, 1) == -1);
  CHECK(det.find(8, 3, 1) == -1);
  CHECK(det.find(99, 99, 1) == -1);
  try {
    det.module(8, 2, 225);
    FAIL("expected DataError");
  } catch (const DataError& e) {
    const std::string msg = e.what();
    CHECK(msg.find("volume_id 8") != std::string::npos);
    CHECK(msg.find("layer_id 2") != std::string::npos);
    CHECK(msg.find("module_id 225") != std::string::npos);
  }
  CHECK_THROWS_AS(det.layer(8, 3), DataError);
  // Duplicate triples are rejected.
  auto recs = Detector::trackml_builtin_records();
  recs.push_back(recs[5]);
  CHECK_THROWS_AS(Detector(recs), DataError);
  recs.pop_back();
  recs[3].volume_id = 100000;
  CHECK_THROWS_AS(Detector(recs), DataError);
}

TEST_CASE("detector: local -> global -> local round trip and orthonormal frames", "[data][cpu]") {
  const Detector det = Detector::trackml_builtin();
  const uint64_t seed = test::test_seed(12);
  INFO("seed " << seed);
  Philox rng(seed);
  double worst = 0, worst_orth = 0;
  for (int t = 0; t < 5000; ++t) {
    const Module& m = det.modules()[static_cast<std::size_t>(rng.below(det.size()))];
    const double u = rng.uniform(-m.max_hu, m.max_hu), v = rng.uniform(-m.hv, m.hv),
                 w = rng.uniform(-m.thickness, m.thickness);
    const auto g = m.to_global(u, v, w);
    const auto l = m.to_local(g[0], g[1], g[2]);
    worst = std::max({worst, std::abs(l[0] - u), std::abs(l[1] - v), std::abs(l[2] - w)});
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 3; ++b) {
        double d = 0;
        for (int k = 0; k < 3; ++k) d += m.rot[k][a] * m.rot[k][b];
        worst_orth = std::max(worst_orth, std::abs(d - (a == b ? 1.0 : 0.0)));
      }
    // Right-handed frame: u x v = w.
    const auto U = m.axis(0), V = m.axis(1), W = m.axis(2);
    REQUIRE(U[1] * V[2] - U[2] * V[1] == Approx(W[0]).margin(1e-12));
    REQUIRE(U[0] * V[1] - U[1] * V[0] == Approx(W[2]).margin(1e-12));
  }
  CHECK(worst < 1e-9);       // double arithmetic on coordinates < 3000 mm: ~1e-12 expected
  CHECK(worst_orth < 1e-12);  // rotations built from cos/sin: rounding only
}

TEST_CASE("detector: trapezoid shape and contains()", "[data][cpu]") {
  const Detector det = Detector::trackml_builtin();
  const Module& m = det.module(12, 2, 1);
  REQUIRE(m.is_trapezoid());
  CHECK(m.half_u_at(-m.hv) == Approx(m.min_hu));
  CHECK(m.half_u_at(m.hv) == Approx(m.max_hu));
  CHECK(m.half_u_at(0) == Approx(0.5 * (m.min_hu + m.max_hu)));
  CHECK(m.contains(0, 0));
  CHECK(m.contains(m.min_hu - 0.01, -m.hv + 0.01));
  CHECK_FALSE(m.contains(m.min_hu + 0.5, -m.hv + 0.01));  // outside the narrow edge
  CHECK(m.contains(m.max_hu - 0.1, m.hv - 0.01));
  CHECK_FALSE(m.contains(0, m.hv + 0.1));
  CHECK(m.kind() == SensorKind::kShortStrip);
  CHECK(det.module(8, 2, 1).kind() == SensorKind::kPixel);
  CHECK(det.module(17, 2, 1).kind() == SensorKind::kLongStrip);
}

TEST_CASE("detector: candidate grid finds every module containing a point", "[data][cpu]") {
  const Detector det = Detector::trackml_builtin();
  const uint64_t seed = test::test_seed(13);
  INFO("seed " << seed);
  Philox rng(seed);
  std::vector<int32_t> cand;
  std::vector<uint32_t> stamp;
  uint32_t sv = 0;
  std::size_t total = 0;
  for (int t = 0; t < 3000; ++t) {
    const auto i = static_cast<std::size_t>(rng.below(det.size()));
    const Module& m = det.modules()[i];
    const double v = rng.uniform(-m.hv, m.hv);
    const double hu = m.half_u_at(v);
    const auto g = m.to_global(rng.uniform(-hu, hu), v, 0);
    const int32_t li = det.layer_of(static_cast<int64_t>(i));
    const double phi = std::atan2(g[1], g[0]);
    const double q = det.layers()[static_cast<std::size_t>(li)].barrel ? g[2]
                                                                      : std::hypot(g[0], g[1]);
    cand.clear();
    det.candidates(li, phi, phi, q, q, cand, stamp, sv);
    total += cand.size();
    REQUIRE(std::find(cand.begin(), cand.end(), static_cast<int32_t>(i)) != cand.end());
  }
  // The grid must prune: on average far fewer candidates than the ~390 modules per layer.
  CHECK(static_cast<double>(total) / 3000 < 12);
}

TEST_CASE("detector: built-in layout matches the real detectors.csv", "[data][cpu]") {
  const std::string path = real_detectors_path();
  if (!test::path_exists(path)) {
    WARN("real detectors.csv not found at " << path << "; skipping");
    return;
  }
  const Detector real(read_detectors(path));
  const Detector ours = Detector::trackml_builtin();
  REQUIRE(real.size() == 18728);
  REQUIRE(real.layers().size() == ours.layers().size());
  for (std::size_t li = 0; li < real.layers().size(); ++li) {
    const LayerInfo& a = real.layers()[li];
    const LayerInfo& b = ours.layers()[li];
    INFO("layer (" << a.volume_id << ", " << a.layer_id << ")");
    REQUIRE(b.volume_id == a.volume_id);
    REQUIRE(b.layer_id == a.layer_id);
    CHECK(b.n_modules == a.n_modules);
    CHECK(b.barrel == a.barrel);
    // Layer positions: the built-in table is exact up to the file's 6-digit rounding.
    CHECK(b.radius == Approx(a.radius).margin(0.05));
    CHECK(b.z == Approx(a.z).margin(0.05));
    CHECK(b.r_min == Approx(a.r_min).margin(0.05));
    CHECK(b.r_max == Approx(a.r_max).margin(0.05));
    CHECK(b.z_min == Approx(a.z_min).margin(0.05));
    CHECK(b.z_max == Approx(a.z_max).margin(0.05));
  }
  // Module by module: every real module has a built-in twin at the same place with the same
  // frame and shape (the file prints ~6 significant digits: 1e-3 mm, 1e-5 on rotations).
  int64_t same_id = 0, worst_count = 0;
  double worst_pos = 0, worst_rot = 0;
  for (std::size_t li = 0; li < real.layers().size(); ++li) {
    const LayerInfo& L = real.layers()[li];
    for (int32_t k = 0; k < L.n_modules; ++k) {
      const Module& a = real.modules()[static_cast<std::size_t>(L.first_module + k)];
      const Module* best = nullptr;
      double best_d = 1e30;
      if (L.barrel) {
        best = &ours.module(a.volume_id, a.layer_id, a.module_id);
        best_d = std::hypot(best->c[0] - a.c[0], best->c[1] - a.c[1], best->c[2] - a.c[2]);
      } else {
        for (int32_t j = 0; j < L.n_modules; ++j) {
          const Module& b = ours.modules()[static_cast<std::size_t>(L.first_module + j)];
          const double d = std::hypot(b.c[0] - a.c[0], b.c[1] - a.c[1], b.c[2] - a.c[2]);
          if (d < best_d) best_d = d, best = &b;
        }
      }
      if (best->module_id == a.module_id) ++same_id;
      worst_pos = std::max(worst_pos, best_d);
      for (int x = 0; x < 3; ++x)
        for (int y = 0; y < 3; ++y)
          worst_rot = std::max(worst_rot, std::abs(best->rot[x][y] - a.rot[x][y]));
      if (best->min_hu != a.min_hu || best->max_hu != a.max_hu || best->hv != a.hv ||
          best->thickness != a.thickness || best->pitch_u != a.pitch_u ||
          best->pitch_v != a.pitch_v)
        ++worst_count;
    }
  }
  INFO("modules with the same module_id as the real file: " << same_id);
  CHECK(worst_pos < 0.01);
  CHECK(worst_rot < 1e-4);
  CHECK(worst_count == 0);
  // Barrel ids (z-major, then phi) are reproduced exactly: 14,000 of the 18,728 modules.
  CHECK(same_id >= 14000);
}

TEST_CASE("detector: built-in layout survives write_detectors / read_detectors", "[data][cpu]") {
  const Detector ours = Detector::trackml_builtin();
  test::ScratchDir dir;
  write_detectors(dir / "detectors.csv", ours.records());
  const Detector back(read_detectors(dir / "detectors.csv"));
  REQUIRE(back.size() == ours.size());
  double worst = 0;
  for (std::size_t i = 0; i < ours.size(); ++i) {
    const Module& a = ours.modules()[i];
    const Module& b = back.modules()[i];
    REQUIRE(a.module_id == b.module_id);
    for (int k = 0; k < 3; ++k) worst = std::max(worst, std::abs(a.c[k] - b.c[k]));
    for (int x = 0; x < 3; ++x)
      for (int y = 0; y < 3; ++y) worst = std::max(worst, std::abs(a.rot[x][y] - b.rot[x][y]));
    REQUIRE(a.min_hu == Approx(b.min_hu));
    REQUIRE(a.pitch_v == Approx(b.pitch_v));
  }
  // Whatever precision the writer uses, 6 significant digits at <= 3000 mm is 5e-3 mm.
  CHECK(worst < 5e-3);
}
