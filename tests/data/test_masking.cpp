// MDM masking: exact MAMBA-PT counts, BERT 80/10/10 proportions, eligibility, labels, the
// epoch curriculum of the seed configs, and determinism independent of batching.
#include <catch2/catch.hpp>

#include <cmath>
#include <map>

#include "mambatrack/data/mdm_masking.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::data;

namespace {
// n module tokens in [5, vocab) between CLS and SEP, plus `pad` PADs and one UNK in the middle
// when `unk`.
std::vector<int32_t> make_sequence(int64_t n, Philox& rng, int64_t vocab, int pad = 0, bool unk = false) {
  std::vector<int32_t> s{Tokenizer::kCls};
  for (int64_t i = 0; i < n; ++i) {
    s.push_back(5 + static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab - 5))));
    if (unk && i == n / 2) s.push_back(Tokenizer::kUnk);
  }
  s.push_back(Tokenizer::kSep);
  for (int i = 0; i < pad; ++i) s.push_back(Tokenizer::kPad);
  return s;
}

int64_t count_masked(const std::vector<int32_t>& labels) {
  int64_t c = 0;
  for (int32_t l : labels) c += l != kIgnoreIndex;
  return c;
}
}  // namespace

TEST_CASE("masking: MAMBA-PT mode masks exactly floor(n * rate) module tokens, all with MASK", "[data][masking]") {
  const uint64_t seed = test::test_seed(101);
  INFO("seed " << seed);
  Philox gen(seed, 1);
  // seeds-code.md §1.5: counts for 4..8 hits at rates 0.15, 0.30, 0.50.
  const std::map<double, std::vector<int64_t>> table = {
      {0.15, {0, 0, 0, 1, 1}}, {0.30, {1, 1, 1, 2, 2}}, {0.50, {2, 2, 3, 3, 4}}};
  for (const auto& [rate, counts] : table) {
    for (int64_t n = 4; n <= 8; ++n) {
      for (int rep = 0; rep < 50; ++rep) {
        const auto tokens = make_sequence(n, gen, 300, rep % 3, rep % 2 == 1);
        std::vector<int32_t> in(tokens.size()), lab(tokens.size());
        Philox rng(seed, 1000 + rep);
        MaskOptions o;
        o.rate = rate;
        mask_sequence(tokens.data(), static_cast<int64_t>(tokens.size()), in.data(), lab.data(), o, rng);
        REQUIRE(count_masked(lab) == counts[n - 4]);
        for (std::size_t i = 0; i < tokens.size(); ++i) {
          if (lab[i] == kIgnoreIndex) {
            REQUIRE(in[i] == tokens[i]);  // untouched where not masked
          } else {
            REQUIRE(tokens[i] >= Tokenizer::kNumSpecial);  // never CLS/SEP/PAD/UNK/MASK
            REQUIRE(lab[i] == tokens[i]);
            REQUIRE(in[i] == Tokenizer::kMask);
          }
        }
      }
    }
  }
}

TEST_CASE("masking: MAMBA-PT positions are uniform over the eligible ones", "[data][masking]") {
  const uint64_t seed = test::test_seed(102);
  INFO("seed " << seed);
  Philox gen(seed, 1);
  const auto tokens = make_sequence(8, gen, 300);
  const int draws = 20000;
  std::vector<int> hits(tokens.size(), 0);
  MaskOptions o;
  o.rate = 0.5;
  std::vector<int32_t> in(tokens.size()), lab(tokens.size());
  for (int d = 0; d < draws; ++d) {
    Philox rng(seed, mask_stream(0, d));
    mask_sequence(tokens.data(), static_cast<int64_t>(tokens.size()), in.data(), lab.data(), o, rng);
    for (std::size_t i = 0; i < tokens.size(); ++i) hits[i] += lab[i] != kIgnoreIndex;
  }
  CHECK(hits.front() == 0);
  CHECK(hits.back() == 0);
  for (std::size_t i = 1; i + 1 < tokens.size(); ++i) {
    INFO("position " << i);
    // p = 4/8 per position; sd of the frequency = sqrt(0.25 / 20000) = 0.0035, so 0.02 is ~6 sd.
    CHECK(std::abs(hits[i] / double(draws) - 0.5) < 0.02);
  }
}

