// TrackML (Kaggle) event files: eventNNNNNNNNN-{hits,cells,particles,truth}.csv[.gz] and
// detectors.csv, read into and written from the structs of event.hpp. Columns are found by header
// name (particles with or without particle_type; extra columns ignored); particle_id is uint64;
// floats are float32 as stored (detectors: float64). Writers emit exactly the Kaggle layout
// (header, ',', LF, shortest round-trip floats) atomically, gzip-compressed for a .gz name.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "mambatrack/core/error.hpp"
#include "mambatrack/data/csv.hpp"
#include "mambatrack/data/event.hpp"

namespace mambatrack::data {

inline constexpr std::string_view kHitsHeader = "hit_id,x,y,z,volume_id,layer_id,module_id";
inline constexpr std::string_view kCellsHeader = "hit_id,ch0,ch1,value";
inline constexpr std::string_view kParticlesHeader = "particle_id,vx,vy,vz,px,py,pz,q,nhits";
inline constexpr std::string_view kParticlesTypeHeader =
    "particle_id,particle_type,vx,vy,vz,px,py,pz,q,nhits";
inline constexpr std::string_view kTruthHeader = "hit_id,particle_id,tx,ty,tz,tpx,tpy,tpz,weight";
inline constexpr std::string_view kDetectorsHeader =
    "volume_id,layer_id,module_id,cx,cy,cz,rot_xu,rot_xv,rot_xw,rot_yu,rot_yv,rot_yw,rot_zu,rot_zv,"
    "rot_zw,module_t,module_minhu,module_maxhu,module_hv,pitch_u,pitch_v";

// ---- parsing text already in memory (the file readers and the fuzz target use these) ---------
// Ids (hit_id, volume/layer/module ids, channels, nhits) must be non-negative int32.

inline Hits parse_hits_buffer(const char* data, std::size_t size, const std::string& name) {
  CsvReader r(std::string_view(data, size), name);
  const int c_id = r.require("hit_id"), c_x = r.require("x"), c_y = r.require("y"), c_z = r.require("z");
  const int c_vol = r.require("volume_id"), c_lay = r.require("layer_id"), c_mod = r.require("module_id");
  Hits h;
  const std::size_t n = r.estimate_rows();
  h.hit_id.reserve(n), h.x.reserve(n), h.y.reserve(n), h.z.reserve(n);
  h.volume_id.reserve(n), h.layer_id.reserve(n), h.module_id.reserve(n);
  while (r.next()) {
    h.hit_id.push_back(r.get_i32(c_id, 0));
    h.x.push_back(r.get_float(c_x));
    h.y.push_back(r.get_float(c_y));
    h.z.push_back(r.get_float(c_z));
    h.volume_id.push_back(r.get_i32(c_vol, 0));
    h.layer_id.push_back(r.get_i32(c_lay, 0));
    h.module_id.push_back(r.get_i32(c_mod, 0));
  }
  return h;
}

inline Cells parse_cells_buffer(const char* data, std::size_t size, const std::string& name) {
  CsvReader r(std::string_view(data, size), name);
  const int c_id = r.require("hit_id"), c_0 = r.require("ch0"), c_1 = r.require("ch1"),
            c_v = r.require("value");
  Cells c;
  const std::size_t n = r.estimate_rows();
  c.hit_id.reserve(n), c.ch0.reserve(n), c.ch1.reserve(n), c.value.reserve(n);
  while (r.next()) {
    c.hit_id.push_back(r.get_i32(c_id, 0));
    c.ch0.push_back(r.get_i32(c_0, 0));
    c.ch1.push_back(r.get_i32(c_1, 0));
    c.value.push_back(r.get_float(c_v));
  }
  return c;
}

inline Particles parse_particles_buffer(const char* data, std::size_t size, const std::string& name) {
  CsvReader r(std::string_view(data, size), name);
  const int c_id = r.require("particle_id"), c_type = r.find("particle_type");
  const int c_vx = r.require("vx"), c_vy = r.require("vy"), c_vz = r.require("vz");
  const int c_px = r.require("px"), c_py = r.require("py"), c_pz = r.require("pz");
  const int c_q = r.require("q"), c_n = r.require("nhits");
  Particles p;
  const std::size_t n = r.estimate_rows();
  p.particle_id.reserve(n);
  if (c_type >= 0) p.particle_type.reserve(n);
  for (auto* v : {&p.vx, &p.vy, &p.vz, &p.px, &p.py, &p.pz}) v->reserve(n);
  p.q.reserve(n), p.nhits.reserve(n);
  while (r.next()) {
    p.particle_id.push_back(r.get_u64(c_id));
    if (c_type >= 0) p.particle_type.push_back(r.get_i32(c_type));
    p.vx.push_back(r.get_float(c_vx));
    p.vy.push_back(r.get_float(c_vy));
    p.vz.push_back(r.get_float(c_vz));
    p.px.push_back(r.get_float(c_px));
    p.py.push_back(r.get_float(c_py));
    p.pz.push_back(r.get_float(c_pz));
    p.q.push_back(r.get_i32(c_q));
    p.nhits.push_back(r.get_i32(c_n, 0));
  }
  return p;
}

inline Truth parse_truth_buffer(const char* data, std::size_t size, const std::string& name) {
  CsvReader r(std::string_view(data, size), name);
  const int c_id = r.require("hit_id"), c_p = r.require("particle_id");
  const int c_tx = r.require("tx"), c_ty = r.require("ty"), c_tz = r.require("tz");
  const int c_px = r.require("tpx"), c_py = r.require("tpy"), c_pz = r.require("tpz");
  const int c_w = r.require("weight");
  Truth t;
  const std::size_t n = r.estimate_rows();
  t.hit_id.reserve(n), t.particle_id.reserve(n);
  for (auto* v : {&t.tx, &t.ty, &t.tz, &t.tpx, &t.tpy, &t.tpz, &t.weight}) v->reserve(n);
  while (r.next()) {
    t.hit_id.push_back(r.get_i32(c_id, 0));
    t.particle_id.push_back(r.get_u64(c_p));
    t.tx.push_back(r.get_float(c_tx));
    t.ty.push_back(r.get_float(c_ty));
    t.tz.push_back(r.get_float(c_tz));
    t.tpx.push_back(r.get_float(c_px));
    t.tpy.push_back(r.get_float(c_py));
    t.tpz.push_back(r.get_float(c_pz));
    const float w = r.get_float(c_w);
    if (w < 0) r.fail(c_w, "weight must be >= 0, got " + detail::quote_text(r.field(c_w)));
    t.weight.push_back(w);
  }
  return t;
}

inline std::vector<ModuleRecord> parse_detectors_buffer(const char* data, std::size_t size,
                                                        const std::string& name) {
  CsvReader r(std::string_view(data, size), name);
  const int c_vol = r.require("volume_id"), c_lay = r.require("layer_id"), c_mod = r.require("module_id");
  const int c_cx = r.require("cx"), c_cy = r.require("cy"), c_cz = r.require("cz");
  static constexpr const char* kRot[3][3] = {
      {"rot_xu", "rot_xv", "rot_xw"}, {"rot_yu", "rot_yv", "rot_yw"}, {"rot_zu", "rot_zv", "rot_zw"}};
  int c_rot[3][3];
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 3; ++b) c_rot[a][b] = r.require(kRot[a][b]);
  const int c_t = r.require("module_t"), c_minhu = r.require("module_minhu"),
            c_maxhu = r.require("module_maxhu"), c_hv = r.require("module_hv");
  const int c_pu = r.require("pitch_u"), c_pv = r.require("pitch_v");
  std::vector<ModuleRecord> out;
  out.reserve(r.estimate_rows());
  while (r.next()) {
    ModuleRecord m;
    m.volume_id = r.get_i32(c_vol, 0);
    m.layer_id = r.get_i32(c_lay, 0);
    m.module_id = r.get_i32(c_mod, 0);
    m.cx = r.get_double(c_cx);
    m.cy = r.get_double(c_cy);
    m.cz = r.get_double(c_cz);
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 3; ++b) m.rot[a][b] = r.get_double(c_rot[a][b]);
    m.thickness = r.get_double(c_t);
    m.min_hu = r.get_double(c_minhu);
    m.max_hu = r.get_double(c_maxhu);
    m.hv = r.get_double(c_hv);
    m.pitch_u = r.get_double(c_pu);
    m.pitch_v = r.get_double(c_pv);
    out.push_back(m);
  }
  return out;
}

