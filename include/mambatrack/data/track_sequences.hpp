// Per-particle module sequences of one TrackML event (MAMBA-PT's track dataset): hits joined with
// truth on hit_id, kept in the chosen volumes, noise (particle_id 0) dropped, grouped by particle,
// ordered along the track (distance |x_hit - v_production| ascending, or hit_id as MAMBA-PT),
// optionally one hit per (volume, layer), length and pT cuts, framed as [CLS] m1 ... mn [SEP].
// Labels per track: |p| = sqrt(px²+py²+pz²), pT = sqrt(px²+py²) (production momentum) and q.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "mambatrack/core/error.hpp"
#include "mambatrack/data/event.hpp"
#include "mambatrack/data/tokenizer.hpp"

namespace mambatrack::data {

enum class HitOrder {
  kVertexDistance,  // distance from the particle's production vertex (the physical order)
  kHitId,           // ascending hit_id: MAMBA-PT's order ((volume, layer, module) order)
};
enum class DuplicateLayers {
  kKeepAll,    // every hit (MAMBA-PT)
  kKeepFirst,  // the first hit (in the chosen order) per (volume_id, layer_id)
};
enum class LongTracks {
  kDrop,      // tracks with more than max_hits hits are dropped
  kTruncate,  // keep their first max_hits hits
};

struct TrackSequenceOptions {
  std::vector<int32_t> volumes{7, 8, 9};  // pixel detector; empty = all volumes
  int64_t min_hits = 4;                   // MAMBA-PT track_length_range [4, 8], inclusive
  int64_t max_hits = 8;                   // 0 = no upper limit
  LongTracks long_tracks = LongTracks::kDrop;
  double min_pt = 0.0;  // GeV/c, on the production pT; 0 = no cut (MAMBA-PT has none)
  HitOrder order = HitOrder::kVertexDistance;
  DuplicateLayers duplicates = DuplicateLayers::kKeepAll;
};

// Tracks as one packed array: track i has tokens[offsets[i] .. offsets[i+1]) = [CLS] ... [SEP].
struct TrackSequences {
  std::vector<int32_t> tokens;
  std::vector<int32_t> hit_id;       // parallel to tokens; -1 at CLS and SEP
  std::vector<int64_t> offsets{0};   // size() + 1 entries
  std::vector<int64_t> event_id;     // per track
  std::vector<uint64_t> particle_id;
  std::vector<float> p, pt;          // GeV/c
  std::vector<int32_t> q;

  int64_t size() const { return static_cast<int64_t>(offsets.size()) - 1; }
  int64_t length(int64_t i) const { return offsets[i + 1] - offsets[i]; }
  int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
  const int32_t* sequence(int64_t i) const { return tokens.data() + offsets[i]; }

