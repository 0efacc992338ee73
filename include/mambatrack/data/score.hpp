// Track-finding metrics on TrackML events. The TrackML score (trackml-library score.py): a
// reconstructed track is good when its majority particle m (most hits; ties to the lower
// particle_id) has more than half of the track's hits AND more than half of m's truth hits; score
// = sum of the truth weights of m's hits in good tracks / sum of all weights. Also the submission
// CSV (event_id,hit_id,track_id), FM4NPP efficiency and purity per pT bin, and the adjusted Rand
// index ARI = (RI - E[RI]) / (max RI - E[RI]) as sklearn's adjusted_rand_score.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mambatrack/core/error.hpp"
#include "mambatrack/data/csv.hpp"
#include "mambatrack/data/event.hpp"

namespace mambatrack::data {

// ---- the TrackML score ------------------------------------------------------------------------

// One reconstructed track as score.py's _analyze_tracks sees it.
struct TrackMatch {
  int64_t track_id = 0;
  int64_t nhits = 0;                 // hits in the track
  uint64_t major_particle_id = 0;    // the particle with most hits in it (ties: lower id)
  int64_t major_particle_nhits = 0;  // that particle's hits in the truth (noise counts as particle 0)
  int64_t major_nhits = 0;           // that particle's hits in the track
  double major_weight = 0;           // sum of the truth weights of those hits
  bool good() const { return 2 * major_nhits > nhits && 2 * major_nhits > major_particle_nhits; }
};

// For every event hit, its row in the submission (hit_ids, track_ids); throws DataError unless
// each event hit appears exactly once, the submission has no other hits and track ids are >= 0.
// `what` names the event's hits in messages ("truth", "hits").
inline std::vector<int64_t> check_submission(const std::vector<int32_t>& event_hit_ids,
                                             const std::vector<int32_t>& hit_ids,
                                             const std::vector<int64_t>& track_ids,
                                             const std::string& what = "truth") {
  const std::string who = "submission";
  if (hit_ids.size() != track_ids.size())
    throw DataError(who, 0, "track_id",
                    "has " + std::to_string(track_ids.size()) + " entries but hit_id has " +
                        std::to_string(hit_ids.size()));
  std::vector<int32_t> known(event_hit_ids);
  std::sort(known.begin(), known.end());
  const auto dup = std::adjacent_find(known.begin(), known.end());
  if (dup != known.end())
    throw DataError(what, 0, "hit_id", "hit " + std::to_string(*dup) + " appears more than once");
  std::vector<std::pair<int32_t, int64_t>> sub(hit_ids.size());
  for (std::size_t i = 0; i < hit_ids.size(); ++i) {
    if (track_ids[i] < 0)
      throw DataError(who, 0, "track_id",
                      "must be >= 0, got " + std::to_string(track_ids[i]) + " for hit " +
                          std::to_string(hit_ids[i]) + " (put unassigned hits in a track of their own)");
    sub[i] = {hit_ids[i], static_cast<int64_t>(i)};
  }
  std::sort(sub.begin(), sub.end());
  for (std::size_t i = 1; i < sub.size(); ++i)
    if (sub[i].first == sub[i - 1].first)
      throw DataError(who, 0, "hit_id", "hit " + std::to_string(sub[i].first) + " appears more than once");
  std::vector<int64_t> where(event_hit_ids.size(), -1);
  for (std::size_t t = 0; t < event_hit_ids.size(); ++t) {
    const auto it = std::lower_bound(sub.begin(), sub.end(), std::make_pair(event_hit_ids[t], int64_t{-1}));
    if (it == sub.end() || it->first != event_hit_ids[t])
      throw DataError(who, 0, "hit_id", what + " hit " + std::to_string(event_hit_ids[t]) + " is missing");
    where[t] = it->second;
  }
  // Every event hit found once and no more rows than event hits: a one-to-one match.
  if (sub.size() != event_hit_ids.size()) {
    for (const auto& s : sub)
      if (!std::binary_search(known.begin(), known.end(), s.first))
        throw DataError(who, 0, "hit_id", "hit " + std::to_string(s.first) + " is not in the " + what);
  }
  return where;
}

namespace detail {
inline std::vector<int64_t> match_submission(const Truth& truth, const std::vector<int32_t>& hit_ids,
                                             const std::vector<int64_t>& track_ids) {
  if (truth.particle_id.size() != truth.size() || truth.weight.size() != truth.size())
    throw DataError("truth", 0, "", "hit_id, particle_id and weight must have the same length");
  return check_submission(truth.hit_id, hit_ids, track_ids, "truth");
}
}  // namespace detail

// Per-track majority analysis, sorted by track id.
inline std::vector<TrackMatch> analyze_tracks(const Truth& truth, const std::vector<int32_t>& hit_ids,
                                              const std::vector<int64_t>& track_ids) {
  const std::vector<int64_t> where = detail::match_submission(truth, hit_ids, track_ids);
  std::unordered_map<uint64_t, int64_t> particle_nhits;
  particle_nhits.reserve(truth.size());
  for (uint64_t p : truth.particle_id) ++particle_nhits[p];
  struct Row {
    int64_t track;
    uint64_t particle;
    float weight;
  };
  std::vector<Row> rows(truth.size());
  for (std::size_t t = 0; t < truth.size(); ++t)
    rows[t] = {track_ids[static_cast<std::size_t>(where[t])], truth.particle_id[t], truth.weight[t]};
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return a.track != b.track ? a.track < b.track : a.particle < b.particle;
  });
  std::vector<TrackMatch> tracks;
  std::size_t i = 0;
  while (i < rows.size()) {
    TrackMatch m;
    m.track_id = rows[i].track;
    while (i < rows.size() && rows[i].track == m.track_id) {
      // One run of hits of the same particle inside the track; strict '>' keeps the first
      // (lowest id) particle on ties, as score.py's "if maj_nhits < cur_nhits" does.
      const uint64_t p = rows[i].particle;
      int64_t n = 0;
      long double w = 0;  // sums of float32 weights are exact in long double for real events
      for (; i < rows.size() && rows[i].track == m.track_id && rows[i].particle == p; ++i) {
        ++n;
        w += static_cast<long double>(rows[i].weight);
      }
      m.nhits += n;
      if (n > m.major_nhits) {
        m.major_particle_id = p;
        m.major_nhits = n;
        m.major_weight = static_cast<double>(w);
      }
    }
    m.major_particle_nhits = particle_nhits[m.major_particle_id];
    tracks.push_back(m);
  }
  return tracks;
}