// ---- files --------------------------------------------------------------------------------------

inline Hits read_hits(const std::string& path) {
  const std::string text = read_text_file(path);
  return parse_hits_buffer(text.data(), text.size(), path);
}
inline Cells read_cells(const std::string& path) {
  const std::string text = read_text_file(path);
  return parse_cells_buffer(text.data(), text.size(), path);
}
inline Particles read_particles(const std::string& path) {
  const std::string text = read_text_file(path);
  return parse_particles_buffer(text.data(), text.size(), path);
}
inline Truth read_truth(const std::string& path) {
  const std::string text = read_text_file(path);
  return parse_truth_buffer(text.data(), text.size(), path);
}
inline std::vector<ModuleRecord> read_detectors(const std::string& path) {
  const std::string text = read_text_file(path);
  return parse_detectors_buffer(text.data(), text.size(), path);
}

namespace detail {
// Every column of a struct of arrays must have as many entries as the first.
inline void check_column_size(const std::string& path, const char* column, std::size_t got,
                              std::size_t want) {
  if (got != want)
    throw DataError(path, 0, column,
                    "cannot write: the column has " + std::to_string(got) + " values but the table has " +
                        std::to_string(want) + " rows");
}
}  // namespace detail

// ---- formatting to text (the writers and the tests use these) --------------------------------

