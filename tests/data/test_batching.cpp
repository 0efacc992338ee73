// Batching: packed vs padded content, shuffling, sharding by rank, and resuming from a cursor.
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>

#include "mambatrack/data/batching.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::data;

namespace {
// Random sequences of 6..12 tokens ([CLS] modules [SEP]).
TrackSequences random_sequences(int64_t n, uint64_t seed) {
  Philox rng(seed, 3);
  TrackSequences s;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = rng.range(4, 10);
    s.tokens.push_back(Tokenizer::kCls);
    for (int64_t k = 0; k < len; ++k) s.tokens.push_back(5 + static_cast<int32_t>(rng.below(1000)));
    s.tokens.push_back(Tokenizer::kSep);
    s.offsets.push_back(static_cast<int64_t>(s.tokens.size()));
    s.p.push_back(static_cast<float>(rng.uniform(0.1, 10.0)));
  }
  s.hit_id.assign(s.tokens.size(), 0);
  return s;
}
}  // namespace

TEST_CASE("batching: packed and padded batches hold the same sequences", "[data][batching]") {
  const uint64_t seed = test::test_seed(301);
  INFO("seed " << seed);
  const TrackSequences s = random_sequences(50, seed);
  const std::vector<int64_t> ids{7, 3, 49, 0, 3, 21};
  const PackedBatch pk = pack_batch(s, ids);
  REQUIRE(pk.cu_seqlens.size() == ids.size() + 1);
  CHECK(pk.cu_seqlens.front() == 0);
  CHECK(pk.cu_seqlens.back() == pk.num_tokens());
  const PaddedBatch pd = pad_batch(pk);
  CHECK(pd.batch == 6);
  CHECK(pd.max_len == pk.max_length());
  CHECK(pd.sample_ids == ids);
  for (std::size_t b = 0; b < ids.size(); ++b) {
    const int64_t len = s.length(ids[b]);
    REQUIRE(pd.lengths[b] == len);
    REQUIRE(pk.cu_seqlens[b + 1] - pk.cu_seqlens[b] == len);
    for (int64_t t = 0; t < pd.max_len; ++t) {
      if (t < len) {
        REQUIRE(pd.at(b, t) == s.sequence(ids[b])[t]);
        REQUIRE(pk.tokens[pk.cu_seqlens[b] + t] == s.sequence(ids[b])[t]);
      } else {
        REQUIRE(pd.at(b, t) == Tokenizer::kPad);
      }
    }
  }
  // A fixed max_len pads further; a too-small one is an error, not a silent cut.
  const PaddedBatch wide = pad_batch(s, ids, 16, -1);
  CHECK(wide.max_len == 16);
  CHECK(wide.at(0, 15) == -1);
  CHECK_THROWS_AS(pad_batch(s, ids, 3), ShapeError);
  CHECK_THROWS_AS(pack_batch(s, {50}), ShapeError);
  // packed_to_padded works for any per-token array (e.g. MDM labels).
  std::vector<int64_t> vals(pk.tokens.begin(), pk.tokens.end());
  const auto padded = packed_to_padded<int64_t>(vals, pk.cu_seqlens, -100, pd.max_len);
  for (std::size_t i = 0; i < padded.size(); ++i)
    REQUIRE(padded[i] == (pd.tokens[i] == Tokenizer::kPad ? -100 : pd.tokens[i]));
}

TEST_CASE("batching: an epoch is a seeded permutation, different per epoch", "[data][batching]") {
  const uint64_t seed = test::test_seed(302);
  INFO("seed " << seed);
  SamplerOptions o;
  o.batch_size = 8;
  o.seed = seed;
  const BatchSampler s(101, o);
  const auto e0 = s.epoch_order(0), e0b = BatchSampler(101, o).epoch_order(0), e1 = s.epoch_order(1);
  CHECK(e0 == e0b);
  CHECK(e0 != e1);
  std::vector<int64_t> sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 101; ++i) REQUIRE(sorted[i] == i);
  CHECK(s.batches_per_epoch() == 13);  // ceil(101 / 8)
  CHECK(s.batch(0, 12).size() == 5);
  o.drop_last = true;
  CHECK(BatchSampler(101, o).batches_per_epoch() == 12);
  o.shuffle = false;
  CHECK(BatchSampler(101, o).batch(3, 1) == std::vector<int64_t>{8, 9, 10, 11, 12, 13, 14, 15});
  CHECK_THROWS_AS(s.batch(0, 13), ConfigError);
  o.rank = 2;
  o.world_size = 2;
  CHECK_THROWS_AS(BatchSampler(10, o), ConfigError);
}

