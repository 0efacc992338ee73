// Tests of score.hpp: the TrackML score on hand-made events with hand-derived values and on the
// real barrel event, the submission CSV, FM4NPP efficiency/purity and the adjusted Rand index.
#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "data/data_test_util.hpp"
#include "mambatrack/core/philox.hpp"
#include "mambatrack/data/score.hpp"
#include "mambatrack/data/trackml_io.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::data;

namespace {

// A small event with weights that are exact binary fractions (sums are exact):
//   particle 10 (A): hits 1-4,  weight 0.125 each  (0.5 in all)
//   particle 20 (B): hits 5-8,  weight 0.0625 each (0.25)
//   particle 30 (C): hits 9-10, weight 0.125 each  (0.25)
//   noise (0):       hits 11-14, weight 0
// Total weight 1.
Truth small_truth() {
  Truth t;
  auto add = [&](int32_t hit, uint64_t particle, float w) {
    t.hit_id.push_back(hit);
    t.particle_id.push_back(particle);
    for (auto* v : {&t.tx, &t.ty, &t.tz, &t.tpx, &t.tpy, &t.tpz}) v->push_back(0.25f * static_cast<float>(hit));
    t.weight.push_back(w);
  };
  for (int h = 1; h <= 4; ++h) add(h, 10, 0.125f);
  for (int h = 5; h <= 8; ++h) add(h, 20, 0.0625f);
  for (int h = 9; h <= 10; ++h) add(h, 30, 0.125f);
  for (int h = 11; h <= 14; ++h) add(h, 0, 0.0f);
  return t;
}

// Track ids for hits 1..14 given as one list (index = hit_id - 1).
double score_of(const std::vector<int64_t>& tracks) {
  std::vector<int32_t> hits;
  for (int h = 1; h <= 14; ++h) hits.push_back(h);
  return trackml_score(small_truth(), hits, tracks);
}

// An independent, slow reference of score.py: per track a map particle -> (count, weight), the
// majority the largest count with the smallest id.
double reference_score(const Truth& truth, const std::vector<int64_t>& track_of_row) {
  std::map<uint64_t, int64_t> truth_count;
  long double total = 0;
  for (std::size_t i = 0; i < truth.size(); ++i) {
    ++truth_count[truth.particle_id[i]];
    total += truth.weight[i];
  }
  std::map<int64_t, std::map<uint64_t, std::pair<int64_t, long double>>> tracks;
  for (std::size_t i = 0; i < truth.size(); ++i) {
    auto& e = tracks[track_of_row[i]][truth.particle_id[i]];
    ++e.first;
    e.second += truth.weight[i];
  }
  long double good = 0;
  for (const auto& [tid, parts] : tracks) {
    int64_t n = 0, best = 0;
    uint64_t major = 0;
    long double w = 0;
    for (const auto& [p, cw] : parts) {
      n += cw.first;
      if (cw.first > best) best = cw.first, major = p, w = cw.second;
    }
    if (2 * best > n && 2 * best > truth_count[major]) good += w;
  }
  return static_cast<double>(good / total);
}

std::string ez05() { return test::shared_dir() + "/data/trackml/qallse_ez-0.5_hpt-1.0/event000001000"; }

}  // namespace

