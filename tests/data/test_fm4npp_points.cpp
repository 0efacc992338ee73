// FM4NPP point pipeline: normalization, r-sort, k next-nearest neighbours (k-d tree == brute
// force), voxel raster scan (against the seed's itertools table), NeRF encoding, and the whole
// pipeline against a numpy re-run of the seed (tests/fixtures/npz/make_fm4npp_reference.py).
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <map>

#include "mambatrack/data/batching.hpp"
#include "mambatrack/data/fm4npp_points.hpp"
#include "mambatrack/data/npz.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::data;

namespace {
const double kPi = 3.14159265358979323846;

// Random (η_n, φ_n, r_n)-like points, sorted by the third coordinate; `clusters` > 0 puts them in
// tight blobs (many near-equal distances), `grid` snaps them to a coarse grid (exact ties).
std::vector<float> random_points(int64_t n, uint64_t seed, int clusters = 0, bool grid = false) {
  Philox rng(seed, 11);
  std::vector<float> c;
  for (int i = 0; i < 3 * clusters; ++i) c.push_back(static_cast<float>(rng.uniform()));
  std::vector<std::array<float, 3>> pts(static_cast<std::size_t>(n));
  for (auto& p : pts)
    for (int d = 0; d < 3; ++d) {
      double v = clusters > 0 ? c[3 * rng.below(clusters) + d] + 0.01 * rng.normal() : rng.uniform();
      if (grid) v = std::floor(v * 8) / 8;
      p[d] = static_cast<float>(v);
    }
  std::stable_sort(pts.begin(), pts.end(), [](const auto& a, const auto& b) { return a[2] < b[2]; });
  std::vector<float> xyz;
  for (const auto& p : pts) xyz.insert(xyz.end(), p.begin(), p.end());
  return xyz;
}

PointSet from_xyz(const std::vector<float>& xyz) {
  PointSet p;
  for (std::size_t i = 0; i < xyz.size() / 3; ++i) {
    p.features.insert(p.features.end(), {0.5f, xyz[3 * i], xyz[3 * i + 1], xyz[3 * i + 2]});
    p.index.push_back(static_cast<int64_t>(i));
  }
  return p;
}

std::string reference_path() { return test::fixtures_dir() + "/npz/fm4npp_reference.npz"; }
}  // namespace

TEST_CASE("fm4npp: normalization of (E, x, y, z) with the TPC constants", "[data][fm4npp]") {
  const auto f = normalize_point(253.0982 + 268.7093, 30.0, 0.0, 40.0, PointNormalization::tpc());
  CHECK(f[0] == Approx(1.0).epsilon(1e-6));                       // (E - 253.0982) / 268.7093
  CHECK(f[1] == Approx((std::atanh(0.8) + 2) / 4).epsilon(1e-6)); // η = artanh(z / |x|)
  CHECK(f[2] == Approx(0.5).epsilon(1e-6));                       // φ = 0
  CHECK(f[3] == Approx((30.0 - 31.371997833251953) / (75.38493347167969 - 31.371997833251953)).epsilon(1e-6));
  const auto g = normalize_point(0.0, 0.0, -50.0, 0.0, PointNormalization::tpc());
  CHECK(g[1] == Approx(0.5).epsilon(1e-6));
  CHECK(g[2] == Approx(0.25).epsilon(1e-6));  // φ = -π/2
  const float exyz[8] = {1.f, 40.f, 0.f, 0.f, 2.f, 0.f, 60.f, 0.f};
  const PointSet p = points_from_exyz(exyz, 2);
  CHECK(p.size() == 2);
  CHECK(p.index == std::vector<int64_t>{0, 1});
  CHECK(p.phi(1) == Approx(0.75).epsilon(1e-6));
}

