// NTP pairs: labels |p1| > |p2|, the in-batch permutation, same-event pairs, balance, determinism.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

#include "mambatrack/data/ntp_pairs.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::data;

namespace {
void check_labels(const NtpPairs& pr, const std::vector<float>& p) {
  REQUIRE(pr.first.size() == pr.second.size());
  REQUIRE(pr.first.size() == pr.label.size());
  for (int64_t i = 0; i < pr.size(); ++i) REQUIRE(pr.label[i] == (p[pr.first[i]] > p[pr.second[i]] ? 1 : 0));
}
int64_t ones(const NtpPairs& pr) { return std::count(pr.label.begin(), pr.label.end(), 1); }
}  // namespace

TEST_CASE("ntp: hand-checked in-batch permutation pairs", "[data][ntp]") {
  const std::vector<float> p{2.0f, 0.5f, 7.0f, 0.5f};
  Philox rng(test::test_seed(201), 0);
  const NtpPairs pr = permutation_pairs(p, rng);
  REQUIRE(pr.size() == 4);
  // first is the batch in order, second a permutation of it.
  CHECK(pr.first == std::vector<int64_t>{0, 1, 2, 3});
  std::vector<int64_t> s = pr.second;
  std::sort(s.begin(), s.end());
  CHECK(s == std::vector<int64_t>{0, 1, 2, 3});
  check_labels(pr, p);
  // Strict comparison: equal momenta (tracks 1 and 3, and self-pairs) give 0.
  NtpPairs manual;
  manual.first = {0, 1, 3, 2};
  manual.second = {1, 3, 3, 0};
  manual.label = {1, 0, 0, 1};
  check_labels(manual, p);
}

TEST_CASE("ntp: permutation pairs are deterministic and uniform; balanced option", "[data][ntp]") {
  const uint64_t seed = test::test_seed(202);
  INFO("seed " << seed);
  const std::vector<float> p = test::random_uniform<float>(257, seed, 0.1, 20.0);
  Philox a(seed, 5), b(seed, 5), c(seed, 6);
  const NtpPairs pa = permutation_pairs(p, a), pb = permutation_pairs(p, b), pc = permutation_pairs(p, c);
  CHECK(pa.second == pb.second);
  CHECK(pa.second != pc.second);
  check_labels(pa, p);
  // Over many batches each partner is equally likely: P(second[0] == j) = 1/8.
  const std::vector<float> small{1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<int> freq(8, 0);
  const int draws = 40000;
  for (int d = 0; d < draws; ++d) {
    Philox r(seed, 100 + d);
    freq[permutation_pairs(small, r).second[0]]++;
  }
  // sd of a frequency = sqrt(0.125 * 0.875 / 40000) = 0.0017; 0.01 is ~6 sd.
  for (int j = 0; j < 8; ++j) CHECK(std::abs(freq[j] / double(draws) - 0.125) < 0.01);

  // Balanced: no ties, exactly half (floor or ceil) of the labels are 1, labels still correct.
  std::vector<float> q = p;
  q[3] = q[4];  // a tie that must be dropped if it is paired
  for (int d = 0; d < 50; ++d) {
    Philox r(seed, 1000 + d);
    const NtpPairs bal = permutation_pairs(q, r, true);
    check_labels(bal, q);
    for (int64_t i = 0; i < bal.size(); ++i) REQUIRE(q[bal.first[i]] != q[bal.second[i]]);
    REQUIRE(std::abs(2 * ones(bal) - bal.size()) <= 1);
    REQUIRE(bal.size() >= 250);  // at most a few self-pairs/ties dropped out of 257
  }
}

TEST_CASE("ntp: same-event pairs stay inside their event", "[data][ntp]") {
  const uint64_t seed = test::test_seed(203);
  INFO("seed " << seed);
  std::vector<int64_t> ev;
  for (int i = 0; i < 300; ++i) ev.push_back(1000 + (i * 7) % 13);  // 13 events, interleaved
  ev.push_back(5);  // an event with a single track: no pair
  const std::vector<float> p = test::random_uniform<float>(ev.size(), seed, 0.1, 5.0);
  Philox r1(seed, 1), r2(seed, 1);
  const NtpPairs pr = same_event_pairs(ev, p, r1);
  CHECK(pr.size() == 300);
  check_labels(pr, p);
  for (int64_t i = 0; i < pr.size(); ++i) {
    REQUIRE(pr.first[i] == i);
    REQUIRE(ev[pr.second[i]] == ev[pr.first[i]]);
    REQUIRE(pr.second[i] != pr.first[i]);
  }
  CHECK(same_event_pairs(ev, p, r2).second == pr.second);
  Philox r3(seed, 2);
  const NtpPairs bal = same_event_pairs(ev, p, r3, true);
  check_labels(bal, p);
  CHECK(std::abs(2 * ones(bal) - bal.size()) <= 1);
  for (int64_t i = 0; i < bal.size(); ++i) REQUIRE(ev[bal.second[i]] == ev[bal.first[i]]);
  Philox r4(seed, 3);
  CHECK_THROWS_AS(same_event_pairs({1, 2}, {1.f}, r4), ShapeError);
}
