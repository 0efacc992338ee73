// Tests of the TrackML readers and writers (trackml_io.hpp): the real files in shared/data/trackml
// (figures from shared/reference/trackml.md §1-§4), bit-exact write -> read round trips, plain and
// gzip, columns in any order, and the event directory helpers.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "data/data_test_util.hpp"
#include "mambatrack/data/trackml_io.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::data;

namespace {

std::string trackml_dir() { return test::shared_dir() + "/data/trackml"; }

bool have(const std::string& path) {
  if (test::path_exists(path)) return true;
  WARN("skipped: " << path << " is absent");
  return false;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

bool same(const Hits& a, const Hits& b) {
  return same_bits(a.hit_id, b.hit_id) && same_bits(a.x, b.x) && same_bits(a.y, b.y) && same_bits(a.z, b.z) &&
         same_bits(a.volume_id, b.volume_id) && same_bits(a.layer_id, b.layer_id) &&
         same_bits(a.module_id, b.module_id);
}
bool same(const Cells& a, const Cells& b) {
  return same_bits(a.hit_id, b.hit_id) && same_bits(a.ch0, b.ch0) && same_bits(a.ch1, b.ch1) &&
         same_bits(a.value, b.value);
}
bool same(const Particles& a, const Particles& b) {
  return same_bits(a.particle_id, b.particle_id) && same_bits(a.particle_type, b.particle_type) &&
         same_bits(a.vx, b.vx) && same_bits(a.vy, b.vy) && same_bits(a.vz, b.vz) && same_bits(a.px, b.px) &&
         same_bits(a.py, b.py) && same_bits(a.pz, b.pz) && same_bits(a.q, b.q) && same_bits(a.nhits, b.nhits);
}
bool same(const Truth& a, const Truth& b) {
  return same_bits(a.hit_id, b.hit_id) && same_bits(a.particle_id, b.particle_id) && same_bits(a.tx, b.tx) &&
         same_bits(a.ty, b.ty) && same_bits(a.tz, b.tz) && same_bits(a.tpx, b.tpx) && same_bits(a.tpy, b.tpy) &&
         same_bits(a.tpz, b.tpz) && same_bits(a.weight, b.weight);
}
bool same(const std::vector<ModuleRecord>& a, const std::vector<ModuleRecord>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const ModuleRecord &x = a[i], &y = b[i];
    if (x.volume_id != y.volume_id || x.layer_id != y.layer_id || x.module_id != y.module_id) return false;
    const double xs[] = {x.cx, x.cy, x.cz, x.thickness, x.min_hu, x.max_hu, x.hv, x.pitch_u, x.pitch_v};
    const double ys[] = {y.cx, y.cy, y.cz, y.thickness, y.min_hu, y.max_hu, y.hv, y.pitch_u, y.pitch_v};
    if (std::memcmp(xs, ys, sizeof(xs)) != 0 || std::memcmp(x.rot, y.rot, sizeof(x.rot)) != 0) return false;
  }
  return true;
}

// Finite floats with random bit patterns (every exponent, subnormals, both signs): the hardest
// case for shortest round-trip formatting.
std::vector<float> random_float_bits(std::size_t n, Philox& rng) {
  std::vector<float> v(n);
  for (auto& x : v) {
    do {
      const uint32_t bits = rng.next_u32();
      std::memcpy(&x, &bits, 4);
    } while (!std::isfinite(x));
  }
  return v;
}
std::vector<int32_t> random_ints(std::size_t n, Philox& rng, int32_t lo, int32_t hi) {
  std::vector<int32_t> v(n);
  const uint64_t span = static_cast<uint64_t>(int64_t(hi) - lo + 1);
  for (auto& x : v) x = static_cast<int32_t>(int64_t(lo) + static_cast<int64_t>(rng.next_u64() % span));
  return v;
}

Event random_event(uint64_t seed, std::size_t n_hits, bool typed) {
  Philox rng(seed, 11);
  Event ev;
  ev.event_id = 1000 + static_cast<int64_t>(seed % 1000);
  Hits& h = ev.hits;
  h.hit_id = random_ints(n_hits, rng, 0, 2147483647);
  h.x = random_float_bits(n_hits, rng);
  h.y = random_float_bits(n_hits, rng);
  h.z = random_float_bits(n_hits, rng);
  h.volume_id = random_ints(n_hits, rng, 0, 2147483647);
  h.layer_id = random_ints(n_hits, rng, 0, 100);
  h.module_id = random_ints(n_hits, rng, 0, 3192);
  Cells& c = ev.cells;
  c.hit_id = random_ints(2 * n_hits, rng, 1, 1 << 20);
  c.ch0 = random_ints(2 * n_hits, rng, 0, 1 << 16);
  c.ch1 = random_ints(2 * n_hits, rng, 0, 1 << 16);
  c.value = random_float_bits(2 * n_hits, rng);
  Particles& p = ev.particles;
  const std::size_t np = n_hits / 3 + 1;
  for (std::size_t i = 0; i < np; ++i) p.particle_id.push_back(rng.next_u64());
  p.particle_id[0] = ~uint64_t{0};
  if (typed) p.particle_type = random_ints(np, rng, -2147483647 - 1, 2147483647);
  for (auto* v : {&p.vx, &p.vy, &p.vz, &p.px, &p.py, &p.pz}) *v = random_float_bits(np, rng);
  p.q = random_ints(np, rng, -2, 2);
  p.nhits = random_ints(np, rng, 0, 30);
  Truth& t = ev.truth;
  t.hit_id = h.hit_id;
  for (std::size_t i = 0; i < n_hits; ++i) t.particle_id.push_back(rng.next_u64());
  for (auto* v : {&t.tx, &t.ty, &t.tz, &t.tpx, &t.tpy, &t.tpz}) *v = random_float_bits(n_hits, rng);
  t.weight = random_float_bits(n_hits, rng);
  for (auto& w : t.weight) w = std::fabs(w);
  return ev;
}

}  // namespace