TEST_CASE("fm4npp: TrackML points, E from summed cell charge, volume filter", "[data][fm4npp]") {
  Event ev;
  ev.hits.hit_id = {5, 6, 7};
  ev.hits.x = {32.f, 0.f, -100.f};
  ev.hits.y = {0.f, 72.f, 0.f};
  ev.hits.z = {10.f, -20.f, 1500.f};
  ev.hits.volume_id = {8, 8, 9};
  ev.hits.layer_id = {2, 4, 2};
  ev.hits.module_id = {1, 2, 3};
  TrackmlPointOptions o;
  PointSet p = points_from_event(ev, o);  // no cells: E = 1
  REQUIRE(p.size() == 3);
  for (int64_t i = 0; i < 3; ++i) CHECK(p.e(i) == 1.0f);
  CHECK(p.r(2) == Approx(100.0 / 1030.0).epsilon(1e-6));
  ev.cells.hit_id = {6, 5, 6, 7};
  ev.cells.ch0 = ev.cells.ch1 = {1, 2, 3, 4};
  ev.cells.value = {0.25f, 0.5f, 0.125f, 1.0f};
  p = points_from_event(ev, o);
  CHECK(p.e(0) == 0.5f);
  CHECK(p.e(1) == 0.375f);
  o.volumes = {9};
  p = points_from_event(ev, o);
  CHECK(p.index == std::vector<int64_t>{2});
  ev.cells.hit_id[0] = 99;
  CHECK_THROWS_AS(points_from_event(ev, o), DataError);
}

TEST_CASE("fm4npp: the r-sort is stable and permutes rows with their index", "[data][fm4npp]") {
  PointSet p = from_xyz({0.1f, 0.1f, 0.5f, 0.2f, 0.2f, 0.3f, 0.3f, 0.3f, 0.5f, 0.4f, 0.4f, 0.1f});
  permute_points(p, r_sort_order(p));
  CHECK(p.index == std::vector<int64_t>{3, 1, 0, 2});  // r ties (rows 0 and 2) keep their order
  CHECK(p.eta(3) == 0.3f);
}

TEST_CASE("fm4npp: k-NNN by k-d tree equals brute force on random points", "[data][fm4npp]") {
  const uint64_t seed = test::test_seed(401);
  INFO("seed " << seed);
  struct Case {
    int64_t n, k;
    int clusters;
    bool grid;
  };
  for (const Case c : {Case{2000, 30, 0, false}, Case{1500, 30, 6, false}, Case{600, 5, 0, true},
                       Case{40, 30, 0, false}, Case{1, 3, 0, false}, Case{0, 3, 0, false}, Case{300, 1, 3, true}}) {
    INFO("n " << c.n << " k " << c.k << " clusters " << c.clusters << " grid " << c.grid);
    const auto xyz = random_points(c.n, seed + c.n, c.clusters, c.grid);
    const auto tree = knn_later_indices(xyz, c.k);
    const auto brute = knn_later_indices_brute(xyz, c.k);
    REQUIRE(tree.size() == static_cast<std::size_t>(c.n * c.k));
    CHECK(tree == brute);  // exact: same distances in double, ties to the lower index
    // Properties of the brute force itself: only later rows, nearest first, padding at the end.
    for (int64_t i = 0; i < c.n; ++i) {
      const int64_t avail = std::min<int64_t>(c.k, c.n - 1 - i);
      for (int64_t m = 0; m < c.k; ++m) {
        const int64_t j = brute[i * c.k + m];
        if (m >= avail) {
          REQUIRE(j == -1);
          continue;
        }
        REQUIRE(j > i);
        if (m > 0) {
          const int64_t jp = brute[i * c.k + m - 1];
          REQUIRE(data::detail::dist2(&xyz[3 * i], &xyz[3 * jp]) <= data::detail::dist2(&xyz[3 * i], &xyz[3 * j]));
        }
      }
    }
  }
  std::vector<float> bad = random_points(10, seed);
  bad[4] = NAN;
  CHECK_THROWS_AS(knn_later_indices(bad, 3), DataError);
}

TEST_CASE("fm4npp: k-NNN targets: coordinates nearest first, -100 padding", "[data][fm4npp]") {
  // 1-d along η at r-sorted rows: 0.0, 0.5, 0.45, 0.9 (r increasing).
  const PointSet p = from_xyz({0.0f, 0.f, 0.1f, 0.5f, 0.f, 0.2f, 0.45f, 0.f, 0.3f, 0.9f, 0.f, 0.4f});
  const auto t = knn_later_targets(p, 2);
  REQUIRE(t.size() == 4 * 6);
  // Row 0: neighbours among rows 1..3 by distance: row 1 (|Δ| = √(0.25+0.01)) vs row 2
  // (√(0.2025+0.04)): row 2 first.
  CHECK(std::vector<float>(t.begin(), t.begin() + 6) == std::vector<float>{0.45f, 0.f, 0.3f, 0.5f, 0.f, 0.2f});
  CHECK(std::vector<float>(t.begin() + 12, t.begin() + 18) == std::vector<float>{0.9f, 0.f, 0.4f, -100.f, -100.f, -100.f});
  for (int c = 18; c < 24; ++c) CHECK(t[c] == kKnnPad);
}

