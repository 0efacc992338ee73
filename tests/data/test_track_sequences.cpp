// Track sequences from events: a hand-built event checked entry by entry, and the real barrel
// subset of TrackML event 1000 against counts from tests/data/real_event_counts.py.
#include <catch2/catch.hpp>

#include <cmath>

#include "mambatrack/data/track_sequences.hpp"
#include "mambatrack/data/trackml_io.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::data;

namespace {
// Hit rows: (hit_id, x, y, z, volume, layer, module, particle).
struct H {
  int32_t id;
  float x, y, z;
  int32_t v, l, m;
  uint64_t pid;
};

Event make_event(const std::vector<H>& rows) {
  Event ev;
  ev.event_id = 1234;
  for (const auto& r : rows) {
    ev.hits.hit_id.push_back(r.id);
    ev.hits.x.push_back(r.x);
    ev.hits.y.push_back(r.y);
    ev.hits.z.push_back(r.z);
    ev.hits.volume_id.push_back(r.v);
    ev.hits.layer_id.push_back(r.l);
    ev.hits.module_id.push_back(r.m);
  }
  // Truth in a different row order than the hits: the join must go by hit_id.
  for (auto it = rows.rbegin(); it != rows.rend(); ++it) {
    ev.truth.hit_id.push_back(it->id);
    ev.truth.particle_id.push_back(it->pid);
    for (auto* c : {&ev.truth.tx, &ev.truth.ty, &ev.truth.tz, &ev.truth.tpx, &ev.truth.tpy, &ev.truth.tpz, &ev.truth.weight})
      c->push_back(0.25f);
  }
  auto add_particle = [&](uint64_t pid, float vz, float px, float py, float pz, int32_t q) {
    ev.particles.particle_id.push_back(pid);
    ev.particles.vx.push_back(0.f);
    ev.particles.vy.push_back(0.f);
    ev.particles.vz.push_back(vz);
    ev.particles.px.push_back(px);
    ev.particles.py.push_back(py);
    ev.particles.pz.push_back(pz);
    ev.particles.q.push_back(q);
    ev.particles.nhits.push_back(0);
  };
  add_particle(900, 0.f, 3.f, 4.f, 12.f, -1);     // |p| = 13, pT = 5
  add_particle(100, -50.f, 0.6f, 0.8f, 0.f, 1);   // |p| = 1, pT = 1
  add_particle(500, 0.f, 0.3f, 0.4f, 1.2f, 1);    // |p| = 1.3, pT = 0.5
  return ev;
}

// Particle 100: a track going to -z in the negative endcap (vertex at z = -50), where hit_id
// order (layer order) is the reverse of the flight order. Particle 900: barrel, with two hits on
// layer 4 and one hit in a strip volume. Particle 500: too short. Noise: pid 0.
const std::vector<H> kRows = {
    {11, 1.f, 0.f, -1500.f, 7, 2, 3, 100}, {12, 1.f, 0.f, -1300.f, 7, 4, 3, 100},
    {13, 1.f, 0.f, -1100.f, 7, 6, 3, 100}, {14, 1.f, 0.f, -960.f, 7, 8, 3, 100},
    {20, 32.f, 0.f, 1.f, 8, 2, 1, 900},    {21, 72.f, 0.f, 2.f, 8, 4, 9, 900},
    {22, 72.5f, 1.f, 2.f, 8, 4, 10, 900},  {23, 116.f, 0.f, 3.f, 8, 6, 4, 900},
    {24, 172.f, 0.f, 4.f, 8, 8, 7, 900},   {25, 260.f, 0.f, 6.f, 13, 2, 1, 900},
    {30, 32.f, 5.f, 1.f, 8, 2, 2, 500},    {31, 72.f, 9.f, 1.f, 8, 4, 2, 500},
    {40, 50.f, 50.f, 0.f, 8, 4, 5, 0},
};

Tokenizer pixel_tokenizer() {
  std::vector<ModuleKey> keys;
  for (const auto& r : kRows)
    if (r.v != 13 && !(r.v == 8 && r.l == 8)) keys.push_back({r.v, r.l, r.m});  // (8,8,7) stays unknown
  return Tokenizer::from_keys(keys);
}

std::vector<int32_t> hits_of(const TrackSequences& s, int64_t i) {
  std::vector<int32_t> out(s.hit_id.begin() + s.offsets[i] + 1, s.hit_id.begin() + s.offsets[i + 1] - 1);
  return out;
}
}  // namespace