// The TrackML score of one event: hit_ids/track_ids is the submission (every truth hit exactly
// once, track ids >= 0); DataError otherwise. 1.0 for a perfect answer.
inline double trackml_score(const Truth& truth, const std::vector<int32_t>& hit_ids,
                            const std::vector<int64_t>& track_ids) {
  const auto tracks = analyze_tracks(truth, hit_ids, track_ids);
  // long double sums: exact for float32 weights within ~2^40 of each other, so a perfect
  // submission scores exactly 1.
  long double total = 0;
  for (float w : truth.weight) total += static_cast<long double>(w);
  if (!(total > 0)) throw DataError("truth", 0, "weight", "the weights sum to zero: nothing to score");
  long double good = 0;
  for (const auto& t : tracks)
    if (t.good()) good += static_cast<long double>(t.major_weight);
  return static_cast<double>(good / total);
}

// ---- submission files -------------------------------------------------------------------------

// A submission for one or more events: one row per hit.
struct Submission {
  std::vector<int64_t> event_id;
  std::vector<int32_t> hit_id;
  std::vector<int64_t> track_id;
  std::size_t size() const { return hit_id.size(); }
  void add(int64_t event, int32_t hit, int64_t track) {
    event_id.push_back(event);
    hit_id.push_back(hit);
    track_id.push_back(track);
  }
  // The (hit_id, track_id) columns of one event, in file order.
  std::pair<std::vector<int32_t>, std::vector<int64_t>> event(int64_t id) const {
    std::pair<std::vector<int32_t>, std::vector<int64_t>> out;
    for (std::size_t i = 0; i < size(); ++i)
      if (event_id[i] == id) {
        out.first.push_back(hit_id[i]);
        out.second.push_back(track_id[i]);
      }
    return out;
  }
};

inline constexpr std::string_view kSubmissionHeader = "event_id,hit_id,track_id";

