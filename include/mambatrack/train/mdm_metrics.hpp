// Evaluation metrics of MAMBA-PT checkpoints. MDM, over the masked tokens: token accuracy =
// correct / masked; sequence accuracy = tracks whose masked tokens are all right / tracks with at
// least one masked token; distance accuracy = masked tokens whose predicted module centre lies
// within `threshold` mm (Euclidean, detectors.csv cx, cy, cz) of the true one, a special-token
// prediction counting as wrong; each also per track length (number of hits). NTP (label 1 =
// |p| of the first track larger): accuracy, precision tp/(tp+fp), recall tp/(tp+fn), F1 2PR/(P+R).
// A ratio with a zero denominator is NaN ("no data"), written as null in JSON.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "mambatrack/core/error.hpp"
#include "mambatrack/data/event.hpp"
#include "mambatrack/data/tokenizer.hpp"

namespace mambatrack::train {

inline double safe_ratio(int64_t num, int64_t den) {
  return den > 0 ? static_cast<double>(num) / static_cast<double>(den) : std::numeric_limits<double>::quiet_NaN();
}

// MDM predictions of one batch of tracks (MdmTask::predict_mdm).
struct MdmPredictions {
  std::vector<int64_t> sample_ids;  // the batch's tracks (dataset indices), masked or not
  std::vector<int64_t> hits;        // per track: number of hits (sequence length - 2)
  std::vector<int64_t> track;       // per masked token: its track, an index into sample_ids
  std::vector<int64_t> position;    // per masked token: its position inside the sequence ([CLS] = 0)
  std::vector<int32_t> label;       // per masked token: the true module token
  std::vector<int32_t> predicted;   // per masked token: argmax over the whole vocabulary
  double loss_sum = 0;              // smoothed cross-entropy summed over the masked tokens
};

// NTP predictions of explicit pairs (MdmTask::predict_ntp).
struct NtpPredictions {
  std::vector<int32_t> label, predicted;  // per pair: 1 = first track has the larger |p|
  double loss_sum = 0;                    // cross-entropy summed over the pairs
};

// Module centres indexed by token; distances between the modules of two tokens.
class ModuleCentres {
 public:
  ModuleCentres() = default;
  // Every module of the tokenizer must have a record (a DataError names the first that has not).
  ModuleCentres(const data::Tokenizer& tokenizer, const std::vector<data::ModuleRecord>& records) {
    std::map<data::ModuleKey, std::array<double, 3>> by_key;
    for (const auto& r : records) by_key[{r.volume_id, r.layer_id, r.module_id}] = {r.cx, r.cy, r.cz};
    centre_.resize(static_cast<std::size_t>(tokenizer.vocab_size()));
    known_.assign(centre_.size(), false);
    for (int64_t t = data::Tokenizer::kNumSpecial; t < tokenizer.vocab_size(); ++t) {
      const data::ModuleKey k = tokenizer.module(static_cast<int32_t>(t));
      auto it = by_key.find(k);
      if (it == by_key.end())
        throw DataError("detectors.csv", 0, "module_id",
                        "module (volume " + std::to_string(k.volume_id) + ", layer " + std::to_string(k.layer_id) +
                            ", module " + std::to_string(k.module_id) + ") of token " + std::to_string(t) +
                            " is in the tokenizer but not in the detector description");
      centre_[static_cast<std::size_t>(t)] = it->second;
      known_[static_cast<std::size_t>(t)] = true;
    }
  }
  int64_t vocab_size() const { return static_cast<int64_t>(centre_.size()); }
  bool is_module(int32_t token) const {
    return token >= 0 && token < vocab_size() && known_[static_cast<std::size_t>(token)];
  }
  // Distance [mm] between the centres of two module tokens; +inf when either is not a module.
  double distance(int32_t a, int32_t b) const {
    if (!is_module(a) || !is_module(b)) return std::numeric_limits<double>::infinity();
    const auto& p = centre_[static_cast<std::size_t>(a)];
    const auto& q = centre_[static_cast<std::size_t>(b)];
    return std::sqrt((p[0] - q[0]) * (p[0] - q[0]) + (p[1] - q[1]) * (p[1] - q[1]) + (p[2] - q[2]) * (p[2] - q[2]));
  }

