// Batches of variable-length token sequences and the sampler that makes them. Packed layout: all
// tokens in one row, sequence s = tokens[cu_seqlens[s] .. cu_seqlens[s+1]) (int64, batch+1
// entries). Padded layout: (batch, max_len) row-major with pad_value after each sequence's
// length. The sampler's epoch order is a Fisher-Yates shuffle drawn from Philox(seed, epoch),
// identical on every rank; rank r of W takes positions r, r+W, r+2W, ... of it; a cursor
// (epoch, batch) says which batch comes next, so a restored cursor continues exactly.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/philox.hpp"
#include "mambatrack/data/tokenizer.hpp"
#include "mambatrack/data/track_sequences.hpp"

namespace mambatrack::data {

struct PackedBatch {
  std::vector<int32_t> tokens;
  std::vector<int64_t> cu_seqlens{0};  // batch + 1 entries
  std::vector<int64_t> sample_ids;     // dataset index of each sequence
  int64_t size() const { return static_cast<int64_t>(sample_ids.size()); }
  int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
  int64_t max_length() const {
    int64_t m = 0;
    for (std::size_t i = 0; i + 1 < cu_seqlens.size(); ++i) m = std::max(m, cu_seqlens[i + 1] - cu_seqlens[i]);
    return m;
  }
};

struct PaddedBatch {
  std::vector<int32_t> tokens;      // batch * max_len, row-major
  std::vector<int64_t> lengths;     // per sequence
  std::vector<int64_t> sample_ids;
  int64_t batch = 0, max_len = 0;
  int32_t at(int64_t b, int64_t t) const { return tokens[b * max_len + t]; }
};

// Gathers sequences ids[k] of a packed collection (offsets: n+1 entries) into a packed batch.
inline PackedBatch pack_batch(const std::vector<int32_t>& tokens, const std::vector<int64_t>& offsets,
                              const std::vector<int64_t>& ids) {
  const int64_t n = static_cast<int64_t>(offsets.size()) - 1;
  PackedBatch out;
  out.sample_ids = ids;
  for (int64_t id : ids) {
    MAMBATRACK_CHECK(id >= 0 && id < n, ShapeError, "pack_batch: sample ", id, " outside [0, ", n, ")");
    out.tokens.insert(out.tokens.end(), tokens.begin() + offsets[id], tokens.begin() + offsets[id + 1]);
    out.cu_seqlens.push_back(static_cast<int64_t>(out.tokens.size()));
  }
  return out;
}
inline PackedBatch pack_batch(const TrackSequences& seqs, const std::vector<int64_t>& ids) {
  return pack_batch(seqs.tokens, seqs.offsets, ids);
}

// Any per-token array of a packed batch (tokens, MDM inputs, labels; or rows of `width` values
// per token, like FM4NPP points and k-NNN targets) to (batch, max_len[, width]). max_len = 0:
// the longest sequence; a sequence longer than a given max_len is a ShapeError.
template <class T>
std::vector<T> packed_to_padded(const std::vector<T>& values, const std::vector<int64_t>& cu_seqlens,
                                T pad_value, int64_t max_len, int64_t width = 1) {
  const int64_t b = static_cast<int64_t>(cu_seqlens.size()) - 1;
  if (max_len == 0)
    for (int64_t s = 0; s < b; ++s) max_len = std::max(max_len, cu_seqlens[s + 1] - cu_seqlens[s]);
  MAMBATRACK_CHECK(b >= 0 && static_cast<int64_t>(values.size()) == (b > 0 ? cu_seqlens[b] : 0) * width, ShapeError,
                   "packed_to_padded: ", values.size(), " values for ", b > 0 ? cu_seqlens[b] : 0,
                   " tokens of width ", width);
  std::vector<T> out(static_cast<std::size_t>(std::max<int64_t>(b, 0) * max_len * width), pad_value);
  for (int64_t s = 0; s < b; ++s) {
    const int64_t len = cu_seqlens[s + 1] - cu_seqlens[s];
    MAMBATRACK_CHECK(len <= max_len, ShapeError, "packed_to_padded: sequence ", s, " has ", len,
                     " tokens, more than max_len ", max_len);
    std::copy(values.begin() + cu_seqlens[s] * width, values.begin() + cu_seqlens[s + 1] * width,
              out.begin() + s * max_len * width);
  }
  return out;
}

inline PaddedBatch pad_batch(const PackedBatch& packed, int64_t max_len = 0,
                             int32_t pad_value = Tokenizer::kPad) {
  PaddedBatch out;
  out.batch = packed.size();
  out.max_len = max_len > 0 ? max_len : packed.max_length();
  out.sample_ids = packed.sample_ids;
  for (int64_t s = 0; s < out.batch; ++s) out.lengths.push_back(packed.cu_seqlens[s + 1] - packed.cu_seqlens[s]);
  out.tokens = packed_to_padded(packed.tokens, packed.cu_seqlens, pad_value, out.max_len);
  return out;
}
inline PaddedBatch pad_batch(const TrackSequences& seqs, const std::vector<int64_t>& ids, int64_t max_len = 0,
                             int32_t pad_value = Tokenizer::kPad) {
  return pad_batch(pack_batch(seqs, ids), max_len, pad_value);
}

// MAMBA-PT's event-level split (train_split 0.8, val_split 0.1, the rest test), but seeded:
// events are shuffled with Philox(seed, stream 0), the first int(n·train) go to train, the next
// int(n·val) to validation. Returns 0 (train), 1 (validation) or 2 (test) per event.
enum class Split : int { kTrain = 0, kValidation = 1, kTest = 2 };
inline std::vector<Split> split_events(int64_t n_events, uint64_t seed, double train_fraction = 0.8,
                                       double val_fraction = 0.1) {
  MAMBATRACK_CHECK(train_fraction >= 0 && val_fraction >= 0 && train_fraction + val_fraction <= 1.0, ConfigError,
                   "split_events: need train, val >= 0 and train + val <= 1, got ", train_fraction, " and ",
                   val_fraction);
  std::vector<int64_t> order(static_cast<std::size_t>(n_events));
  std::iota(order.begin(), order.end(), int64_t{0});
  Philox rng(seed, 0);
  for (int64_t i = n_events - 1; i > 0; --i) std::swap(order[i], order[rng.below(static_cast<uint64_t>(i + 1))]);
  const int64_t n_train = static_cast<int64_t>(static_cast<double>(n_events) * train_fraction);
  const int64_t n_val = static_cast<int64_t>(static_cast<double>(n_events) * val_fraction);
  std::vector<Split> out(static_cast<std::size_t>(n_events), Split::kTest);
  for (int64_t i = 0; i < n_train + n_val && i < n_events; ++i) out[order[i]] = i < n_train ? Split::kTrain : Split::kValidation;
  return out;
}

// Position of the data stream: the next batch is batch `batch` of epoch `epoch` (per rank).
struct DataCursor {
  int64_t epoch = 0;
  int64_t batch = 0;
  friend bool operator==(const DataCursor& a, const DataCursor& b) { return a.epoch == b.epoch && a.batch == b.batch; }
};

struct SamplerOptions {
  int64_t batch_size = 128;
  uint64_t seed = 42;
  bool shuffle = true;
  int64_t rank = 0, world_size = 1;
  bool drop_last = false;   // drop a last, smaller batch
  bool even_shards = true;  // wrap the epoch order around so every rank gets ceil(n/W) samples
                            // (DistributedSampler); false: an exact partition, sizes differ by <= 1
};

class BatchSampler {
 public:
  BatchSampler(int64_t num_samples, SamplerOptions opt) : n_(num_samples), opt_(opt) {
    MAMBATRACK_CHECK(n_ >= 0, ConfigError, "BatchSampler: negative sample count ", n_);
    MAMBATRACK_CHECK(opt_.batch_size > 0, ConfigError, "BatchSampler: batch_size must be > 0, got ", opt_.batch_size);
    MAMBATRACK_CHECK(opt_.world_size > 0 && opt_.rank >= 0 && opt_.rank < opt_.world_size, ConfigError,
                     "BatchSampler: rank ", opt_.rank, " outside [0, world_size = ", opt_.world_size, ")");
  }