namespace detail {
// Throws when an (event_id, hit_id) pair appears twice; `line_of(i)` gives row i's line.
template <class LineOf>
void check_unique_hits(const Submission& s, const std::string& name, LineOf line_of) {
  std::vector<std::size_t> order(s.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return s.event_id[a] != s.event_id[b] ? s.event_id[a] < s.event_id[b]
           : s.hit_id[a] != s.hit_id[b]   ? s.hit_id[a] < s.hit_id[b]
                                          : a < b;
  });
  for (std::size_t k = 1; k < order.size(); ++k) {
    const std::size_t a = order[k - 1], b = order[k];
    if (s.event_id[a] == s.event_id[b] && s.hit_id[a] == s.hit_id[b])
      throw DataError(name, line_of(b), "hit_id",
                      "hit " + std::to_string(s.hit_id[b]) + " of event " + std::to_string(s.event_id[b]) +
                          " appears twice (first on line " + std::to_string(line_of(a)) +
                          "); every hit must appear exactly once");
  }
}
}  // namespace detail

// Parses submission text; ids must be non-negative and each (event_id, hit_id) unique.
inline Submission parse_submission_buffer(const char* data, std::size_t size, const std::string& name) {
  CsvReader r(std::string_view(data, size), name);
  const int c_e = r.require("event_id"), c_h = r.require("hit_id"), c_t = r.require("track_id");
  Submission s;
  std::vector<int64_t> lines;
  while (r.next()) {
    s.add(r.get_i64(c_e, 0), r.get_i32(c_h, 0), r.get_i64(c_t, 0));
    lines.push_back(r.line());
  }
  detail::check_unique_hits(s, name, [&](std::size_t i) { return lines[i]; });
  return s;
}

inline Submission read_submission(const std::string& path) {
  const std::string text = read_text_file(path);
  return parse_submission_buffer(text.data(), text.size(), path);
}

// Writes the Kaggle submission CSV (atomically; .gz → gzip), refusing negative ids and repeats.
inline void write_submission(const std::string& path, const Submission& s) {
  if (s.event_id.size() != s.size() || s.track_id.size() != s.size())
    throw DataError(path, 0, "", "event_id, hit_id and track_id must have the same length");
  for (std::size_t i = 0; i < s.size(); ++i)
    if (s.event_id[i] < 0 || s.hit_id[i] < 0 || s.track_id[i] < 0)
      throw DataError(path, 0, s.event_id[i] < 0 ? "event_id" : s.hit_id[i] < 0 ? "hit_id" : "track_id",
                      "cannot write a negative id (row " + std::to_string(i) + ")");
  detail::check_unique_hits(s, path, [](std::size_t i) { return static_cast<int64_t>(i) + 2; });
  CsvWriter w(path, 32 + s.size() * 24);
  w.header(kSubmissionHeader);
  for (std::size_t i = 0; i < s.size(); ++i) {
    w.field(s.event_id[i]);
    w.field(s.hit_id[i]);
    w.field(s.track_id[i]);
    w.end_row();
  }
  write_text_file(path, w.text());
}

// ---- efficiency and purity (FM4NPP calculate_tracking_eff_purity) -----------------------------

struct EffPurityConfig {
  int min_truth_hits = 3;      // a truth track enters the efficiency with at least this many hits
  int min_cluster_hits = 4;    // a predicted cluster counts with at least this many hits
  double pt_min = 0.0;         // truth tracks (and clusters by their majority) with pT below are dropped
  double pt_max = 3.0;         // bins cover [0, pt_max) ...
  int n_bins = 15;             // ... in n_bins equal bins
  bool skip_noise = true;      // particle 0 (noise) is never a truth track
  int64_t unassigned = -1;     // predicted label of hits in no cluster
};

struct EffPurity {
  // Overall: efficient truth tracks / truth tracks; mean majority fraction over clusters; fake
  // rate = clusters whose majority holds <= 50% of their hits.
  double efficiency = 0, purity = 0, fake_rate = 0;
  int64_t n_truth = 0, n_efficient = 0, n_clusters = 0, n_fake = 0;
  // Per pT bin (truth tracks by their pT, clusters by their majority particle's pT; noise-majority
  // clusters and pT >= pt_max only enter the totals). NaN where a bin is empty.
  std::vector<double> bin_edges;
  std::vector<int64_t> truth_per_bin, efficient_per_bin, clusters_per_bin;
  std::vector<double> efficiency_per_bin, purity_per_bin;
};