TEST_CASE("trackml: the real detectors.csv", "[data][cpu]") {
  const std::string path = trackml_dir() + "/detectors.csv";
  if (!have(path)) return;
  const auto modules = read_detectors(path);
  REQUIRE(modules.size() == 18728);
  // First row: 7,2,1,-65.7965,-5.1783,-1502.5,0.0784591,-0.996917,0,-0.996917,-0.0784591,0,0,0,-1,
  //            0.15,8.4,8.4,36,0.05,0.05625 (trackml.md §1.5); values are the doubles nearest the text.
  const ModuleRecord& m = modules[0];
  CHECK(m.volume_id == 7);
  CHECK(m.layer_id == 2);
  CHECK(m.module_id == 1);
  CHECK(m.cx == -65.7965);
  CHECK(m.cy == -5.1783);
  CHECK(m.cz == -1502.5);
  CHECK(m.rot[0][0] == 0.0784591);   // rot_xu
  CHECK(m.rot[0][1] == -0.996917);   // rot_xv
  CHECK(m.rot[0][2] == 0.0);         // rot_xw
  CHECK(m.rot[1][0] == -0.996917);   // rot_yu
  CHECK(m.rot[1][1] == -0.0784591);  // rot_yv
  CHECK(m.rot[2][2] == -1.0);        // rot_zw
  CHECK(m.thickness == 0.15);
  CHECK(m.min_hu == 8.4);
  CHECK(m.max_hu == 8.4);
  CHECK(m.hv == 36.0);
  CHECK(m.pitch_u == 0.05);
  CHECK(m.pitch_v == 0.05625);
  // Modules per volume (trackml.md §2): 756+2492+756+1020+5796+1020+588+5712+588.
  std::map<int, int> per_volume;
  for (const auto& r : modules) ++per_volume[r.volume_id];
  const std::map<int, int> want = {{7, 756},   {8, 2492},  {9, 756},   {12, 1020}, {13, 5796},
                                   {14, 1020}, {16, 588},  {17, 5712}, {18, 588}};
  CHECK(per_volume == want);
  // Sorted by (volume, layer, module) with module ids 1..N per layer; max module id 3192.
  int max_module = 0;
  for (std::size_t i = 1; i < modules.size(); ++i) {
    const auto &a = modules[i - 1], &b = modules[i];
    const bool same_layer = a.volume_id == b.volume_id && a.layer_id == b.layer_id;
    REQUIRE(b.module_id == (same_layer ? a.module_id + 1 : 1));
    max_module = std::max(max_module, b.module_id);
  }
  CHECK(max_module == 3192);
  // Each rotation is orthonormal (a check that the 9 columns landed in the right slots).
  double worst = 0;
  for (const auto& r : modules)
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 3; ++b) {
        double dot = 0;
        for (int k = 0; k < 3; ++k) dot += r.rot[k][a] * r.rot[k][b];
        worst = std::max(worst, std::fabs(dot - (a == b ? 1.0 : 0.0)));
      }
  CHECK(worst < 1e-5);  // 6 significant digits in the file: ~1e-6 per entry
}