  int64_t num_samples() const { return n_; }
  const SamplerOptions& options() const { return opt_; }

  // The global order of an epoch (the same on every rank).
  std::vector<int64_t> epoch_order(int64_t epoch) const {
    std::vector<int64_t> order(static_cast<std::size_t>(n_));
    std::iota(order.begin(), order.end(), int64_t{0});
    if (opt_.shuffle) {
      Philox rng(opt_.seed, static_cast<uint64_t>(epoch));
      for (int64_t i = n_ - 1; i > 0; --i) std::swap(order[i], order[rng.below(static_cast<uint64_t>(i + 1))]);
    }
    return order;
  }

  // This rank's samples of an epoch, in order.
  std::vector<int64_t> shard(int64_t epoch) const {
    const std::vector<int64_t> order = epoch_order(epoch);
    std::vector<int64_t> out;
    const int64_t w = opt_.world_size;
    const int64_t total = opt_.even_shards ? (n_ + w - 1) / w * w : n_;
    if (n_ == 0) return out;
    for (int64_t i = opt_.rank; i < total; i += w) out.push_back(order[i % n_]);
    return out;
  }

  int64_t shard_size() const {
    const int64_t w = opt_.world_size;
    if (n_ == 0) return 0;
    if (opt_.even_shards) return (n_ + w - 1) / w;
    return (n_ - opt_.rank + w - 1) / w;
  }
  int64_t batches_per_epoch() const {
    const int64_t s = shard_size();
    return opt_.drop_last ? s / opt_.batch_size : (s + opt_.batch_size - 1) / opt_.batch_size;
  }