inline std::string format_hits(const Hits& h, const std::string& name = "hits.csv") {
  const std::size_t n = h.size();
  detail::check_column_size(name, "x", h.x.size(), n);
  detail::check_column_size(name, "y", h.y.size(), n);
  detail::check_column_size(name, "z", h.z.size(), n);
  detail::check_column_size(name, "volume_id", h.volume_id.size(), n);
  detail::check_column_size(name, "layer_id", h.layer_id.size(), n);
  detail::check_column_size(name, "module_id", h.module_id.size(), n);
  CsvWriter w(name, 64 + n * 48);
  w.header(kHitsHeader);
  for (std::size_t i = 0; i < n; ++i) {
    w.field(h.hit_id[i]);
    w.field(h.x[i], "x", i);
    w.field(h.y[i], "y", i);
    w.field(h.z[i], "z", i);
    w.field(h.volume_id[i]);
    w.field(h.layer_id[i]);
    w.field(h.module_id[i]);
    w.end_row();
  }
  return std::move(w.text());
}

inline std::string format_cells(const Cells& c, const std::string& name = "cells.csv") {
  const std::size_t n = c.size();
  detail::check_column_size(name, "ch0", c.ch0.size(), n);
  detail::check_column_size(name, "ch1", c.ch1.size(), n);
  detail::check_column_size(name, "value", c.value.size(), n);
  CsvWriter w(name, 32 + n * 28);
  w.header(kCellsHeader);
  for (std::size_t i = 0; i < n; ++i) {
    w.field(c.hit_id[i]);
    w.field(c.ch0[i]);
    w.field(c.ch1[i]);
    w.field(c.value[i], "value", i);
    w.end_row();
  }
  return std::move(w.text());
}

inline std::string format_particles(const Particles& p, const std::string& name = "particles.csv") {
  const std::size_t n = p.size();
  const bool typed = p.has_particle_type();
  if (typed) detail::check_column_size(name, "particle_type", p.particle_type.size(), n);
  detail::check_column_size(name, "vx", p.vx.size(), n);
  detail::check_column_size(name, "vy", p.vy.size(), n);
  detail::check_column_size(name, "vz", p.vz.size(), n);
  detail::check_column_size(name, "px", p.px.size(), n);
  detail::check_column_size(name, "py", p.py.size(), n);
  detail::check_column_size(name, "pz", p.pz.size(), n);
  detail::check_column_size(name, "q", p.q.size(), n);
  detail::check_column_size(name, "nhits", p.nhits.size(), n);
  CsvWriter w(name, 64 + n * 96);
  w.header(typed ? kParticlesTypeHeader : kParticlesHeader);
  for (std::size_t i = 0; i < n; ++i) {
    w.field(p.particle_id[i]);
    if (typed) w.field(p.particle_type[i]);
    w.field(p.vx[i], "vx", i);
    w.field(p.vy[i], "vy", i);
    w.field(p.vz[i], "vz", i);
    w.field(p.px[i], "px", i);
    w.field(p.py[i], "py", i);
    w.field(p.pz[i], "pz", i);
    w.field(p.q[i]);
    w.field(p.nhits[i]);
    w.end_row();
  }
  return std::move(w.text());
}