// Per hit: the truth particle, the predicted cluster label, and the pT of the truth particle (the
// first hit's value is used for each particle). A truth track is efficient when a cluster with
// >= min_cluster_hits hits has it as majority (ties: lower id), holds > 50% of its hits and is
// > 50% pure.
inline EffPurity efficiency_purity(const std::vector<uint64_t>& particle_ids, const std::vector<int64_t>& labels,
                                   const std::vector<float>& pt, const EffPurityConfig& cfg = {}) {
  const std::size_t n = particle_ids.size();
  if (labels.size() != n || pt.size() != n)
    throw DataError("efficiency_purity", 0, "",
                    "particle_ids, labels and pt must have one entry per hit (got " + std::to_string(n) + ", " +
                        std::to_string(labels.size()) + ", " + std::to_string(pt.size()) + ")");
  if (cfg.n_bins < 1 || !(cfg.pt_max > 0))
    throw ConfigError("efficiency_purity: n_bins must be >= 1 and pt_max > 0");
  struct Particle {
    int64_t nhits = 0;
    double pt = 0;
    bool efficient = false;
  };
  std::unordered_map<uint64_t, Particle> parts;
  parts.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    auto [it, fresh] = parts.try_emplace(particle_ids[i]);
    if (fresh) it->second.pt = pt[i];
    ++it->second.nhits;
  }
  auto selected = [&](uint64_t p, const Particle& q) {
    return !(cfg.skip_noise && p == 0) && q.nhits >= cfg.min_truth_hits && q.pt >= cfg.pt_min;
  };
  const double width = cfg.pt_max / cfg.n_bins;
  auto bin_of = [&](double v) -> int {
    if (!(v >= 0) || v >= cfg.pt_max) return -1;
    return std::min(cfg.n_bins - 1, static_cast<int>(v / width));
  };
  EffPurity r;
  for (int b = 0; b <= cfg.n_bins; ++b) r.bin_edges.push_back(b * width);
  r.truth_per_bin.assign(cfg.n_bins, 0);
  r.efficient_per_bin.assign(cfg.n_bins, 0);
  r.clusters_per_bin.assign(cfg.n_bins, 0);
  std::vector<double> purity_sum(cfg.n_bins, 0.0);

  // Hits sorted by (cluster, particle): one pass finds each cluster's majority.
  std::vector<std::size_t> order;
  order.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    if (labels[i] != cfg.unassigned) order.push_back(i);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return labels[a] != labels[b] ? labels[a] < labels[b] : particle_ids[a] < particle_ids[b];
  });
  double purity_total = 0;
  std::size_t k = 0;
  while (k < order.size()) {
    const int64_t c = labels[order[k]];
    int64_t size = 0, major_n = 0;
    uint64_t major = 0;
    while (k < order.size() && labels[order[k]] == c) {
      const uint64_t p = particle_ids[order[k]];
      int64_t m = 0;
      for (; k < order.size() && labels[order[k]] == c && particle_ids[order[k]] == p; ++k) ++m;
      size += m;
      if (m > major_n) major_n = m, major = p;
    }
    if (size < cfg.min_cluster_hits) continue;
    Particle& mp = parts[major];
    // The pT cut drops clusters made of a low-pT particle; noise-majority clusters (fakes) stay.
    if (mp.pt < cfg.pt_min && !(cfg.skip_noise && major == 0)) continue;
    const double frac = static_cast<double>(major_n) / static_cast<double>(size);
    ++r.n_clusters;
    purity_total += frac;
    if (2 * major_n <= size) ++r.n_fake;
    const bool noise = cfg.skip_noise && major == 0;
    if (!noise) {
      const int b = bin_of(mp.pt);
      if (b >= 0) ++r.clusters_per_bin[b], purity_sum[b] += frac;
    }
    if (!noise && 2 * major_n > size && 2 * major_n > mp.nhits) mp.efficient = true;
  }
  for (const auto& [p, q] : parts) {
    if (!selected(p, q)) continue;
    ++r.n_truth;
    r.n_efficient += q.efficient;
    const int b = bin_of(q.pt);
    if (b >= 0) ++r.truth_per_bin[b], r.efficient_per_bin[b] += q.efficient;
  }
  const double nan = std::nan("");
  auto ratio = [nan](double num, int64_t den) { return den ? num / static_cast<double>(den) : nan; };
  r.efficiency = ratio(static_cast<double>(r.n_efficient), r.n_truth);
  r.purity = ratio(purity_total, r.n_clusters);
  r.fake_rate = ratio(static_cast<double>(r.n_fake), r.n_clusters);
  for (std::size_t b = 0; b < static_cast<std::size_t>(cfg.n_bins); ++b) {
    r.efficiency_per_bin.push_back(ratio(static_cast<double>(r.efficient_per_bin[b]), r.truth_per_bin[b]));
    r.purity_per_bin.push_back(ratio(purity_sum[b], r.clusters_per_bin[b]));
  }
  return r;
}