TEST_CASE("batching: shards of all ranks partition the data", "[data][batching]") {
  const uint64_t seed = test::test_seed(303);
  INFO("seed " << seed);
  for (int64_t n : {97, 100, 3}) {
    for (int64_t w : {1, 3, 4}) {
      INFO("n " << n << " world " << w);
      SamplerOptions o;
      o.batch_size = 5;
      o.seed = seed;
      o.world_size = w;
      o.even_shards = false;
      std::vector<int64_t> all;
      for (int64_t r = 0; r < w; ++r) {
        o.rank = r;
        const BatchSampler s(n, o);
        const auto sh = s.shard(4);
        REQUIRE(static_cast<int64_t>(sh.size()) == s.shard_size());
        // The batches of a rank are its shard, in order.
        std::vector<int64_t> from_batches;
        for (int64_t b = 0; b < s.batches_per_epoch(); ++b) {
          const auto bb = s.batch(4, b);
          from_batches.insert(from_batches.end(), bb.begin(), bb.end());
        }
        REQUIRE(from_batches == sh);
        all.insert(all.end(), sh.begin(), sh.end());
      }
      std::sort(all.begin(), all.end());
      REQUIRE(static_cast<int64_t>(all.size()) == n);  // disjoint and complete
      for (int64_t i = 0; i < n; ++i) REQUIRE(all[i] == i);

      // Even shards: every rank gets ceil(n / w); together they cover everything, and the
      // w * ceil(n / w) - n extra samples are repeats from the start of the epoch order.
      o.even_shards = true;
      std::set<int64_t> covered;
      int64_t total = 0;
      for (int64_t r = 0; r < w; ++r) {
        o.rank = r;
        const auto sh = BatchSampler(n, o).shard(4);
        REQUIRE(static_cast<int64_t>(sh.size()) == (n + w - 1) / w);
        covered.insert(sh.begin(), sh.end());
        total += static_cast<int64_t>(sh.size());
      }
      CHECK(static_cast<int64_t>(covered.size()) == n);
      CHECK(total - n == (n + w - 1) / w * w - n);
    }
  }
}

TEST_CASE("batching: a restored cursor continues exactly like an uninterrupted run", "[data][batching]") {
  const uint64_t seed = test::test_seed(304);
  INFO("seed " << seed);
  SamplerOptions o;
  o.batch_size = 7;
  o.seed = seed;
  o.rank = 1;
  o.world_size = 3;
  BatchSampler full(200, o);  // 67 per rank -> 10 batches per epoch
  REQUIRE(full.batches_per_epoch() == 10);
  std::vector<std::vector<int64_t>> reference;
  for (int i = 0; i < 35; ++i) reference.push_back(full.next());
  CHECK(full.cursor() == DataCursor{3, 5});
  // Interrupt after 13 batches (inside epoch 1), save the cursor, resume in a fresh sampler.
  BatchSampler first(200, o);
  for (int i = 0; i < 13; ++i) REQUIRE(first.next() == reference[i]);
  const DataCursor saved = first.cursor();
  CHECK(saved == DataCursor{1, 3});
  BatchSampler resumed(200, o);
  resumed.set_cursor(saved);
  for (int i = 13; i < 35; ++i) REQUIRE(resumed.next() == reference[i]);
  // Epochs are full passes over the rank's shard.
  BatchSampler again(200, o);
  std::vector<int64_t> epoch0;
  for (int i = 0; i < 10; ++i) {
    const auto b = again.next();
    epoch0.insert(epoch0.end(), b.begin(), b.end());
  }
  CHECK(epoch0 == again.shard(0));
  CHECK(again.cursor() == DataCursor{1, 0});
  CHECK_THROWS_AS(again.set_cursor({-1, 0}), ConfigError);
}

TEST_CASE("batching: seeded 80/10/10 event split", "[data][batching]") {
  const uint64_t seed = test::test_seed(305);
  INFO("seed " << seed);
  const auto a = split_events(1003, seed), b = split_events(1003, seed), c = split_events(1003, seed + 1);
  CHECK(a == b);
  CHECK(a != c);
  int64_t count[3] = {0, 0, 0};
  for (Split s : a) ++count[static_cast<int>(s)];
  CHECK(count[0] == 802);  // int(1003 * 0.8)
  CHECK(count[1] == 100);  // int(1003 * 0.1)
  CHECK(count[2] == 101);
  // Not a block split: train events are spread over the whole range.
  int64_t train_in_last_tenth = 0;
  for (int64_t i = 903; i < 1003; ++i) train_in_last_tenth += a[i] == Split::kTrain;
  CHECK(train_in_last_tenth > 50);
  CHECK_THROWS_AS(split_events(10, seed, 0.9, 0.2), ConfigError);
}