TEST_CASE("trackml: the real event000001000-particles.csv", "[data][cpu]") {
  const std::string path = trackml_dir() + "/event000001000-particles.csv";
  if (!have(path)) return;
  const Particles p = read_particles(path);
  // trackml.md §1.3/§4: 12,263 particles, 1,698 with nhits = 0, 9,292 with nhits >= 4,
  // sum nhits = 103,305, charges 6,789+ / 5,474-, 1,383 with pT > 1 GeV, no particle_type.
  REQUIRE(p.size() == 12263);
  CHECK_FALSE(p.has_particle_type());
  int zero = 0, four = 0, pos = 0, neg = 0, above1 = 0;
  int64_t sum = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    zero += p.nhits[i] == 0;
    four += p.nhits[i] >= 4;
    sum += p.nhits[i];
    pos += p.q[i] > 0;
    neg += p.q[i] < 0;
    above1 += std::hypot(double(p.px[i]), double(p.py[i])) > 1.0;
  }
  CHECK(zero == 1698);
  CHECK(four == 9292);
  CHECK(sum == 103305);
  CHECK(pos == 6789);
  CHECK(neg == 5474);
  CHECK(above1 == 1383);
  // First row: 4503668346847232 = vertex 1, primary 1, generation 0 (trackml.md §1.7).
  CHECK(p.particle_id[0] == 4503668346847232ull);
  const auto bc = decode_particle_id(p.particle_id[0]);
  CHECK(bc.vertex_id == 1);
  CHECK(bc.primary_id == 1);
  CHECK(bc.generation == 0);
  CHECK(p.vx[0] == -0.00928816f);
  CHECK(p.pz[0] == -0.203492f);
  // 159 distinct vertex ids among generation-0 particles; 2,832 secondaries.
  std::set<uint32_t> vertices;
  int secondaries = 0;
  for (uint64_t id : p.particle_id) {
    const auto b = decode_particle_id(id);
    if (b.generation == 0) vertices.insert(b.vertex_id);
    secondaries += b.generation >= 1;
  }
  CHECK(vertices.size() == 159);
  CHECK(secondaries == 2832);
  // The Kaggle floats have <= 6 significant digits, so the shortest round-trip text of each
  // float32 is the original text: writing reproduces the file byte for byte.
  CHECK(format_particles(p) == read_text_file(path));
}

TEST_CASE("trackml: the qallse barrel subsets of event 1000", "[data][cpu]") {
  const std::string dir5 = trackml_dir() + "/qallse_ez-0.5_hpt-1.0";
  const std::string dir10 = trackml_dir() + "/qallse_ez-1.0_hpt-1.0";
  if (!have(dir5 + "/event000001000-truth.csv") || !have(dir10 + "/event000001000-hits.csv")) return;
  // SOURCE.md: ez-0.5 has 27,543 hits (6,518 noise) and 4,093 particles, truth present; ez-1.0 has
  // 55,446 hits and 8,187 particles, no truth.
  const auto events = list_events(dir5);
  REQUIRE(events.size() == 1);
  CHECK(events[0].event_id == 1000);
  CHECK(events[0].prefix == dir5 + "/event000001000");
  CHECK(events[0].hits);
  CHECK(events[0].particles);
  CHECK(events[0].truth);
  CHECK_FALSE(events[0].cells);
  const Event ev = read_event(events[0].prefix);
  CHECK(ev.event_id == 1000);
  REQUIRE(ev.hits.size() == 27543);
  CHECK(ev.cells.size() == 0);
  CHECK(ev.particles.size() == 4093);
  REQUIRE(ev.truth.size() == 27543);
  CHECK(ev.hits.hit_id == ev.truth.hit_id);  // the same hits in the same order
  CHECK(ev.hits.hit_id[0] == 16874);         // first barrel hit of event 1000 (trackml.md §1.1)
  CHECK(ev.hits.x[0] == -32.5544f);
  CHECK(ev.hits.volume_id[0] == 8);
  CHECK(ev.truth.particle_id[0] == 824163129872097282ull);  // > 2^53, exact
  std::set<int> volumes(ev.hits.volume_id.begin(), ev.hits.volume_id.end());
  CHECK(volumes == std::set<int>{8, 13, 17});
  int noise = 0;
  double wsum = 0;
  for (std::size_t i = 0; i < ev.truth.size(); ++i) {
    noise += ev.truth.particle_id[i] == 0;
    wsum += ev.truth.weight[i];
  }
  CHECK(noise == 6518);
  CHECK(std::fabs(wsum - 1.0) < 1e-5);  // weights renormalised to 1; float32 rounding of 27k terms
  // Reading by a file path gives the same event; asking for less leaves parts empty.
  const Event by_path = read_event(dir5 + "/event000001000-hits.csv", false, false, false);
  CHECK(by_path.event_id == 1000);
  CHECK(by_path.hits.hit_id == ev.hits.hit_id);
  CHECK(by_path.truth.size() == 0);
  CHECK(by_path.particles.size() == 0);

  const Event full = read_event(dir10 + "/event000001000");
  CHECK(full.hits.size() == 55446);
  CHECK(full.particles.size() == 8187);
  CHECK(full.truth.size() == 0);
}