TEST_CASE("masking: BERT mode masks at least one token and splits 80/10/10", "[data][masking]") {
  const uint64_t seed = test::test_seed(103);
  INFO("seed " << seed);
  Philox gen(seed, 1);
  MaskOptions o;
  o.mode = MaskMode::kBert;
  o.rate = 0.15;
  o.vocab_size = 2000;
  int64_t masked = 0, as_mask = 0, random = 0, kept = 0, sequences = 0;
  double random_mean = 0;
  for (int rep = 0; rep < 40000; ++rep) {
    const int64_t n = 4 + rep % 5;
    const auto tokens = make_sequence(n, gen, o.vocab_size, rep % 2);
    std::vector<int32_t> in(tokens.size()), lab(tokens.size());
    Philox rng(seed, mask_stream(3, rep));
    mask_sequence(tokens.data(), static_cast<int64_t>(tokens.size()), in.data(), lab.data(), o, rng);
    const int64_t c = count_masked(lab);
    REQUIRE(c == std::max<int64_t>(1, static_cast<int64_t>(n * 0.15)));  // >= 1 even where floor gives 0
    ++sequences;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      if (lab[i] == kIgnoreIndex) {
        REQUIRE(in[i] == tokens[i]);
        continue;
      }
      REQUIRE(tokens[i] >= Tokenizer::kNumSpecial);
      ++masked;
      if (in[i] == Tokenizer::kMask) {
        ++as_mask;
      } else if (in[i] == tokens[i]) {
        ++kept;  // includes random draws equal to the original (1/1995 of them)
      } else {
        ++random;
        REQUIRE(in[i] >= Tokenizer::kNumSpecial);
        REQUIRE(in[i] < o.vocab_size);
        random_mean += in[i];
      }
    }
  }
  REQUIRE(masked == 40000);  // floor(n * 0.15) <= 1 for n <= 8, so exactly one per sequence
  const double n = double(masked);
  INFO("masked " << masked << " MASK " << as_mask << " random " << random << " kept " << kept);
  // Binomial sd of a fraction over >= 40000 draws: <= sqrt(0.25 / 40000) = 0.0025; 0.01 is 4+ sd.
  CHECK(std::abs(as_mask / n - 0.8) < 0.01);
  CHECK(std::abs(random / n - 0.1) < 0.01);
  CHECK(std::abs(kept / n - 0.1) < 0.01);
  // Random replacements uniform over [5, 2000): mean 1002; sd of the mean ~ 576 / sqrt(4000) = 9.
  CHECK(std::abs(random_mean / random - 1002.0) < 50.0);
  CHECK(sequences == 40000);
}

TEST_CASE("masking: packed batches, determinism and independence from batch order", "[data][masking]") {
  const uint64_t seed = test::test_seed(104);
  INFO("seed " << seed);
  Philox gen(seed, 1);
  std::vector<std::vector<int32_t>> seqs;
  for (int i = 0; i < 20; ++i) seqs.push_back(make_sequence(4 + i % 5, gen, 500));
  auto pack = [&](const std::vector<int64_t>& ids, std::vector<int32_t>& tokens, std::vector<int64_t>& cu) {
    tokens.clear();
    cu.assign(1, 0);
    for (int64_t id : ids) {
      tokens.insert(tokens.end(), seqs[id].begin(), seqs[id].end());
      cu.push_back(static_cast<int64_t>(tokens.size()));
    }
  };
  MaskOptions o;
  o.rate = 0.5;
  std::vector<int64_t> ids(20), rev(20);
  for (int i = 0; i < 20; ++i) ids[i] = i, rev[i] = 19 - i;
  std::vector<int32_t> t1, t2;
  std::vector<int64_t> c1, c2;
  pack(ids, t1, c1);
  pack(rev, t2, c2);
  const MaskedTokens a = mask_packed(t1, c1, ids, o, seed, 7);
  const MaskedTokens b = mask_packed(t2, c2, rev, o, seed, 7);
  const MaskedTokens again = mask_packed(t1, c1, ids, o, seed, 7);
  CHECK(a.input == again.input);
  CHECK(a.labels == again.labels);
  for (int i = 0; i < 20; ++i) {  // sequence i is masked the same wherever it sits in the batch
    const int j = 19 - i;
    CHECK(std::equal(a.input.begin() + c1[i], a.input.begin() + c1[i + 1], b.input.begin() + c2[j]));
  }
  // Another epoch masks differently (with overwhelming probability over 20 sequences).
  const MaskedTokens e8 = mask_packed(t1, c1, ids, o, seed, 8);
  CHECK(e8.input != a.input);
  // masked_positions lists exactly the labelled positions, ascending.
  std::vector<int64_t> pos;
  for (std::size_t i = 0; i < a.labels.size(); ++i)
    if (a.labels[i] != kIgnoreIndex) pos.push_back(static_cast<int64_t>(i));
  CHECK(a.masked_positions == pos);
  CHECK(!pos.empty());
  // Input errors.
  CHECK_THROWS_AS(mask_packed(t1, {0, 3}, {0}, o, seed, 0), ShapeError);
  CHECK_THROWS_AS(mask_packed(t1, c1, {0, 1}, o, seed, 0), ShapeError);
  o.rate = 1.5;
  CHECK_THROWS_AS(mask_packed(t1, c1, ids, o, seed, 0), ConfigError);
  o.rate = 0.2;
  o.mode = MaskMode::kBert;  // vocab_size not set
  CHECK_THROWS_AS(mask_packed(t1, c1, ids, o, seed, 0), ConfigError);
}

TEST_CASE("masking: rate curriculum of the seed configs", "[data][masking]") {
  const MaskSchedule base;  // base_config.yaml: 0.15 / 0.30 / 0.50 at epochs [50, 100]
  CHECK(base.rate(0) == 0.15);
  CHECK(base.rate(49) == 0.15);
  CHECK(base.rate(50) == 0.30);
  CHECK(base.rate(99) == 0.30);
  CHECK(base.rate(100) == 0.50);
  CHECK(base.rate(199) == 0.50);
  CHECK(base.validation_rate == 0.5);
  MaskSchedule fast;  // fast_config.yaml: mask_schedule_epochs [15, 30]
  fast.first_epoch = 15;
  fast.second_epoch = 30;
  CHECK(fast.rate(14) == 0.15);
  CHECK(fast.rate(15) == 0.30);
  CHECK(fast.rate(30) == 0.50);
}