  void append(const TrackSequences& o) {
    const int64_t base = offsets.back();
    tokens.insert(tokens.end(), o.tokens.begin(), o.tokens.end());
    hit_id.insert(hit_id.end(), o.hit_id.begin(), o.hit_id.end());
    for (std::size_t i = 1; i < o.offsets.size(); ++i) offsets.push_back(base + o.offsets[i]);
    event_id.insert(event_id.end(), o.event_id.begin(), o.event_id.end());
    particle_id.insert(particle_id.end(), o.particle_id.begin(), o.particle_id.end());
    p.insert(p.end(), o.p.begin(), o.p.end());
    pt.insert(pt.end(), o.pt.begin(), o.pt.end());
    q.insert(q.end(), o.q.begin(), o.q.end());
  }
};

// Tracks come out sorted by particle_id. Throws DataError when the event has no truth, when a
// truth hit_id is not in hits, or when a particle with hits is missing from particles.
inline TrackSequences build_track_sequences(const Event& event, const Tokenizer& tokenizer,
                                            const TrackSequenceOptions& opt = {}) {
  const Hits& hits = event.hits;
  const Truth& truth = event.truth;
  const Particles& parts = event.particles;
  const std::string where = "event " + std::to_string(event.event_id);
  if (truth.size() == 0) throw DataError(where + " truth", 0, "", "the event has no truth; track sequences need truth particle_ids");
  MAMBATRACK_CHECK(opt.min_hits >= 0 && (opt.max_hits == 0 || opt.max_hits >= opt.min_hits), ConfigError,
                   "track sequences: need 0 <= min_hits <= max_hits (or max_hits = 0), got min_hits ",
                   opt.min_hits, ", max_hits ", opt.max_hits);

  std::unordered_map<int32_t, int64_t> hit_row;
  hit_row.reserve(hits.size() * 2);
  for (std::size_t i = 0; i < hits.size(); ++i) hit_row.emplace(hits.hit_id[i], static_cast<int64_t>(i));
  std::unordered_map<uint64_t, int64_t> part_row;
  part_row.reserve(parts.size() * 2);
  for (std::size_t i = 0; i < parts.size(); ++i) part_row.emplace(parts.particle_id[i], static_cast<int64_t>(i));
  const std::unordered_set<int32_t> volumes(opt.volumes.begin(), opt.volumes.end());

  struct Entry {
    uint64_t particle;
    double key;
    int32_t hit_id;
    int64_t row;
  };
  std::vector<Entry> entries;
  entries.reserve(truth.size());
  for (std::size_t t = 0; t < truth.size(); ++t) {
    const uint64_t pid = truth.particle_id[t];
    if (pid == 0) continue;
    auto h = hit_row.find(truth.hit_id[t]);
    if (h == hit_row.end())
      throw DataError(where + " truth", static_cast<int64_t>(t) + 2, "hit_id",
                      "hit_id " + std::to_string(truth.hit_id[t]) + " is not in the hits");
    const int64_t r = h->second;
    if (!volumes.empty() && !volumes.count(hits.volume_id[r])) continue;
    double key = static_cast<double>(hits.hit_id[r]);
    if (opt.order == HitOrder::kVertexDistance) {
      auto pr = part_row.find(pid);
      if (pr == part_row.end())
        throw DataError(where + " particles", 0, "particle_id",
                        "particle " + std::to_string(pid) + " has hits but is not in the particles");
      const int64_t j = pr->second;
      const double dx = double(hits.x[r]) - parts.vx[j], dy = double(hits.y[r]) - parts.vy[j],
                   dz = double(hits.z[r]) - parts.vz[j];
      key = dx * dx + dy * dy + dz * dz;
    }
    entries.push_back({pid, key, hits.hit_id[r], r});
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    if (a.particle != b.particle) return a.particle < b.particle;
    if (a.key != b.key) return a.key < b.key;
    return a.hit_id < b.hit_id;
  });

  TrackSequences out;
  std::vector<int64_t> keep;
  std::vector<std::pair<int32_t, int32_t>> layers_seen;
  for (std::size_t b = 0; b < entries.size();) {
    std::size_t e = b;
    while (e < entries.size() && entries[e].particle == entries[b].particle) ++e;
    const uint64_t pid = entries[b].particle;
    keep.clear();
    layers_seen.clear();
    for (std::size_t i = b; i < e; ++i) {
      const int64_t r = entries[i].row;
      if (opt.duplicates == DuplicateLayers::kKeepFirst) {
        std::pair<int32_t, int32_t> vl{hits.volume_id[r], hits.layer_id[r]};
        if (std::find(layers_seen.begin(), layers_seen.end(), vl) != layers_seen.end()) continue;
        layers_seen.push_back(vl);
      }
      keep.push_back(r);
    }
    b = e;
    if (static_cast<int64_t>(keep.size()) < opt.min_hits) continue;
    if (opt.max_hits > 0 && static_cast<int64_t>(keep.size()) > opt.max_hits) {
      if (opt.long_tracks == LongTracks::kDrop) continue;
      keep.resize(static_cast<std::size_t>(opt.max_hits));
    }
    auto pr = part_row.find(pid);
    if (pr == part_row.end())
      throw DataError(where + " particles", 0, "particle_id",
                      "particle " + std::to_string(pid) + " has hits but is not in the particles");
    const int64_t j = pr->second;
    const double px = parts.px[j], py = parts.py[j], pz = parts.pz[j];
    const double pt = std::sqrt(px * px + py * py);
    if (pt < opt.min_pt) continue;
    out.tokens.push_back(Tokenizer::kCls);
    out.hit_id.push_back(-1);
    for (int64_t r : keep) {
      out.tokens.push_back(tokenizer.token(hits.volume_id[r], hits.layer_id[r], hits.module_id[r]));
      out.hit_id.push_back(hits.hit_id[r]);
    }
    out.tokens.push_back(Tokenizer::kSep);
    out.hit_id.push_back(-1);
    out.offsets.push_back(static_cast<int64_t>(out.tokens.size()));
    out.event_id.push_back(event.event_id);
    out.particle_id.push_back(pid);
    out.p.push_back(static_cast<float>(std::sqrt(px * px + py * py + pz * pz)));
    out.pt.push_back(static_cast<float>(pt));
    out.q.push_back(parts.q[j]);
  }
  return out;
}

}  // namespace mambatrack::data