TEST_CASE("score: hand-computed TrackML scores of small perturbations", "[data][cpu]") {
  //                           hit: 1  2  3  4  5  6  7  8  9 10 11 12 13 14
  // Truth as submission: every track is its particle, all good -> 0.5 + 0.25 + 0.25 = 1.
  CHECK(score_of({1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4, 4, 4}) == 1.0);
  // A split in two halves {1,2} {3,4}: each half is pure but holds 2/4 = 0.5 of A, not > 0.5,
  // so A scores nothing: 1 - 0.5 = 0.5.
  CHECK(score_of({1, 1, 5, 5, 2, 2, 2, 2, 3, 3, 4, 4, 4, 4}) == 0.5);
  // A split 3 + 1: the 3-hit part has 3/3 and 3/4 > 0.5 -> good with 3 * 0.125 = 0.375;
  // score 0.375 + 0.25 + 0.25 = 0.875.
  CHECK(score_of({1, 1, 1, 5, 2, 2, 2, 2, 3, 3, 4, 4, 4, 4}) == 0.875);
  // A and B merged (8 hits, 4 each): the majority (tie -> A, the lower id) has 4/8 = 0.5 of the
  // track, not > 0.5 -> neither scores; only C: 0.25.
  CHECK(score_of({1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 4, 4, 4, 4}) == 0.25);
  // A and C merged (6 hits): A has 4/6 > 0.5 of the track and 4/4 of itself -> 0.5; C is lost;
  // B stays: 0.5 + 0.25 = 0.75.
  CHECK(score_of({1, 1, 1, 1, 2, 2, 2, 2, 1, 1, 4, 4, 4, 4}) == 0.75);
  // Two noise hits added to A's track: 4/6 > 0.5 still -> unchanged 1.0.
  CHECK(score_of({1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 1, 1, 4, 4}) == 1.0);
  // Four noise hits added to A's track: 4/8 = 0.5, not > 0.5 -> A lost: 0.5.
  CHECK(score_of({1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 1, 1, 1, 1}) == 0.5);
  // One stray B hit in C's track: C track {9,10,5}: C 2/3 > 0.5 and 2/2 -> 0.25; B track keeps
  // 3/4 of B -> 3 * 0.0625 = 0.1875; A 0.5: total 0.9375.
  CHECK(score_of({1, 1, 1, 1, 3, 2, 2, 2, 3, 3, 4, 4, 4, 4}) == 0.9375);
  // Every hit its own track: no track holds more than half of a particle (A, B: 1/4; C: 1/2).
  CHECK(score_of({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}) == 0.0);
  // Everything in one track: tie of 4 hits between noise (0), A and B -> noise (lowest id), which
  // has weight 0: score 0.
  CHECK(score_of(std::vector<int64_t>(14, 7)) == 0.0);
  // The order of the submission rows does not matter.
  std::vector<int32_t> hits = {14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1};
  std::vector<int64_t> tracks = {4, 4, 4, 4, 3, 3, 2, 2, 2, 2, 5, 1, 1, 1};
  CHECK(trackml_score(small_truth(), hits, tracks) == 0.875);
}

TEST_CASE("score: majority ties go to the lower particle id", "[data][cpu]") {
  // Track 9 = {B5, B6, C9, C10}: 2 hits each of particles 20 and 30 -> majority 20.
  std::vector<int32_t> hits;
  for (int h = 1; h <= 14; ++h) hits.push_back(h);
  const std::vector<int64_t> tracks = {1, 1, 1, 1, 9, 9, 2, 2, 9, 9, 4, 4, 4, 4};
  const auto an = analyze_tracks(small_truth(), hits, tracks);
  REQUIRE(an.size() == 4);  // tracks 1, 2, 4, 9 in id order
  const TrackMatch& t9 = an[3];
  CHECK(t9.track_id == 9);
  CHECK(t9.nhits == 4);
  CHECK(t9.major_particle_id == 20);
  CHECK(t9.major_nhits == 2);
  CHECK(t9.major_particle_nhits == 4);
  CHECK(t9.major_weight == 0.125);
  CHECK_FALSE(t9.good());
  CHECK(an[2].major_particle_id == 0);  // the noise track
  CHECK(an[2].major_particle_nhits == 4);
}

