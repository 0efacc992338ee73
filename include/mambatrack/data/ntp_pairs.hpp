// Pairs for MAMBA-PT's "next track prediction" task: which of two tracks has the larger momentum.
// label = 1 if |p|(first) > |p|(second) (strict), else 0. In-batch permutation pairs (MAMBA-PT:
// track i against track perm(i), self-pairs included) or same-event pairs (a random other track
// of the same event). Balanced option: pairs with equal |p| (self-pairs) are dropped and the
// order inside pairs is chosen so that exactly floor(m/2) or ceil(m/2) of the m labels are 1.
#pragma once

#include <cstdint>
#include <map>
#include <numeric>
#include <utility>
#include <vector>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/philox.hpp"

namespace mambatrack::data {

// Indices are positions in the batch (the arrays the pairs were made from).
struct NtpPairs {
  std::vector<int64_t> first, second;
  std::vector<int32_t> label;
  int64_t size() const { return static_cast<int64_t>(first.size()); }
};

namespace detail {
inline void shuffle_indices(std::vector<int64_t>& v, Philox& rng) {
  for (int64_t i = static_cast<int64_t>(v.size()) - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i + 1)));
    std::swap(v[i], v[j]);
  }
}

inline NtpPairs finish_pairs(std::vector<std::pair<int64_t, int64_t>> pairs, const std::vector<float>& p,
                             Philox& rng, bool balanced) {
  NtpPairs out;
  if (balanced) {
    std::vector<std::pair<int64_t, int64_t>> kept;
    for (auto& pr : pairs)
      if (p[pr.first] != p[pr.second]) kept.push_back(pr);
    pairs.swap(kept);
    // Target labels: half ones (the odd one decided by a coin), in random order.
    const int64_t m = static_cast<int64_t>(pairs.size());
    int64_t ones = m / 2;
    if (m % 2 == 1 && rng.below(2) == 1) ++ones;
    std::vector<int64_t> target(m, 0);
    for (int64_t i = 0; i < ones; ++i) target[i] = 1;
    shuffle_indices(target, rng);
    for (int64_t i = 0; i < m; ++i) {
      const bool natural = p[pairs[i].first] > p[pairs[i].second];
      if (natural != (target[i] == 1)) std::swap(pairs[i].first, pairs[i].second);
    }
  }
  for (auto& pr : pairs) {
    out.first.push_back(pr.first);
    out.second.push_back(pr.second);
    out.label.push_back(p[pr.first] > p[pr.second] ? 1 : 0);
  }
  return out;
}
}  // namespace detail

// Track i against track perm(i) for a uniformly random permutation (MAMBA-PT's randperm pairs).
inline NtpPairs permutation_pairs(const std::vector<float>& p, Philox& rng, bool balanced = false) {
  std::vector<int64_t> perm(p.size());
  std::iota(perm.begin(), perm.end(), int64_t{0});
  detail::shuffle_indices(perm, rng);
  std::vector<std::pair<int64_t, int64_t>> pairs;
  pairs.reserve(p.size());
  for (std::size_t i = 0; i < p.size(); ++i) pairs.emplace_back(static_cast<int64_t>(i), perm[i]);
  return detail::finish_pairs(std::move(pairs), p, rng, balanced);
}

// Track i against a uniformly random other track with the same event id; tracks alone in their
// event get no pair.
inline NtpPairs same_event_pairs(const std::vector<int64_t>& event_id, const std::vector<float>& p,
                                 Philox& rng, bool balanced = false) {
  MAMBATRACK_CHECK(event_id.size() == p.size(), ShapeError, "same_event_pairs: ", event_id.size(),
                   " event ids for ", p.size(), " momenta");
  std::map<int64_t, std::vector<int64_t>> groups;
  for (std::size_t i = 0; i < event_id.size(); ++i) groups[event_id[i]].push_back(static_cast<int64_t>(i));
  std::vector<int64_t> pos_in_group(p.size());
  for (auto& g : groups)
    for (std::size_t k = 0; k < g.second.size(); ++k) pos_in_group[g.second[k]] = static_cast<int64_t>(k);
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const auto& g = groups[event_id[i]];
    const int64_t n = static_cast<int64_t>(g.size());
    if (n < 2) continue;
    int64_t k = static_cast<int64_t>(rng.below(static_cast<uint64_t>(n - 1)));
    if (k >= pos_in_group[i]) ++k;  // skip the track itself
    pairs.emplace_back(static_cast<int64_t>(i), g[k]);
  }
  return detail::finish_pairs(std::move(pairs), p, rng, balanced);
}

}  // namespace mambatrack::data