TEST_CASE("fm4npp: voxel cells follow the seed's sweep tables, bucketize semantics", "[data][fm4npp]") {
  const std::vector<float> e4{0.f, 0.25f, 0.5f, 0.75f, 1.f};
  CHECK(voxel_bin(0.25f, e4) == 0);  // bucketize(right=False): edges[i-1] < x <= edges[i]
  CHECK(voxel_bin(std::nextafter(0.25f, 1.f), e4) == 1);
  CHECK(voxel_bin(-0.5f, e4) == 0);  // outside the grid: nearest cell
  CHECK(voxel_bin(0.f, e4) == 0);
  CHECK(voxel_bin(1.5f, e4) == 3);
  // A 2 x 3 x 4 (η, φ, r) grid; the expected index replays FM4NPP's orderdict + itertools.product.
  VoxelEdges ed{{0.f, 0.5f, 1.f}, {0.f, 0.3f, 0.6f, 1.f}, {0.f, 0.25f, 0.5f, 0.75f, 1.f}};
  PointSet p;
  std::vector<std::array<int, 3>> cells;
  for (int e = 0; e < 2; ++e)
    for (int f = 0; f < 3; ++f)
      for (int r = 0; r < 4; ++r) {
        p.features.insert(p.features.end(), {0.f, ed.eta[e] + 0.01f, ed.phi[f] + 0.01f, ed.r[r] + 0.01f});
        p.index.push_back(static_cast<int64_t>(cells.size()));
        cells.push_back({e, f, r});
      }
  const int nb[3] = {2, 3, 4};
  struct Table {
    SweepOrder order;
    int dso[3], rev[3];
  };
  for (const Table t : {Table{SweepOrder::kEPR, {2, 1, 0}, {2, 1, 0}}, Table{SweepOrder::kRPE, {0, 1, 2}, {0, 1, 2}},
                        Table{SweepOrder::kREP, {1, 0, 2}, {1, 0, 2}}, Table{SweepOrder::kPER, {2, 0, 1}, {1, 2, 0}}}) {
    std::map<std::array<int, 3>, int64_t> want;
    int64_t i = 0;
    for (int a0 = 0; a0 < nb[t.dso[0]]; ++a0)
      for (int a1 = 0; a1 < nb[t.dso[1]]; ++a1)
        for (int a2 = 0; a2 < nb[t.dso[2]]; ++a2) {
          const int a[3] = {a0, a1, a2};
          want[{a[t.rev[0]], a[t.rev[1]], a[t.rev[2]]}] = i++;
        }
    const auto got = voxel_cell_ids(p, ed, t.order);
    for (std::size_t k = 0; k < cells.size(); ++k) REQUIRE(got[k] == want.at(cells[k]));
  }
  CHECK(parse_sweep_order("REP") == SweepOrder::kREP);
  CHECK_THROWS_AS(parse_sweep_order("hilbert"), ConfigError);
}

TEST_CASE("fm4npp: raster-scan order is a stable sort by cell", "[data][fm4npp]") {
  const uint64_t seed = test::test_seed(402);
  INFO("seed " << seed);
  const PointSet p = from_xyz(random_points(500, seed));
  VoxelEdges ed{{0.f, 0.2f, 0.5f, 0.7f, 1.f}, {0.f, 0.5f, 1.f}, {0.f, 0.3f, 0.6f, 1.f}};
  for (SweepOrder o : {SweepOrder::kEPR, SweepOrder::kRPE, SweepOrder::kREP, SweepOrder::kPER}) {
    const auto cell = voxel_cell_ids(p, ed, o);
    const auto perm = raster_scan_order(p, ed, o);
    std::vector<int64_t> sorted = perm;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < 500; ++i) REQUIRE(sorted[i] == i);
    for (std::size_t k = 1; k < perm.size(); ++k) {
      REQUIRE(cell[perm[k - 1]] <= cell[perm[k]]);
      if (cell[perm[k - 1]] == cell[perm[k]]) REQUIRE(perm[k - 1] < perm[k]);  // stable: r order kept
    }
  }
  // EPR: r is the slowest axis, so the r bins never decrease along the sequence.
  const auto perm = raster_scan_order(p, ed, SweepOrder::kEPR);
  for (std::size_t k = 1; k < perm.size(); ++k) REQUIRE(voxel_bin(p.r(perm[k - 1]), ed.r) <= voxel_bin(p.r(perm[k]), ed.r));
}