TEST_CASE("score: a submission must hold every truth hit exactly once", "[data][cpu]") {
  std::vector<int32_t> hits;
  for (int h = 1; h <= 14; ++h) hits.push_back(h);
  const std::vector<int64_t> ok(14, 1);
  const Truth t = small_truth();
  auto message = [&](std::vector<int32_t> h, std::vector<int64_t> k) -> std::string {
    try {
      (void)trackml_score(t, h, k);
    } catch (const DataError& e) {
      return e.what();
    }
    return "no error";
  };
  auto missing = hits;
  missing.pop_back();
  auto short_tracks = ok;
  short_tracks.pop_back();
  CHECK(message(missing, short_tracks).find("truth hit 14 is missing") != std::string::npos);
  auto twice = hits;
  twice[13] = 3;
  CHECK(message(twice, ok).find("hit 3 appears more than once") != std::string::npos);
  auto extra = hits;
  extra.push_back(99);
  auto extra_tracks = ok;
  extra_tracks.push_back(1);
  CHECK(message(extra, extra_tracks).find("hit 99 is not in the truth") != std::string::npos);
  auto negative = ok;
  negative[4] = -1;
  CHECK(message(hits, negative).find("must be >= 0") != std::string::npos);
  CHECK(message(hits, short_tracks).find("has 13 entries but hit_id has 14") != std::string::npos);
  // Against an event's hits (a test event has no truth): the row of each hit, or the error.
  const std::vector<int32_t> event_hits = {7, 3, 5};
  CHECK(check_submission(event_hits, {5, 7, 3}, {0, 1, 2}, "hits") == std::vector<int64_t>{1, 2, 0});
  CHECK_THROWS_WITH(check_submission(event_hits, {5, 7}, {0, 1}, "hits"),
                    "submission: column 'hit_id': hits hit 3 is missing");
  CHECK_THROWS_WITH(check_submission(event_hits, {5, 7, 3, 4}, {0, 1, 2, 2}, "hits"),
                    "submission: column 'hit_id': hit 4 is not in the hits");
}

TEST_CASE("score: submission CSV write/read and its errors", "[data][cpu]") {
  test::ScratchDir dir;
  Submission s;
  s.add(1000, 16874, 0);
  s.add(1000, 16883, 4000000000ll);
  s.add(1001, 16874, 3);  // the same hit id in another event is fine
  write_submission(dir / "sub.csv", s);
  CHECK(test::slurp(dir / "sub.csv") == "event_id,hit_id,track_id\n1000,16874,0\n1000,16883,4000000000\n1001,16874,3\n");
  write_submission(dir / "sub.csv.gz", s);
  for (const char* name : {"sub.csv", "sub.csv.gz"}) {
    const Submission r = read_submission(dir / name);
    CHECK(r.event_id == s.event_id);
    CHECK(r.hit_id == s.hit_id);
    CHECK(r.track_id == s.track_id);
  }
  const auto e1000 = s.event(1000);
  CHECK(e1000.first == std::vector<int32_t>{16874, 16883});
  CHECK(e1000.second == std::vector<int64_t>{0, 4000000000ll});

  const std::string dup = "event_id,hit_id,track_id\n1,5,0\n1,6,0\n1,5,2\n";
  try {
    (void)parse_submission_buffer(dup.data(), dup.size(), "sub.csv");
    FAIL("duplicate hit accepted");
  } catch (const DataError& e) {
    CHECK(std::string(e.what()) ==
          "sub.csv:4: column 'hit_id': hit 5 of event 1 appears twice (first on line 2); every hit must "
          "appear exactly once");
  }
  const std::string neg = "event_id,hit_id,track_id\n1,5,-1\n";
  CHECK_THROWS_WITH(parse_submission_buffer(neg.data(), neg.size(), "sub.csv"),
                    Catch::Contains("sub.csv:2: column 'track_id': integer out of range"));
  Submission bad = s;
  bad.add(1000, 16874, 1);
  CHECK_THROWS_AS(write_submission(dir / "bad.csv", bad), DataError);
  CHECK_FALSE(test::path_exists(dir / "bad.csv"));
}

