// libFuzzer target for the CSV/TrackML readers: the first byte picks a parser (hits, cells,
// particles, truth, detectors, submission, or gzip-inflate then hits), the rest is the file. Any
// input either parses, and then formats and re-parses to the same values bit for bit, or throws
// DataError. Anything else (another exception, a crash, a sanitizer report) is a bug.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "mambatrack/data/score.hpp"
#include "mambatrack/data/trackml_io.hpp"

namespace {

using namespace mambatrack::data;

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void run(int kind, const char* d, std::size_t n) {
  switch (kind) {
    case 0: {
      const Hits h = parse_hits_buffer(d, n, "hits.csv");
      const std::string t = format_hits(h);
      const Hits g = parse_hits_buffer(t.data(), t.size(), "again");
      check(same_bits(h.hit_id, g.hit_id) && same_bits(h.x, g.x) && same_bits(h.y, g.y) && same_bits(h.z, g.z) &&
            same_bits(h.volume_id, g.volume_id) && same_bits(h.layer_id, g.layer_id) &&
            same_bits(h.module_id, g.module_id));
      break;
    }
    case 1: {
      const Cells c = parse_cells_buffer(d, n, "cells.csv");
      const std::string t = format_cells(c);
      const Cells g = parse_cells_buffer(t.data(), t.size(), "again");
      check(same_bits(c.hit_id, g.hit_id) && same_bits(c.ch0, g.ch0) && same_bits(c.ch1, g.ch1) &&
            same_bits(c.value, g.value));
      break;
    }
    case 2: {
      const Particles p = parse_particles_buffer(d, n, "particles.csv");
      const std::string t = format_particles(p);
      const Particles g = parse_particles_buffer(t.data(), t.size(), "again");
      check(same_bits(p.particle_id, g.particle_id) && same_bits(p.particle_type, g.particle_type) &&
            same_bits(p.vx, g.vx) && same_bits(p.vy, g.vy) && same_bits(p.vz, g.vz) && same_bits(p.px, g.px) &&
            same_bits(p.py, g.py) && same_bits(p.pz, g.pz) && same_bits(p.q, g.q) && same_bits(p.nhits, g.nhits));
      break;
    }
    case 3: {
      const Truth r = parse_truth_buffer(d, n, "truth.csv");
      const std::string t = format_truth(r);
      const Truth g = parse_truth_buffer(t.data(), t.size(), "again");
      check(same_bits(r.hit_id, g.hit_id) && same_bits(r.particle_id, g.particle_id) && same_bits(r.tx, g.tx) &&
            same_bits(r.ty, g.ty) && same_bits(r.tz, g.tz) && same_bits(r.tpx, g.tpx) && same_bits(r.tpy, g.tpy) &&
            same_bits(r.tpz, g.tpz) && same_bits(r.weight, g.weight));
      // Truth as submission: either a score in [0, 1] or a DataError (duplicate hits, zero weight).
      std::vector<int64_t> tracks(r.size());
      for (std::size_t i = 0; i < r.size(); ++i) tracks[i] = static_cast<int64_t>(r.particle_id[i] >> 1);
      try {
        const double s = trackml_score(r, r.hit_id, tracks);
        check(s >= 0.0 && s <= 1.0 + 1e-12);
      } catch (const mambatrack::DataError&) {
      }
      (void)adjusted_rand_index(r.particle_id, r.hit_id);
      break;
    }
    case 4: {
      const auto m = parse_detectors_buffer(d, n, "detectors.csv");
      const std::string t = format_detectors(m);
      const auto g = parse_detectors_buffer(t.data(), t.size(), "again");
      check(g.size() == m.size());
      for (std::size_t i = 0; i < m.size(); ++i) {
        check(m[i].volume_id == g[i].volume_id && m[i].layer_id == g[i].layer_id && m[i].module_id == g[i].module_id);
        check(std::memcmp(m[i].rot, g[i].rot, sizeof(m[i].rot)) == 0);
        const double a[] = {m[i].cx, m[i].cy, m[i].cz, m[i].thickness, m[i].min_hu, m[i].max_hu, m[i].hv,
                            m[i].pitch_u, m[i].pitch_v};
        const double b[] = {g[i].cx, g[i].cy, g[i].cz, g[i].thickness, g[i].min_hu, g[i].max_hu, g[i].hv,
                            g[i].pitch_u, g[i].pitch_v};
        check(std::memcmp(a, b, sizeof(a)) == 0);
      }
      break;
    }
    case 5: {
      const Submission s = parse_submission_buffer(d, n, "submission.csv");
      check(s.event_id.size() == s.size() && s.track_id.size() == s.size());
      break;
    }
    default: {
      const std::string text = inflate_gzip(d, n, "hits.csv.gz", std::size_t(1) << 22);
      (void)parse_hits_buffer(text.data(), text.size(), "hits.csv.gz");
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int kind = data[0] % 7;
  try {
    run(kind, reinterpret_cast<const char*>(data) + 1, size - 1);
  } catch (const mambatrack::DataError&) {
  }
  return 0;
}