TEST_CASE("track sequences: hand-built event, default options (pixel, 4..8 hits, vertex order)", "[data][tracks]") {
  const Event ev = make_event(kRows);
  const Tokenizer tok = pixel_tokenizer();
  const TrackSequences s = build_track_sequences(ev, tok);
  REQUIRE(s.size() == 2);  // 500 has 2 hits, noise dropped, sorted by particle_id
  CHECK(s.particle_id == std::vector<uint64_t>{100, 900});
  // 100: flight order from z = -50 outwards = reverse layer order.
  CHECK(hits_of(s, 0) == std::vector<int32_t>{14, 13, 12, 11});
  // 900: both layer-4 hits kept, strip hit (volume 13) dropped.
  CHECK(hits_of(s, 1) == std::vector<int32_t>{20, 21, 22, 23, 24});
  CHECK(s.offsets == std::vector<int64_t>{0, 6, 13});
  CHECK(s.tokens[0] == Tokenizer::kCls);
  CHECK(s.tokens[5] == Tokenizer::kSep);
  CHECK(s.tokens[1] == tok.token(7, 8, 3));
  CHECK(s.tokens[11] == Tokenizer::kUnk);  // (8, 8, 7) is not in the vocabulary
  CHECK(s.tokens[12] == Tokenizer::kSep);
  CHECK(s.hit_id[0] == -1);
  CHECK(s.event_id == std::vector<int64_t>{1234, 1234});
  CHECK(s.p[0] == Approx(1.0).epsilon(1e-6));  // float32 of sqrt(0.36 + 0.64)
  CHECK(s.p[1] == Approx(13.0).epsilon(1e-6));
  CHECK(s.pt[1] == Approx(5.0).epsilon(1e-6));
  CHECK(s.q == std::vector<int32_t>{1, -1});
}

TEST_CASE("track sequences: hit_id order, duplicate layers, lengths and pT cut", "[data][tracks]") {
  const Event ev = make_event(kRows);
  const Tokenizer tok = pixel_tokenizer();
  TrackSequenceOptions o;
  o.order = HitOrder::kHitId;
  TrackSequences s = build_track_sequences(ev, tok, o);
  CHECK(hits_of(s, 0) == std::vector<int32_t>{11, 12, 13, 14});  // MAMBA-PT: reversed in volume 7

  o = {};
  o.duplicates = DuplicateLayers::kKeepFirst;
  s = build_track_sequences(ev, tok, o);
  REQUIRE(s.size() == 2);
  CHECK(hits_of(s, 1) == std::vector<int32_t>{20, 21, 23, 24});  // 22 is the second hit on (8, 4)

  o = {};
  o.max_hits = 4;  // 900 has 5 pixel hits: dropped ...
  s = build_track_sequences(ev, tok, o);
  CHECK(s.particle_id == std::vector<uint64_t>{100});
  o.long_tracks = LongTracks::kTruncate;  // ... or cut to its first 4
  s = build_track_sequences(ev, tok, o);
  CHECK(hits_of(s, 1) == std::vector<int32_t>{20, 21, 22, 23});

  o = {};
  o.min_hits = 2;
  o.min_pt = 0.9;  // 500 (pT 0.5) fails, 100 (pT 1.0) passes
  s = build_track_sequences(ev, tok, o);
  CHECK(s.particle_id == std::vector<uint64_t>{100, 900});
  o.min_pt = 0.0;
  o.volumes = {};  // all volumes: the strip hit joins 900
  o.max_hits = 0;
  s = build_track_sequences(ev, tok, o);
  CHECK(s.particle_id == std::vector<uint64_t>{100, 500, 900});
  CHECK(hits_of(s, 2) == std::vector<int32_t>{20, 21, 22, 23, 24, 25});

  // append keeps offsets consistent.
  TrackSequences both = s;
  both.append(s);
  CHECK(both.size() == 6);
  CHECK(both.offsets.back() == 2 * s.offsets.back());
  CHECK(both.length(5) == s.length(2));

  o.min_hits = 5;
  o.max_hits = 4;
  CHECK_THROWS_AS(build_track_sequences(ev, tok, o), ConfigError);
}