TEST_CASE("score: the real barrel event (truth as submission = 1, singletons = 0)", "[data][cpu]") {
  if (!test::path_exists(ez05() + "-truth.csv")) {
    WARN("skipped: " << ez05() << "-truth.csv is absent");
    return;
  }
  const Truth truth = read_truth(ez05() + "-truth.csv");
  std::vector<int64_t> by_particle(truth.size()), singletons(truth.size());
  for (std::size_t i = 0; i < truth.size(); ++i) {
    // particle_id as track id: ids < 2^63 here, and noise (0) becomes one junk track.
    by_particle[i] = static_cast<int64_t>(truth.particle_id[i]);
    singletons[i] = static_cast<int64_t>(i);
  }
  CHECK(trackml_score(truth, truth.hit_id, by_particle) == 1.0);  // exact: long double sums
  CHECK(trackml_score(truth, truth.hit_id, singletons) == 0.0);
  // Random damage, checked against the slow reference: 5% of hits moved to random tracks
  // (trackml.md §3.2 quotes 0.960 for this on the same event).
  const uint64_t seed = test::test_seed(5);
  INFO("seed " << seed);
  Philox rng(seed, 3);
  std::vector<int64_t> damaged = by_particle;
  for (auto& t : damaged)
    if (rng.uniform() < 0.05f) t = static_cast<int64_t>(rng.next_u64() >> 1);
  const double s = trackml_score(truth, truth.hit_id, damaged);
  CHECK(s == Approx(reference_score(truth, damaged)).margin(1e-12));  // different summation order
  CHECK(s > 0.93);  // ~0.96 expected; wide because the damage is random
  CHECK(s < 0.99);
}

TEST_CASE("score: FM4NPP efficiency and purity per pT bin (hand-computed)", "[data][cpu]") {
  // Particle 1: 6 hits, pT 0.5; particle 2: 4 hits, pT 1.5; particle 3: 2 hits, pT 2.5 (< 3 hits:
  // not a truth track); noise (0): 3 hits.
  //   cluster 10 = 5 x P1 + 1 noise: majority P1, 5/6 pure, 5/6 of P1 -> P1 efficient, purity 5/6
  //   cluster 20 = 2 x P2 + 2 x P3: tie -> P2, 2/4 not > 0.5 -> fake, purity 1/2
  //   cluster 30 = 2 x P2 + 1 x P1: 3 < 4 hits -> ignored
  //   2 noise hits unassigned (-1)
  // efficiency = 1/2 (P1 of P1, P2), purity = (5/6 + 1/2) / 2 = 2/3, fake rate = 1/2.
  std::vector<uint64_t> pid;
  std::vector<int64_t> label;
  std::vector<float> pt;
  auto add = [&](uint64_t p, int64_t c, float v, int times) {
    for (int i = 0; i < times; ++i) pid.push_back(p), label.push_back(c), pt.push_back(v);
  };
  add(1, 10, 0.5f, 5);
  add(0, 10, 7.0f, 1);
  add(2, 20, 1.5f, 2);
  add(3, 20, 2.5f, 2);
  add(2, 30, 1.5f, 2);
  add(1, 30, 0.5f, 1);
  add(0, -1, 7.0f, 2);
  const EffPurity r = efficiency_purity(pid, label, pt);
  CHECK(r.n_truth == 2);
  CHECK(r.n_efficient == 1);
  CHECK(r.efficiency == 0.5);
  CHECK(r.n_clusters == 2);
  CHECK(r.purity == Approx(2.0 / 3.0).epsilon(1e-15));  // two-term mean of exact fractions
  CHECK(r.fake_rate == 0.5);
  // 15 bins of 0.2 GeV: pT 0.5 -> bin 2, pT 1.5 -> bin 7.
  REQUIRE(r.bin_edges.size() == 16);
  CHECK(r.bin_edges.back() == Approx(3.0));
  CHECK(r.truth_per_bin[2] == 1);
  CHECK(r.efficient_per_bin[2] == 1);
  CHECK(r.efficiency_per_bin[2] == 1.0);
  CHECK(r.truth_per_bin[7] == 1);
  CHECK(r.efficiency_per_bin[7] == 0.0);
  CHECK(r.purity_per_bin[2] == Approx(5.0 / 6.0).epsilon(1e-15));
  CHECK(r.purity_per_bin[7] == 0.5);
  CHECK(std::isnan(r.efficiency_per_bin[0]));  // empty bin
  // A pT cut at 1 GeV drops P1 and the cluster it leads: efficiency 0/1, purity 1/2.
  EffPurityConfig cut;
  cut.pt_min = 1.0;
  const EffPurity c = efficiency_purity(pid, label, pt, cut);
  CHECK(c.n_truth == 1);
  CHECK(c.efficiency == 0.0);
  CHECK(c.n_clusters == 1);
  CHECK(c.purity == 0.5);
  // Truth as prediction on the real event: every truth track efficient, purity 1.
  if (test::path_exists(ez05() + "-truth.csv")) {
    const Truth truth = read_truth(ez05() + "-truth.csv");
    const Particles parts = read_particles(ez05() + "-particles.csv");
    std::vector<int64_t> tracks(truth.size());
    for (std::size_t i = 0; i < truth.size(); ++i) tracks[i] = static_cast<int64_t>(truth.particle_id[i]);
    EffPurityConfig dm;  // trackml.md §3.3 (b): pT > 1 GeV, >= 5 true hits
    dm.min_truth_hits = 5;
    dm.pt_min = 1.0;
    const EffPurity t = efficiency_purity(truth, parts, truth.hit_id, tracks, dm);
    CHECK(t.n_truth > 100);
    CHECK(t.efficiency == 1.0);
    CHECK(t.n_fake == 0);
  }
}