TEST_CASE("fm4npp: equal-population edges match numpy's interp", "[data][fm4npp]") {
  // np.interp(np.linspace(0, 7, 4), np.arange(7), np.sort(x)) and with 3 edges.
  const std::vector<double> x{0.1, 0.4, 0.2, 0.9, 0.5, 0.3, 0.7};
  const auto e3 = equal_population_edges(x, 3);
  const std::vector<double> want3{0.1, 0.33333333333333337, 0.6333333333333333, 0.9};
  for (int i = 0; i < 4; ++i) CHECK(e3[i] == Approx(want3[i]).epsilon(1e-15));
  const auto e2 = equal_population_edges(x, 2);
  CHECK(e2[1] == Approx(0.45).epsilon(1e-15));
}

TEST_CASE("fm4npp: NeRF encoding layout [x, sin(2^f x), cos(2^f x)]", "[data][fm4npp]") {
  const std::vector<float> x{0.5f, 0.25f, 1.0f, -0.3f, 0.7f, 0.1f};
  const auto out = nerf_encode(x, 3);
  REQUIRE(out.size() == 2 * 63);
  CHECK(nerf_dim(3) == 63);
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 3; ++c) {
      const double v = x[3 * r + c];
      CHECK(out[63 * r + c] == x[3 * r + c]);
      for (int f = 0; f < 10; ++f) {
        // float32 output of a double sin/cos: 1e-6 absolute.
        CHECK(out[63 * r + 3 * (1 + 2 * f) + c] == Approx(std::sin(v * std::pow(2.0, f))).margin(1e-6));
        CHECK(out[63 * r + 3 * (2 + 2 * f) + c] == Approx(std::cos(v * std::pow(2.0, f))).margin(1e-6));
      }
    }
  CHECK_THROWS_AS(nerf_encode({1.f, 2.f}, 3), ShapeError);
}