inline std::string format_truth(const Truth& t, const std::string& name = "truth.csv") {
  const std::size_t n = t.size();
  detail::check_column_size(name, "particle_id", t.particle_id.size(), n);
  detail::check_column_size(name, "tx", t.tx.size(), n);
  detail::check_column_size(name, "ty", t.ty.size(), n);
  detail::check_column_size(name, "tz", t.tz.size(), n);
  detail::check_column_size(name, "tpx", t.tpx.size(), n);
  detail::check_column_size(name, "tpy", t.tpy.size(), n);
  detail::check_column_size(name, "tpz", t.tpz.size(), n);
  detail::check_column_size(name, "weight", t.weight.size(), n);
  CsvWriter w(name, 64 + n * 96);
  w.header(kTruthHeader);
  for (std::size_t i = 0; i < n; ++i) {
    w.field(t.hit_id[i]);
    w.field(t.particle_id[i]);
    w.field(t.tx[i], "tx", i);
    w.field(t.ty[i], "ty", i);
    w.field(t.tz[i], "tz", i);
    w.field(t.tpx[i], "tpx", i);
    w.field(t.tpy[i], "tpy", i);
    w.field(t.tpz[i], "tpz", i);
    w.field(t.weight[i], "weight", i);
    w.end_row();
  }
  return std::move(w.text());
}

inline std::string format_detectors(const std::vector<ModuleRecord>& modules,
                                    const std::string& name = "detectors.csv") {
  CsvWriter w(name, 256 + modules.size() * 160);
  w.header(kDetectorsHeader);
  static constexpr const char* kRot[3][3] = {
      {"rot_xu", "rot_xv", "rot_xw"}, {"rot_yu", "rot_yv", "rot_yw"}, {"rot_zu", "rot_zv", "rot_zw"}};
  for (std::size_t i = 0; i < modules.size(); ++i) {
    const ModuleRecord& m = modules[i];
    w.field(m.volume_id);
    w.field(m.layer_id);
    w.field(m.module_id);
    w.field(m.cx, "cx", i);
    w.field(m.cy, "cy", i);
    w.field(m.cz, "cz", i);
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 3; ++b) w.field(m.rot[a][b], kRot[a][b], i);
    w.field(m.thickness, "module_t", i);
    w.field(m.min_hu, "module_minhu", i);
    w.field(m.max_hu, "module_maxhu", i);
    w.field(m.hv, "module_hv", i);
    w.field(m.pitch_u, "pitch_u", i);
    w.field(m.pitch_v, "pitch_v", i);
    w.end_row();
  }
  return std::move(w.text());
}

// Writers: the Kaggle format, replaced atomically; a name ending in .gz is gzip-compressed.
inline void write_hits(const std::string& path, const Hits& h) { write_text_file(path, format_hits(h, path)); }
inline void write_cells(const std::string& path, const Cells& c) { write_text_file(path, format_cells(c, path)); }
inline void write_particles(const std::string& path, const Particles& p) {
  write_text_file(path, format_particles(p, path));
}
inline void write_truth(const std::string& path, const Truth& t) { write_text_file(path, format_truth(t, path)); }
inline void write_detectors(const std::string& path, const std::vector<ModuleRecord>& modules) {
  write_text_file(path, format_detectors(modules, path));
}

// ---- events in a directory ------------------------------------------------------------------

// The files of one event found in a directory: prefix = dir/eventNNNNNNNNN.
struct EventFiles {
  std::string prefix;
  int64_t event_id = 0;
  bool hits = false, cells = false, particles = false, truth = false;
};

namespace detail {
// Splits "eventNNNNNNNNN-part.csv[.gz]" into (id, part); false for any other name.
inline bool parse_event_file_name(std::string_view name, int64_t& id, std::string_view& part) {
  if (name.size() < 5 + 9 + 1 + 1 + 4 || name.compare(0, 5, "event") != 0) return false;
  int64_t v = 0;
  for (std::size_t i = 5; i < 14; ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    v = v * 10 + (name[i] - '0');
  }
  if (name[14] != '-') return false;
  std::string_view rest = name.substr(15);
  if (ends_with(rest, ".csv.gz")) {
    rest.remove_suffix(7);
  } else if (ends_with(rest, ".csv")) {
    rest.remove_suffix(4);
  } else {
    return false;
  }
  if (rest.empty()) return false;
  for (char c : rest)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) return false;
  id = v;
  part = rest;
  return true;
}

inline std::string event_prefix(const std::string& dir, int64_t event_id) {
  if (event_id < 0 || event_id > 999999999)
    throw DataError(dir, 0, "event_id",
                    "event id " + std::to_string(event_id) + " does not fit the 9 digits of eventNNNNNNNNN");
  char buf[32];
  std::snprintf(buf, sizeof(buf), "event%09lld", static_cast<long long>(event_id));
  return (dir.empty() ? std::string() : (ends_with(dir, "/") ? dir : dir + "/")) + buf;
}