  // Batch b of an epoch on this rank.
  std::vector<int64_t> batch(int64_t epoch, int64_t b) const {
    MAMBATRACK_CHECK(b >= 0 && b < batches_per_epoch(), ConfigError, "BatchSampler: batch ", b,
                     " outside [0, ", batches_per_epoch(), ")");
    const std::vector<int64_t>& s = cached_shard(epoch);
    const int64_t begin = b * opt_.batch_size;
    const int64_t end = std::min<int64_t>(begin + opt_.batch_size, static_cast<int64_t>(s.size()));
    return std::vector<int64_t>(s.begin() + begin, s.begin() + end);
  }

  // The batch at the cursor; the cursor then moves on (to the next epoch after the last batch).
  std::vector<int64_t> next() {
    MAMBATRACK_CHECK(batches_per_epoch() > 0, ConfigError, "BatchSampler: no batch in an epoch (",
                     shard_size(), " samples on this rank, batch_size ", opt_.batch_size, ", drop_last)");
    if (cursor_.batch >= batches_per_epoch()) cursor_ = {cursor_.epoch + 1, 0};
    std::vector<int64_t> out = batch(cursor_.epoch, cursor_.batch);
    ++cursor_.batch;
    if (cursor_.batch == batches_per_epoch()) cursor_ = {cursor_.epoch + 1, 0};
    return out;
  }

  DataCursor cursor() const { return cursor_; }
  void set_cursor(DataCursor c) {
    MAMBATRACK_CHECK(c.epoch >= 0 && c.batch >= 0, ConfigError, "BatchSampler: invalid cursor (epoch ",
                     c.epoch, ", batch ", c.batch, ")");
    cursor_ = c;
  }

 private:
  const std::vector<int64_t>& cached_shard(int64_t epoch) const {
    if (cached_epoch_ != epoch) {
      cached_ = shard(epoch);
      cached_epoch_ = epoch;
    }
    return cached_;
  }

  int64_t n_;
  SamplerOptions opt_;
  DataCursor cursor_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_;
};

}  // namespace mambatrack::data