TEST_CASE("trackml: write -> read is bit-exact for every file, plain and gzip", "[data][cpu]") {
  const uint64_t seed = test::test_seed(20261124);
  INFO("seed " << seed);
  test::ScratchDir dir;
  for (const bool typed : {false, true}) {
    const Event ev = random_event(seed + typed, 3000, typed);
    for (const char* ext : {".csv", ".csv.gz"}) {
      INFO("typed " << typed << " ext " << ext);
      const std::string pre = dir / (std::string("t") + (typed ? "1" : "0"));
      write_hits(pre + "-hits" + ext, ev.hits);
      write_cells(pre + "-cells" + ext, ev.cells);
      write_particles(pre + "-particles" + ext, ev.particles);
      write_truth(pre + "-truth" + ext, ev.truth);
      CHECK(same(read_hits(pre + "-hits" + ext), ev.hits));
      CHECK(same(read_cells(pre + "-cells" + ext), ev.cells));
      CHECK(same(read_particles(pre + "-particles" + ext), ev.particles));
      CHECK(same(read_truth(pre + "-truth" + ext), ev.truth));
    }
  }
  // The Kaggle layout exactly: header, ',' and LF.
  const Event ev = random_event(seed, 2, true);
  const std::string text = format_particles(ev.particles);
  CHECK(text.rfind("particle_id,particle_type,vx,vy,vz,px,py,pz,q,nhits\n", 0) == 0);
  CHECK(text.find('\r') == std::string::npos);
  CHECK(text.back() == '\n');
  CHECK(format_hits(ev.hits).rfind("hit_id,x,y,z,volume_id,layer_id,module_id\n", 0) == 0);
  CHECK(format_truth(ev.truth).rfind("hit_id,particle_id,tx,ty,tz,tpx,tpy,tpz,weight\n", 0) == 0);
  CHECK(format_cells(ev.cells).rfind("hit_id,ch0,ch1,value\n", 0) == 0);
  // Mismatched column lengths are refused before anything is written.
  Hits bad = ev.hits;
  bad.z.pop_back();
  CHECK_THROWS_AS(write_hits(dir / "bad.csv", bad), DataError);
  CHECK_FALSE(test::path_exists(dir / "bad.csv"));
}

TEST_CASE("trackml: real files round-trip bit-exactly (detectors as float64)", "[data][cpu]") {
  const std::string det = trackml_dir() + "/detectors.csv";
  const std::string dir5 = trackml_dir() + "/qallse_ez-0.5_hpt-1.0";
  if (!have(det) || !have(dir5 + "/event000001000-truth.csv")) return;
  test::ScratchDir dir;
  const auto modules = read_detectors(det);
  write_detectors(dir / "detectors.csv.gz", modules);
  CHECK(same(read_detectors(dir / "detectors.csv.gz"), modules));
  // The Kaggle text has <= 6 significant digits, which float64 shortest formatting reproduces.
  CHECK(format_detectors(modules) == read_text_file(det));

  const Event ev = read_event(dir5 + "/event000001000");
  for (const bool gz : {false, true}) {
    write_event(dir / "out", ev, gz);
    const auto events = list_events(dir / "out");
    REQUIRE(events.size() == 1);
    CHECK(events[0].event_id == 1000);
    CHECK_FALSE(events[0].cells);  // empty parts are not written
    const Event back = read_event(events[0].prefix);
    CHECK(same(back.hits, ev.hits));
    CHECK(same(back.particles, ev.particles));
    CHECK(same(back.truth, ev.truth));
  }
}