 private:
  std::vector<std::array<double, 3>> centre_;
  std::vector<bool> known_;
};

// Counts of one group of tracks (all, or one track length).
struct MdmCounts {
  int64_t tracks = 0;             // tracks evaluated
  int64_t masked_tracks = 0;      // tracks with at least one masked token
  int64_t tracks_all_correct = 0; // ... whose masked tokens are all predicted right
  int64_t tokens = 0;             // masked tokens
  int64_t tokens_correct = 0;
  int64_t tokens_near = 0;        // predicted module centre within the distance threshold
  double loss_sum = 0;

  double token_accuracy() const { return safe_ratio(tokens_correct, tokens); }
  double sequence_accuracy() const { return safe_ratio(tracks_all_correct, masked_tracks); }
  double distance_accuracy() const { return safe_ratio(tokens_near, tokens); }
  double loss() const { return tokens > 0 ? loss_sum / static_cast<double>(tokens) : std::numeric_limits<double>::quiet_NaN(); }
};

// MDM metrics at one mask rate, accumulated batch by batch.
struct MdmEvaluation {
  double mask_rate = 0;
  double threshold = 20.0;  // mm
  MdmCounts total;
  std::map<int64_t, MdmCounts> by_hits;  // key: number of hits of the track

  void add(const MdmPredictions& p, const ModuleCentres& centres) {
    const std::size_t n_tracks = p.sample_ids.size(), m = p.label.size();
    MAMBATRACK_CHECK(p.hits.size() == n_tracks && p.track.size() == m && p.predicted.size() == m, ShapeError,
                     "MdmEvaluation: ", n_tracks, " tracks with ", p.hits.size(), " lengths; ", m, " labels, ",
                     p.track.size(), " track indices, ", p.predicted.size(), " predictions");
    std::vector<int64_t> masked(n_tracks, 0), wrong(n_tracks, 0);
    for (std::size_t i = 0; i < n_tracks; ++i) {
      ++total.tracks;
      ++by_hits[p.hits[i]].tracks;
    }
    for (std::size_t i = 0; i < m; ++i) {
      const int64_t t = p.track[i];
      MAMBATRACK_CHECK(t >= 0 && t < static_cast<int64_t>(n_tracks), ShapeError, "MdmEvaluation: masked token ", i,
                       " names track ", t, " of ", n_tracks);
      const bool correct = p.predicted[i] == p.label[i];
      const bool near = centres.distance(p.predicted[i], p.label[i]) <= threshold;
      ++masked[t];
      wrong[t] += !correct;
      for (MdmCounts* c : {&total, &by_hits[p.hits[t]]}) {
        ++c->tokens;
        c->tokens_correct += correct;
        c->tokens_near += near;
      }
    }
    for (std::size_t i = 0; i < n_tracks; ++i) {
      if (masked[i] == 0) continue;
      for (MdmCounts* c : {&total, &by_hits[p.hits[i]]}) {
        ++c->masked_tracks;
        c->tracks_all_correct += wrong[i] == 0;
      }
    }
    total.loss_sum += p.loss_sum;  // not split by length: the task reports the batch's sum only
  }
};

// NTP binary-classification counts.
struct NtpCounts {
  int64_t tp = 0, fp = 0, tn = 0, fn = 0;
  double loss_sum = 0;

  void add(int32_t predicted, int32_t label) {
    if (predicted == 1) (label == 1 ? tp : fp) += 1;
    else (label == 1 ? fn : tn) += 1;
  }
  void add(const NtpPredictions& p) {
    MAMBATRACK_CHECK(p.label.size() == p.predicted.size(), ShapeError, "NtpCounts: ", p.label.size(), " labels for ",
                     p.predicted.size(), " predictions");
    for (std::size_t i = 0; i < p.label.size(); ++i) add(p.predicted[i], p.label[i]);
    loss_sum += p.loss_sum;
  }
  int64_t count() const { return tp + fp + tn + fn; }
  double accuracy() const { return safe_ratio(tp + tn, count()); }
  double precision() const { return safe_ratio(tp, tp + fp); }
  double recall() const { return safe_ratio(tp, tp + fn); }
  double f1() const { return safe_ratio(2 * tp, 2 * tp + fp + fn); }  // = 2PR/(P+R)
  double loss() const { return count() > 0 ? loss_sum / static_cast<double>(count()) : std::numeric_limits<double>::quiet_NaN(); }
};

}  // namespace mambatrack::train