TEST_CASE("fm4npp: the whole pipeline matches a numpy re-run of the seed", "[data][fm4npp]") {
  NpzFile z(reference_path());
  const auto exyz = z.array("exyz").to_vector<float>();
  const int64_t n = static_cast<int64_t>(exyz.size() / 4);
  REQUIRE(n == 300);
  PointSet pts = points_from_exyz(exyz.data(), n);
  // r-sort and normalization.
  permute_points(pts, r_sort_order(pts));
  CHECK(pts.index == z.array("sort_index").to_vector<int64_t>());
  const auto feat = z.array("features").to_vector<float>();
  double worst = 0;
  for (std::size_t i = 0; i < feat.size(); ++i) worst = std::max(worst, std::abs(double(feat[i]) - pts.features[i]));
  CHECK(worst < 2e-6);  // numpy float32 arithmetic vs double rounded once: a few float32 ulps
  // k-NNN targets. Compare on the reference's own features so only the search is tested.
  PointSet ref = pts;
  ref.features = feat;
  const auto knn = knn_later_targets(ref, 30);
  CHECK(knn == z.array("knn").to_vector<float>());
  // Voxel edges from the sample events (r split at 40 and 57 cm).
  const auto sample = z.array("sample_exyz").to_vector<float>();
  const auto sizes = z.array("sample_sizes").to_vector<int64_t>();
  std::vector<PointSet> events;
  int64_t off = 0;
  for (int64_t s : sizes) {
    events.push_back(points_from_exyz(sample.data() + 4 * off, s));
    off += s;
  }
  const PointNormalization tpc = PointNormalization::tpc();
  const VoxelEdges edges = compute_voxel_edges(events, 8, 8, 6, {tpc.normalize_r(40.0), tpc.normalize_r(57.0)});
  const auto check_edges = [](const std::vector<float>& got, const std::vector<double>& want) {
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) CHECK(got[i] == Approx(want[i]).margin(1e-6));  // float32 data
  };
  check_edges(edges.eta, z.array("edges_eta").to_vector<double>());
  check_edges(edges.phi, z.array("edges_phi").to_vector<double>());
  check_edges(edges.r, z.array("edges_r").to_vector<double>());
  // Serialization with the reference edges, every sweep order.
  const VoxelEdges ref_edges{
      [&] { auto v = z.array("edges_eta").to_vector<double>(); return std::vector<float>(v.begin(), v.end()); }(),
      [&] { auto v = z.array("edges_phi").to_vector<double>(); return std::vector<float>(v.begin(), v.end()); }(),
      [&] { auto v = z.array("edges_r").to_vector<double>(); return std::vector<float>(v.begin(), v.end()); }()};
  for (const char* o : {"EPR", "RPE", "REP", "PER"}) {
    INFO("order " << o);
    CHECK(raster_scan_order(ref, ref_edges, parse_sweep_order(o)) == z.array(std::string("order_") + o).to_vector<int64_t>());
  }
  // NeRF of the first 10 rows.
  const auto coords = point_coordinates(ref);
  const auto enc = nerf_encode(std::vector<float>(coords.begin(), coords.begin() + 30), 3);
  const auto want = z.array("nerf").to_vector<float>();
  REQUIRE(enc.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) CHECK(enc[i] == Approx(want[i]).margin(2e-4));  // float32 sin of 512x in numpy
  // The driver: rows follow the EPR order, k-NNN rows travel with their points.
  Fm4nppOptions opt;
  opt.edges = ref_edges;
  PointSet again = points_from_exyz(exyz.data(), n);
  const Fm4nppEvent ev = prepare_fm4npp_event(again, opt);
  const auto order = z.array("order_EPR").to_vector<int64_t>();
  const auto sort_index = z.array("sort_index").to_vector<int64_t>();
  const auto ref_knn = z.array("knn").to_vector<float>();
  REQUIRE(ev.size() == n);
  for (int64_t k = 0; k < n; ++k) {
    REQUIRE(ev.points.index[k] == sort_index[order[k]]);
    for (int c = 0; c < 90; ++c) REQUIRE(ev.knn[k * 90 + c] == Approx(ref_knn[order[k] * 90 + c]).margin(2e-6));
  }
}

TEST_CASE("fm4npp: events packed into a batch, and padded with -100 like the seed's collator", "[data][fm4npp]") {
  const uint64_t seed = test::test_seed(403);
  INFO("seed " << seed);
  Fm4nppOptions opt;
  opt.k = 4;
  opt.voxelize = false;
  std::vector<Fm4nppEvent> evs;
  for (int64_t n : {7, 3, 5}) {
    std::vector<float> exyz;
    for (float v : test::random_uniform<float>(static_cast<std::size_t>(4 * n), seed + n, 20.0, 70.0)) exyz.push_back(v);
    evs.push_back(prepare_fm4npp_event(points_from_exyz(exyz.data(), n), opt));
  }
  const Fm4nppBatch b = pack_fm4npp_batch({&evs[0], &evs[1], &evs[2]});
  CHECK(b.cu_seqlens == std::vector<int64_t>{0, 7, 10, 15});
  CHECK(b.points.size() == 15 * 4);
  CHECK(b.knn.size() == 15 * 12);
  const auto pts = packed_to_padded(b.points, b.cu_seqlens, kKnnPad, 0, 4);
  const auto knn = packed_to_padded(b.knn, b.cu_seqlens, kKnnPad, 0, 12);
  REQUIRE(pts.size() == 3 * 7 * 4);
  REQUIRE(knn.size() == 3 * 7 * 12);
  for (int e = 0; e < 3; ++e)
    for (int64_t t = 0; t < 7; ++t) {
      for (int c = 0; c < 4; ++c)
        REQUIRE(pts[(e * 7 + t) * 4 + c] == (t < evs[e].size() ? evs[e].points.features[t * 4 + c] : kKnnPad));
      for (int c = 0; c < 12; ++c)
        REQUIRE(knn[(e * 7 + t) * 12 + c] == (t < evs[e].size() ? evs[e].knn[t * 12 + c] : kKnnPad));
    }
  // The last point of each event has no later neighbour.
  for (int c = 0; c < 12; ++c) CHECK(b.knn[(7 - 1) * 12 + c] == kKnnPad);
  CHECK_THROWS_AS(packed_to_padded(b.points, b.cu_seqlens, kKnnPad, 0, 3), ShapeError);
}