TEST_CASE("trackml: columns in any order, particle_type optional, extra columns ignored", "[data][cpu]") {
  const std::string kaggle =
      "particle_id,vx,vy,vz,px,py,pz,q,nhits\n"
      "4503668346847232,-0.00928816,0.00986098,-0.0778789,-0.0552689,0.323272,-0.203492,-1,8\n";
  const std::string shuffled =
      "nhits,q,pz,py,px,extra,vz,vy,vx,particle_type,particle_id\n"
      "8,-1,-0.203492,0.323272,-0.0552689,hello,-0.0778789,0.00986098,-0.00928816,-211,4503668346847232\n";
  const Particles a = parse_particles_buffer(kaggle.data(), kaggle.size(), "a.csv");
  const Particles b = parse_particles_buffer(shuffled.data(), shuffled.size(), "b.csv");
  CHECK_FALSE(a.has_particle_type());
  REQUIRE(b.has_particle_type());
  CHECK(b.particle_type == std::vector<int32_t>{-211});
  Particles b_untyped = b;
  b_untyped.particle_type.clear();
  CHECK(same(a, b_untyped));
  // Written back, the typed table puts particle_type second (the phase-2 layout).
  CHECK(format_particles(b) ==
        "particle_id,particle_type,vx,vy,vz,px,py,pz,q,nhits\n"
        "4503668346847232,-211,-0.00928816,0.00986098,-0.0778789,-0.0552689,0.323272,-0.203492,-1,8\n");
  const std::string hits = "module_id,z,y,x,layer_id,volume_id,hit_id\n1,-1502.5,-7.1637,-64.4099,2,7,1\n";
  const Hits h = parse_hits_buffer(hits.data(), hits.size(), "h.csv");
  CHECK(format_hits(h) == "hit_id,x,y,z,volume_id,layer_id,module_id\n1,-64.4099,-7.1637,-1502.5,7,2,1\n");
}

TEST_CASE("trackml: list_events and read_event on a directory", "[data][cpu]") {
  const uint64_t seed = test::test_seed(77);
  INFO("seed " << seed);
  test::ScratchDir dir;
  Event a = random_event(seed, 50, false);
  a.event_id = 1099;
  Event b = random_event(seed + 1, 40, true);
  b.event_id = 1000;
  b.truth = Truth{};  // a test event: no truth
  b.cells = Cells{};
  write_event(dir.path(), a, true);
  write_event(dir.path(), b, false);
  test::write_bytes(dir / "event000001000-meta.json", "{}");    // not a CSV: ignored
  test::write_bytes(dir / "event00000100-hits.csv", "x");       // 8 digits: ignored
  test::write_bytes(dir / "sample_submission.csv", "event_id"); // ignored
  const auto events = list_events(dir.path());
  REQUIRE(events.size() == 2);
  CHECK(events[0].event_id == 1000);  // sorted by id
  CHECK(events[1].event_id == 1099);
  CHECK(events[0].prefix == dir / "event000001000");
  CHECK((events[0].hits && events[0].particles && !events[0].cells && !events[0].truth));
  CHECK((events[1].hits && events[1].particles && events[1].cells && events[1].truth));
  const Event ra = read_event(events[1].prefix);
  CHECK(ra.event_id == 1099);
  CHECK(same(ra.hits, a.hits));
  CHECK(same(ra.cells, a.cells));
  CHECK(same(ra.particles, a.particles));
  CHECK(same(ra.truth, a.truth));
  const Event rb = read_event(dir / "event000001000-particles.csv");
  CHECK(same(rb.particles, b.particles));
  CHECK(rb.truth.size() == 0);
  CHECK_THROWS_AS(read_event(dir / "event000000007"), DataError);  // no hits file
  CHECK_THROWS_AS(read_event(dir / "run7"), DataError);            // not an event prefix
  CHECK_THROWS_AS(list_events(dir / "missing"), DataError);
  Event big = a;
  big.event_id = 1000000000;  // 10 digits
  CHECK_THROWS_AS(write_event(dir.path(), big), DataError);
}