// The same from TrackML files: truth gives each hit's particle, particles give pT = hypot(px, py)
// (a particle missing from the particles table takes its hit's true tpx, tpy).
inline EffPurity efficiency_purity(const Truth& truth, const Particles& particles,
                                   const std::vector<int32_t>& hit_ids, const std::vector<int64_t>& track_ids,
                                   const EffPurityConfig& cfg = {}) {
  const std::vector<int64_t> where = detail::match_submission(truth, hit_ids, track_ids);
  std::unordered_map<uint64_t, float> pt_of;
  pt_of.reserve(particles.size());
  for (std::size_t i = 0; i < particles.size(); ++i)
    pt_of[particles.particle_id[i]] = static_cast<float>(std::hypot(double(particles.px[i]), double(particles.py[i])));
  std::vector<int64_t> labels(truth.size());
  std::vector<float> pt(truth.size());
  for (std::size_t t = 0; t < truth.size(); ++t) {
    labels[t] = track_ids[static_cast<std::size_t>(where[t])];
    const auto it = pt_of.find(truth.particle_id[t]);
    pt[t] = it != pt_of.end() ? it->second
                              : static_cast<float>(std::hypot(double(truth.tpx[t]), double(truth.tpy[t])));
  }
  EffPurityConfig c = cfg;
  c.unassigned = std::numeric_limits<int64_t>::min();  // submissions have no unassigned hits
  return efficiency_purity(truth.particle_id, labels, pt, c);
}

// ---- adjusted Rand index ------------------------------------------------------------------------

// ARI of two labelings of the same points, as sklearn.metrics.adjusted_rand_score (every label
// value, -1 included, is an ordinary cluster): from the pair confusion counts,
// ARI = 2 (tp tn - fn fp) / ((tp + fn)(fn + tn) + (tp + fp)(fp + tn)), and 1 when fn = fp = 0.
template <class A, class B>
double adjusted_rand_index(const std::vector<A>& truth, const std::vector<B>& pred) {
  if (truth.size() != pred.size())
    throw DataError("adjusted_rand_index", 0, "",
                    "the labelings have different lengths (" + std::to_string(truth.size()) + " and " +
                        std::to_string(pred.size()) + ")");
  const std::size_t n = truth.size();
  // Dense ids for the labels of each side, then the contingency counts n_ij by sorting pairs.
  auto dense = [n](const auto& v) {
    using T = typename std::decay_t<decltype(v)>::value_type;
    std::vector<T> u(v.begin(), v.end());
    std::sort(u.begin(), u.end());
    u.erase(std::unique(u.begin(), u.end()), u.end());
    std::vector<uint64_t> d(n);
    for (std::size_t i = 0; i < n; ++i)
      d[i] = static_cast<uint64_t>(std::lower_bound(u.begin(), u.end(), v[i]) - u.begin());
    return std::make_pair(d, static_cast<uint64_t>(u.size()));
  };
  const auto [ta, ka] = dense(truth);
  const auto [pb, kb] = dense(pred);
  std::vector<int64_t> row(ka, 0), col(kb, 0);
  std::vector<uint64_t> cell(n);
  for (std::size_t i = 0; i < n; ++i) {
    ++row[ta[i]];
    ++col[pb[i]];
    cell[i] = ta[i] * kb + pb[i];
  }
  std::sort(cell.begin(), cell.end());
  long double sum_sq = 0, sum_row = 0, sum_col = 0;
  for (std::size_t i = 0; i < n;) {
    std::size_t j = i;
    while (j < n && cell[j] == cell[i]) ++j;
    sum_sq += static_cast<long double>(j - i) * static_cast<long double>(j - i);
    i = j;
  }
  for (int64_t c : row) sum_row += static_cast<long double>(c) * c;
  for (int64_t c : col) sum_col += static_cast<long double>(c) * c;
  // Ordered pair counts as sklearn's pair_confusion_matrix.
  const long double nn = static_cast<long double>(n);
  const long double tp = sum_sq - nn;
  const long double fp = sum_col - sum_sq;
  const long double fn = sum_row - sum_sq;
  const long double tn = nn * nn - fp - fn - sum_sq;
  if (fn == 0 && fp == 0) return 1.0;
  return static_cast<double>(2.0L * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)));
}

}  // namespace mambatrack::data
