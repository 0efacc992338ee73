// Masked-detector-module (MDM) masking of token sequences. Only module tokens (id >= 5) may be
// masked, never PAD/MASK/UNK/CLS/SEP. MAMBA-PT mode: floor(n_eligible · rate) positions drawn
// without replacement, every one replaced by MASK. BERT mode: max(1, floor(n_eligible · rate))
// positions, each replaced by MASK with probability 0.8, by a uniformly random module token with
// 0.1, kept with 0.1. Labels = the original token at masked positions, -100 elsewhere. Sequence
// s draws from Philox(seed, stream = epoch·2^32 + sample id), so masks do not depend on batching.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/philox.hpp"
#include "mambatrack/data/tokenizer.hpp"

namespace mambatrack::data {

enum class MaskMode { kMambaPt, kBert };

constexpr int32_t kIgnoreIndex = -100;

struct MaskOptions {
  MaskMode mode = MaskMode::kMambaPt;
  double rate = 0.15;
  int64_t vocab_size = 0;        // BERT mode: random replacements are drawn from [5, vocab_size)
  double mask_fraction = 0.8;    // BERT mode proportions
  double random_fraction = 0.1;  // the rest (0.1) keeps the original token
};

// The mask-rate curriculum of MAMBA-PT's configs (training.initial_mask_rate,
// intermediate_mask_rate, final_mask_rate, mask_schedule_epochs); validation always uses 0.5.
// Defaults are base_config.yaml; safe_12Gb/beast use epochs {25, 50}, fast {15, 30}.
struct MaskSchedule {
  double initial_rate = 0.15;
  double intermediate_rate = 0.30;
  double final_rate = 0.50;
  int64_t first_epoch = 50;   // mask_schedule_epochs[0]
  int64_t second_epoch = 100; // mask_schedule_epochs[1]
  double validation_rate = 0.5;

  double rate(int64_t epoch) const {
    if (epoch < first_epoch) return initial_rate;
    if (epoch < second_epoch) return intermediate_rate;
    return final_rate;
  }
};

// Output of masking a packed batch: same layout as the input tokens.
struct MaskedTokens {
  std::vector<int32_t> input;             // tokens with masks applied
  std::vector<int32_t> labels;            // original token where masked, kIgnoreIndex elsewhere
  std::vector<int64_t> masked_positions;  // flat indices into input, ascending
};

// The Philox stream of one sequence.
inline uint64_t mask_stream(int64_t epoch, int64_t sample_id) {
  return (static_cast<uint64_t>(epoch) << 32) ^ static_cast<uint64_t>(sample_id);
}

// Masks one sequence in place (input and labels have n entries, labels pre-filled or not).
inline void mask_sequence(const int32_t* tokens, int64_t n, int32_t* input, int32_t* labels,
                          const MaskOptions& opt, Philox& rng) {
  MAMBATRACK_CHECK(opt.rate >= 0.0 && opt.rate <= 1.0, ConfigError, "MDM mask rate must be in [0, 1], got ", opt.rate);
  MAMBATRACK_CHECK(opt.mode != MaskMode::kBert || opt.vocab_size > Tokenizer::kNumSpecial, ConfigError,
                   "BERT masking needs MaskOptions::vocab_size > 5 (random replacements), got ", opt.vocab_size);
  std::vector<int64_t> eligible;
  eligible.reserve(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    input[i] = tokens[i];
    labels[i] = kIgnoreIndex;
    if (tokens[i] >= Tokenizer::kNumSpecial) eligible.push_back(i);
  }
  const int64_t ne = static_cast<int64_t>(eligible.size());
  int64_t count = static_cast<int64_t>(static_cast<double>(ne) * opt.rate);  // floor, as int(n*rate)
  if (opt.mode == MaskMode::kBert && ne > 0 && count < 1) count = 1;
  if (count > ne) count = ne;
  // Partial Fisher-Yates: the first `count` entries become a uniform sample without replacement.
  for (int64_t i = 0; i < count; ++i) {
    const int64_t j = i + static_cast<int64_t>(rng.below(static_cast<uint64_t>(ne - i)));
    std::swap(eligible[i], eligible[j]);
  }
  for (int64_t i = 0; i < count; ++i) {
    const int64_t pos = eligible[i];
    labels[pos] = tokens[pos];
    if (opt.mode == MaskMode::kMambaPt) {
      input[pos] = Tokenizer::kMask;
    } else {
      const double u = rng.uniform_double();
      if (u < opt.mask_fraction) {
        input[pos] = Tokenizer::kMask;
      } else if (u < opt.mask_fraction + opt.random_fraction) {
        input[pos] = Tokenizer::kNumSpecial +
                     static_cast<int32_t>(rng.below(static_cast<uint64_t>(opt.vocab_size - Tokenizer::kNumSpecial)));
      }  // else: keep the original token
    }
  }
}

// Masks a packed batch: sequence s = tokens[cu_seqlens[s] .. cu_seqlens[s+1]) with sample id
// sample_ids[s] (its index in the dataset), drawing from Philox(seed, mask_stream(epoch, id)).
inline MaskedTokens mask_packed(const std::vector<int32_t>& tokens, const std::vector<int64_t>& cu_seqlens,
                                const std::vector<int64_t>& sample_ids, const MaskOptions& opt,
                                uint64_t seed, int64_t epoch) {
  MAMBATRACK_CHECK(!cu_seqlens.empty() && cu_seqlens.front() == 0 &&
                       cu_seqlens.back() == static_cast<int64_t>(tokens.size()),
                   ShapeError, "mask_packed: cu_seqlens must run from 0 to the token count ", tokens.size());
  MAMBATRACK_CHECK(sample_ids.size() + 1 == cu_seqlens.size(), ShapeError, "mask_packed: ",
                   sample_ids.size(), " sample ids for ", cu_seqlens.size() - 1, " sequences");
  MaskedTokens out;
  out.input.resize(tokens.size());
  out.labels.resize(tokens.size());
  for (std::size_t s = 0; s + 1 < cu_seqlens.size(); ++s) {
    const int64_t b = cu_seqlens[s], e = cu_seqlens[s + 1];
    MAMBATRACK_CHECK(e >= b, ShapeError, "mask_packed: cu_seqlens decreases at ", s);
    Philox rng(seed, mask_stream(epoch, sample_ids[s]));
    mask_sequence(tokens.data() + b, e - b, out.input.data() + b, out.labels.data() + b, opt, rng);
  }
  for (std::size_t i = 0; i < tokens.size(); ++i)
    if (out.labels[i] != kIgnoreIndex) out.masked_positions.push_back(static_cast<int64_t>(i));
  return out;
}

}  // namespace mambatrack::data