// prefix-part.csv if it exists, else prefix-part.csv.gz, else "".
inline std::string find_part(const std::string& prefix, const char* part) {
  std::error_code ec;
  const std::string plain = prefix + "-" + part + ".csv";
  if (std::filesystem::is_regular_file(plain, ec)) return plain;
  const std::string gz = plain + ".gz";
  if (std::filesystem::is_regular_file(gz, ec)) return gz;
  return {};
}
}  // namespace detail

// Every event with at least one file in `dir` (not recursive), sorted by event id.
inline std::vector<EventFiles> list_events(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) throw DataError(dir, 0, "", "cannot list the directory: " + ec.message());
  std::vector<EventFiles> events;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) throw DataError(dir, 0, "", "cannot list the directory: " + ec.message());
    const std::string name = it->path().filename().string();
    int64_t id = 0;
    std::string_view part;
    if (!detail::parse_event_file_name(name, id, part)) continue;
    auto found = std::find_if(events.begin(), events.end(), [&](const EventFiles& e) { return e.event_id == id; });
    if (found == events.end()) {
      events.push_back(EventFiles{detail::event_prefix(dir, id), id, false, false, false, false});
      found = events.end() - 1;
    }
    if (part == "hits") found->hits = true;
    if (part == "cells") found->cells = true;
    if (part == "particles") found->particles = true;
    if (part == "truth") found->truth = true;
  }
  std::sort(events.begin(), events.end(),
            [](const EventFiles& a, const EventFiles& b) { return a.event_id < b.event_id; });
  return events;
}

// Reads one event. `prefix_or_path` is dir/eventNNNNNNNNN or the path of any of its files. The
// hits file must exist; cells, particles and truth are read when asked for and present (plain
// .csv preferred over .csv.gz) and left empty otherwise.
inline Event read_event(const std::string& prefix_or_path, bool cells = true, bool particles = true,
                        bool truth = true) {
  std::string prefix = prefix_or_path;
  const auto slash = prefix.find_last_of('/');
  const std::string base = slash == std::string::npos ? prefix : prefix.substr(slash + 1);
  int64_t id = 0;
  std::string_view part;
  if (detail::parse_event_file_name(base, id, part)) {
    prefix.resize(prefix.size() - (base.size() - 14));
  } else {
    bool ok = base.size() == 14 && base.compare(0, 5, "event") == 0;
    for (std::size_t i = 5; ok && i < 14; ++i) ok = base[i] >= '0' && base[i] <= '9';
    if (!ok)
      throw DataError(prefix_or_path, 0, "",
                      "not an event prefix: expected dir/eventNNNNNNNNN (9 digits) or the path of one of "
                      "its -hits/-cells/-particles/-truth.csv[.gz] files");
    id = std::stoll(base.substr(5));
  }
  Event ev;
  ev.event_id = id;
  const std::string hits_path = detail::find_part(prefix, "hits");
  if (hits_path.empty())
    throw DataError(prefix + "-hits.csv", 0, "", "hits file not found (neither .csv nor .csv.gz)");
  ev.hits = read_hits(hits_path);
  if (cells) {
    const std::string p = detail::find_part(prefix, "cells");
    if (!p.empty()) ev.cells = read_cells(p);
  }
  if (particles) {
    const std::string p = detail::find_part(prefix, "particles");
    if (!p.empty()) ev.particles = read_particles(p);
  }
  if (truth) {
    const std::string p = detail::find_part(prefix, "truth");
    if (!p.empty()) ev.truth = read_truth(p);
  }
  return ev;
}

// Writes dir/eventNNNNNNNNN-hits.csv and, when not empty, -cells, -particles and -truth (".csv.gz"
// when gzip). The directory is created if missing.
inline void write_event(const std::string& dir, const Event& ev, bool gzip = false) {
  std::error_code ec;
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  if (ec) throw DataError(dir, 0, "", "cannot create the directory: " + ec.message());
  const std::string prefix = detail::event_prefix(dir, ev.event_id);
  const std::string ext = gzip ? ".csv.gz" : ".csv";
  write_hits(prefix + "-hits" + ext, ev.hits);
  if (ev.cells.size() > 0) write_cells(prefix + "-cells" + ext, ev.cells);
  if (ev.particles.size() > 0) write_particles(prefix + "-particles" + ext, ev.particles);
  if (ev.truth.size() > 0) write_truth(prefix + "-truth" + ext, ev.truth);
}

}  // namespace mambatrack::data