TEST_CASE("score: adjusted Rand index (sklearn values)", "[data][cpu]") {
  const uint64_t seed = test::test_seed(99);
  INFO("seed " << seed);
  Philox rng(seed, 1);
  std::vector<int64_t> a(500);
  for (auto& v : a) v = static_cast<int64_t>(rng.next_u64() % 40) - 1;  // -1 is an ordinary label
  // Identical partitions, and the same partition under another naming: 1.
  CHECK(adjusted_rand_index(a, a) == 1.0);
  std::vector<uint64_t> renamed(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) renamed[i] = static_cast<uint64_t>(a[i] + 1) * 7919u + 123456789u;
  CHECK(adjusted_rand_index(renamed, a) == 1.0);
  // sklearn docs: [0,0,1,1] vs [0,0,1,2] = 0.5714285714285715. Hand: ordered pairs tp = 2,
  // fp = 0, fn = 2, tn = 8 -> 2 (2*8 - 0) / ((2+2)(2+8) + (2+0)(0+8)) = 32/56 = 4/7.
  CHECK(adjusted_rand_index(std::vector<int>{0, 0, 1, 1}, std::vector<int>{0, 0, 1, 2}) ==
        Approx(4.0 / 7.0).epsilon(1e-15));
  // [0,0,1,1] vs [0,1,0,1] = -0.5; all in one vs all apart = 0.
  CHECK(adjusted_rand_index(std::vector<int>{0, 0, 1, 1}, std::vector<int>{0, 1, 0, 1}) == -0.5);
  CHECK(adjusted_rand_index(std::vector<int>{0, 0, 0, 0}, std::vector<int>{0, 1, 2, 3}) == 0.0);
  // Both all singletons (fn = fp = 0): 1, as sklearn.
  CHECK(adjusted_rand_index(std::vector<int>{1, 2, 3}, std::vector<int>{3, 2, 1}) == 1.0);
  // A random labeling against another is near 0 (expected 0; ~1/sqrt(pairs) spread).
  std::vector<int64_t> b(a.size());
  for (auto& v : b) v = static_cast<int64_t>(rng.next_u64() % 40);
  CHECK(std::fabs(adjusted_rand_index(a, b)) < 0.02);
  CHECK_THROWS_AS(adjusted_rand_index(a, std::vector<int>{1}), DataError);
}