TEST_CASE("track sequences: missing truth, unknown hit or particle are DataErrors", "[data][tracks]") {
  const Tokenizer tok = pixel_tokenizer();
  Event ev = make_event(kRows);
  ev.truth = Truth{};
  CHECK_THROWS_AS(build_track_sequences(ev, tok), DataError);
  ev = make_event(kRows);
  ev.truth.hit_id[1] = 999;  // row 1 = hit 31 of particle 500 (row 0 is noise)
  CHECK_THROWS_WITH(build_track_sequences(ev, tok), Catch::Contains("hit_id 999"));
  ev = make_event(kRows);
  ev.particles.particle_id[0] = 901;
  CHECK_THROWS_WITH(build_track_sequences(ev, tok), Catch::Contains("particle 900"));
}

TEST_CASE("track sequences: real barrel event 1000 matches independent python counts", "[data][tracks][real]") {
  const std::string prefix = test::shared_dir() + "/data/trackml/qallse_ez-0.5_hpt-1.0/event000001000";
  if (!test::path_exists(prefix + "-truth.csv")) {
    WARN("skipped: " << prefix << "-truth.csv is absent");
    return;
  }
  const Event ev = read_event(prefix);
  const Tokenizer tok = Tokenizer::from_events({ev});
  struct Want {
    int64_t tracks, hits, weighted;
    double sum_p;
    uint64_t first_pid;
    std::vector<int32_t> first_hits;
  };
  // Numbers printed by `python3 tests/data/real_event_counts.py ../shared`.
  auto check = [&](const TrackSequenceOptions& o, const Want& w) {
    const TrackSequences s = build_track_sequences(ev, tok, o);
    CHECK(s.size() == w.tracks);
    CHECK(s.num_tokens() == w.hits + 2 * w.tracks);
    int64_t weighted = 0;
    double sum_p = 0;
    for (int64_t i = 0; i < s.size(); ++i) {
      const auto h = hits_of(s, i);
      for (std::size_t k = 0; k < h.size(); ++k) weighted += static_cast<int64_t>(k + 1) * h[k];
      sum_p += s.p[i];
      REQUIRE(s.tokens[s.offsets[i]] == Tokenizer::kCls);
      REQUIRE(s.tokens[s.offsets[i + 1] - 1] == Tokenizer::kSep);
    }
    CHECK(weighted == w.weighted);  // checks the order of every hit of every track
    CHECK(sum_p == Approx(w.sum_p).epsilon(1e-6));  // float32 |p| summed over ~2000 tracks
    CHECK(s.particle_id[0] == w.first_pid);
    CHECK(hits_of(s, 0) == w.first_hits);
    for (int32_t t : s.tokens) REQUIRE(t != Tokenizer::kUnk);
  };
  TrackSequenceOptions a;
  a.volumes = {8};
  check(a, {1821, 7284, 658677144, 2127.661297, 4503668346847232ull, {20880, 29323, 35621, 42238}});
  TrackSequenceOptions b;
  b.volumes = {8, 13, 17};
  b.duplicates = DuplicateLayers::kKeepFirst;
  b.max_hits = 0;
  b.min_pt = 1.0;
  check(b, {382, 2858, 1029826971, 1463.867616, 4503737066323968ull, {23346, 31387, 38927, 45412, 77184, 84457, 91226}});
  TrackSequenceOptions c;
  c.volumes = {8, 13, 17};
  c.order = HitOrder::kHitId;
  c.max_hits = 6;
  c.long_tracks = LongTracks::kTruncate;
  check(c, {2631, 14586, 2981697401, 3241.423385, 4503668346847232ull, {20880, 29323, 35621, 42238, 73763, 80881}});
}
