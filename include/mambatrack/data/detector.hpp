// TrackML detector geometry: the modules of detectors.csv with lookup by (volume, layer, module),
// local <-> global transforms (global = R * (u, v, w) + c, local = R^T * (global - c)), module
// shapes (trapezoid: half-length in u grows linearly from min_hu at v = -hv to max_hu at v = +hv),
// per-layer summaries with a (phi, z|r) grid for fast candidate search, and a built-in copy of the
// Kaggle TrackML layout generated from per-layer / per-ring parameters (no file needed).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "mambatrack/core/error.hpp"
#include "mambatrack/data/event.hpp"

namespace mambatrack::data {

constexpr double kPi = 3.14159265358979323846;

// Sensor technology, decided by the readout pitch along v (TrackML: pixel 0.05625 mm, short
// strips 1.2 mm, long strips 10.4-10.8 mm).
enum class SensorKind { kPixel, kShortStrip, kLongStrip };

// One module: a flat sensor, centre c, rotation R whose columns are the local axes u, v, w
// expressed in global coordinates.
struct Module {
  int32_t volume_id = 0, layer_id = 0, module_id = 0;
  std::array<double, 3> c{};
  double rot[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};  // rot[global axis][local axis]
  double thickness = 0, min_hu = 0, max_hu = 0, hv = 0, pitch_u = 0, pitch_v = 0;

  SensorKind kind() const {
    if (pitch_v <= 0.1) return SensorKind::kPixel;
    if (pitch_v <= 2.0) return SensorKind::kShortStrip;
    return SensorKind::kLongStrip;
  }
  // Local axis a (0 = u, 1 = v, 2 = w) in global coordinates.
  std::array<double, 3> axis(int a) const { return {rot[0][a], rot[1][a], rot[2][a]}; }
  std::array<double, 3> to_global(double u, double v, double w = 0) const {
    return {rot[0][0] * u + rot[0][1] * v + rot[0][2] * w + c[0],
            rot[1][0] * u + rot[1][1] * v + rot[1][2] * w + c[1],
            rot[2][0] * u + rot[2][1] * v + rot[2][2] * w + c[2]};
  }
  std::array<double, 3> to_local(double x, double y, double z) const {
    const double dx = x - c[0], dy = y - c[1], dz = z - c[2];
    return {rot[0][0] * dx + rot[1][0] * dy + rot[2][0] * dz,
            rot[0][1] * dx + rot[1][1] * dy + rot[2][1] * dz,
            rot[0][2] * dx + rot[1][2] * dy + rot[2][2] * dz};
  }
  // Half-length in u at local v (linear between the two v edges).
  double half_u_at(double v) const {
    return hv > 0 ? min_hu + (max_hu - min_hu) * (v + hv) / (2 * hv) : min_hu;
  }
  bool is_trapezoid() const { return min_hu != max_hu; }
  // True if local (u, v) lies inside the sensitive area, grown by `tol` mm on every side.
  bool contains(double u, double v, double tol = 0) const {
    return std::abs(v) <= hv + tol && std::abs(u) <= half_u_at(std::clamp(v, -hv, hv)) + tol;
  }
  double area() const { return 2 * hv * (min_hu + max_hu); }
};

// Summary of one layer: barrel cylinder (mean module-centre radius) or endcap disk (mean z),
// module count and sensitive extents computed from the module corners.
struct LayerInfo {
  int32_t volume_id = 0, layer_id = 0;
  bool barrel = true;
  double radius = 0;  // barrel: mean centre radius [mm]
  double z = 0;       // disk: mean centre z [mm]
  double r_min = 0, r_max = 0, z_min = 0, z_max = 0;  // extents of the sensitive surfaces
  int32_t n_modules = 0;
  int32_t first_module = 0;  // index of its first module in Detector::modules()
};

class Detector {
 public:
  Detector() = default;
  // Builds from detectors.csv rows (any order; modules are stored sorted by
  // (volume, layer, module)). Throws DataError on duplicate triples or bad shapes.
  explicit Detector(const std::vector<ModuleRecord>& records) { build(records); }

  // The Kaggle TrackML detector (18,728 modules) regenerated from its per-layer parameters.
  static Detector trackml_builtin() { return Detector(trackml_builtin_records()); }
  static std::vector<ModuleRecord> trackml_builtin_records();

  const std::vector<Module>& modules() const { return modules_; }
  const std::vector<LayerInfo>& layers() const { return layers_; }
  std::size_t size() const { return modules_.size(); }

  // Index into modules() of (volume, layer, module), or -1 if there is no such module.
  int64_t find(int32_t volume, int32_t layer, int32_t module) const {
    const int32_t li = find_layer(volume, layer);
    if (li < 0) return -1;
    const auto& ids = module_index_[static_cast<std::size_t>(li)];
    if (module < 0 || static_cast<std::size_t>(module) >= ids.size()) return -1;
    return ids[static_cast<std::size_t>(module)];
  }
  // Same, throwing DataError that names the triple when it is unknown.
  int64_t index(int32_t volume, int32_t layer, int32_t module) const {
    const int64_t i = find(volume, layer, module);
    if (i < 0) {
      std::ostringstream os;
      os << "unknown detector module (volume_id " << volume << ", layer_id " << layer
         << ", module_id " << module << "); the detector has " << modules_.size()
         << " modules in " << layers_.size() << " layers";
      throw DataError(os.str());
    }
    return i;
  }
  const Module& module(int32_t volume, int32_t layer, int32_t module) const {
    return modules_[static_cast<std::size_t>(index(volume, layer, module))];
  }
  // Index into layers() of (volume, layer), or -1.
  int32_t find_layer(int32_t volume, int32_t layer) const {
    if (volume < 0 || layer < 0 || volume > max_volume_ || layer > max_layer_) return -1;
    return layer_lookup_[static_cast<std::size_t>(volume * (max_layer_ + 1) + layer)];
  }
  const LayerInfo& layer(int32_t volume, int32_t layer) const {
    const int32_t li = find_layer(volume, layer);
    if (li < 0) {
      std::ostringstream os;
      os << "unknown detector layer (volume_id " << volume << ", layer_id " << layer << ")";
      throw DataError(os.str());
    }
    return layers_[static_cast<std::size_t>(li)];
  }
  // Layer index of a module index.
  int32_t layer_of(int64_t module_index) const {
    return module_layer_[static_cast<std::size_t>(module_index)];
  }

  // Appends to `out` the modules of layer `li` whose (phi, z) [barrel] or (phi, r) [disk]
  // bounding box meets [phi_lo, phi_hi] x [q_lo, q_hi] (phi in radians, may wrap past +-pi;
  // q = z or r in mm). Duplicates removed with `stamp` (caller scratch, sized by the call).
  void candidates(int32_t li, double phi_lo, double phi_hi, double q_lo, double q_hi,
                  std::vector<int32_t>& out, std::vector<uint32_t>& stamp,
                  uint32_t& stamp_value) const;

  // Back to detectors.csv rows (sorted), e.g. to write a detectors.csv beside simulated events.
  std::vector<ModuleRecord> records() const {
    std::vector<ModuleRecord> out(modules_.size());
    for (std::size_t i = 0; i < modules_.size(); ++i) {
      const Module& m = modules_[i];
      ModuleRecord& r = out[i];
      r.volume_id = m.volume_id;
      r.layer_id = m.layer_id;
      r.module_id = m.module_id;
      r.cx = m.c[0];
      r.cy = m.c[1];
      r.cz = m.c[2];
      for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) r.rot[a][b] = m.rot[a][b];
      r.thickness = m.thickness;
      r.min_hu = m.min_hu;
      r.max_hu = m.max_hu;
      r.hv = m.hv;
      r.pitch_u = m.pitch_u;
      r.pitch_v = m.pitch_v;
    }
    return out;
  }

 private:
  struct Grid {
    int32_t n_phi = 1, n_q = 1;
    double q_lo = 0, q_hi = 1;
    std::vector<int32_t> offsets;  // CSR over bins (n_phi * n_q + 1)
    std::vector<int32_t> items;    // module indices
  };

  void build(const std::vector<ModuleRecord>& records);
  void build_grid(int32_t li);

  std::vector<Module> modules_;
  std::vector<LayerInfo> layers_;
  std::vector<int32_t> module_layer_;
  std::vector<std::vector<int32_t>> module_index_;  // per layer: module_id -> index (-1)
  std::vector<int32_t> layer_lookup_;
  int32_t max_volume_ = -1, max_layer_ = -1;
  std::vector<Grid> grids_;
  // Per module: bounding box in (phi centre, phi half-width, q lo, q hi).
  std::vector<std::array<double, 4>> boxes_;
};

// ---------------------------------------------------------------------------------------------

inline void Detector::build(const std::vector<ModuleRecord>& records) {
  modules_.clear();
  modules_.reserve(records.size());
  for (const ModuleRecord& r : records) {
    Module m;
    m.volume_id = r.volume_id;
    m.layer_id = r.layer_id;
    m.module_id = r.module_id;
    m.c = {r.cx, r.cy, r.cz};
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 3; ++b) m.rot[a][b] = r.rot[a][b];
    m.thickness = r.thickness;
    m.min_hu = r.min_hu;
    m.max_hu = r.max_hu;
    m.hv = r.hv;
    m.pitch_u = r.pitch_u;
    m.pitch_v = r.pitch_v;
    if (!(m.hv > 0 && m.min_hu > 0 && m.max_hu > 0)) {
      std::ostringstream os;
      os << "module (volume_id " << m.volume_id << ", layer_id " << m.layer_id << ", module_id "
         << m.module_id << ") has non-positive half-lengths (min_hu " << m.min_hu << ", max_hu "
         << m.max_hu << ", hv " << m.hv << ")";
      throw DataError(os.str());
    }
    if (m.volume_id < 0 || m.layer_id < 0 || m.module_id < 0 || m.volume_id > 4095 ||
        m.layer_id > 4095 || m.module_id > (1 << 24)) {
      std::ostringstream os;
      os << "module id out of range (volume_id " << m.volume_id << ", layer_id " << m.layer_id
         << ", module_id " << m.module_id << "); expected volume and layer ids in [0, 4095] and "
         << "module ids in [0, 2^24]";
      throw DataError(os.str());
    }
    modules_.push_back(m);
  }
  std::stable_sort(modules_.begin(), modules_.end(), [](const Module& a, const Module& b) {
    if (a.volume_id != b.volume_id) return a.volume_id < b.volume_id;
    if (a.layer_id != b.layer_id) return a.layer_id < b.layer_id;
    return a.module_id < b.module_id;
  });

  layers_.clear();
  max_volume_ = max_layer_ = -1;
  for (const Module& m : modules_) {
    max_volume_ = std::max(max_volume_, m.volume_id);
    max_layer_ = std::max(max_layer_, m.layer_id);
  }
  layer_lookup_.assign(static_cast<std::size_t>((max_volume_ + 1) * (max_layer_ + 1)), -1);
  module_layer_.assign(modules_.size(), -1);
  module_index_.clear();
  for (std::size_t i = 0; i < modules_.size(); ++i) {
    const Module& m = modules_[i];
    if (layers_.empty() || layers_.back().volume_id != m.volume_id ||
        layers_.back().layer_id != m.layer_id) {
      LayerInfo L;
      L.volume_id = m.volume_id;
      L.layer_id = m.layer_id;
      L.first_module = static_cast<int32_t>(i);
      layers_.push_back(L);
      layer_lookup_[static_cast<std::size_t>(m.volume_id * (max_layer_ + 1) + m.layer_id)] =
          static_cast<int32_t>(layers_.size() - 1);
      module_index_.emplace_back();
    } else if (modules_[i - 1].module_id == m.module_id) {
      std::ostringstream os;
      os << "duplicate detector module (volume_id " << m.volume_id << ", layer_id " << m.layer_id
         << ", module_id " << m.module_id << ")";
      throw DataError(os.str());
    }
    const int32_t li = static_cast<int32_t>(layers_.size() - 1);
    layers_.back().n_modules++;
    module_layer_[i] = li;
    auto& ids = module_index_.back();
    if (ids.size() <= static_cast<std::size_t>(m.module_id))
      ids.resize(static_cast<std::size_t>(m.module_id) + 1, -1);
    ids[static_cast<std::size_t>(m.module_id)] = static_cast<int32_t>(i);
  }

  // Layer summaries: a layer is a barrel if its modules' w axes are (mostly) transverse.
  boxes_.assign(modules_.size(), {0, 0, 0, 0});
  for (LayerInfo& L : layers_) {
    double wz = 0, sum_r = 0, sum_z = 0;
    L.r_min = L.z_min = std::numeric_limits<double>::infinity();
    L.r_max = L.z_max = -std::numeric_limits<double>::infinity();
    for (int32_t k = 0; k < L.n_modules; ++k) {
      const Module& m = modules_[static_cast<std::size_t>(L.first_module + k)];
      wz += std::abs(m.rot[2][2]);
      sum_r += std::hypot(m.c[0], m.c[1]);
      sum_z += m.c[2];
    }
    L.barrel = wz / L.n_modules < 0.5;
    L.radius = sum_r / L.n_modules;
    L.z = sum_z / L.n_modules;
    for (int32_t k = 0; k < L.n_modules; ++k) {
      const std::size_t i = static_cast<std::size_t>(L.first_module + k);
      const Module& m = modules_[i];
      const double phi_c = std::atan2(m.c[1], m.c[0]);
      double dphi = 0, q_lo = std::numeric_limits<double>::infinity(), q_hi = -q_lo;
      // Corners and edge midpoints (the closest approach to the axis of a disk module lies
      // on an edge, not at a corner).
      const double pts[8][2] = {{-m.min_hu, -m.hv}, {m.min_hu, -m.hv}, {-m.max_hu, m.hv},
                                {m.max_hu, m.hv},   {0, -m.hv},         {0, m.hv},
                                {-0.5 * (m.min_hu + m.max_hu), 0},
                                {0.5 * (m.min_hu + m.max_hu), 0}};
      for (const auto& p : pts) {
        const auto g = m.to_global(p[0], p[1], 0);
        const double r = std::hypot(g[0], g[1]);
        L.r_min = std::min(L.r_min, r);
        L.r_max = std::max(L.r_max, r);
        L.z_min = std::min(L.z_min, g[2]);
        L.z_max = std::max(L.z_max, g[2]);
        double d = std::atan2(g[1], g[0]) - phi_c;
        d = std::remainder(d, 2 * kPi);
        dphi = std::max(dphi, std::abs(d));
        const double q = L.barrel ? g[2] : r;
        q_lo = std::min(q_lo, q);
        q_hi = std::max(q_hi, q);
      }
      // A module that surrounds the axis (not in TrackML) would need the full circle.
      if (!L.barrel && m.hv > 0 && std::hypot(m.c[0], m.c[1]) < m.hv) dphi = kPi;
      boxes_[i] = {phi_c, dphi, q_lo, q_hi};
    }
  }
  grids_.assign(layers_.size(), Grid{});
  for (int32_t li = 0; li < static_cast<int32_t>(layers_.size()); ++li) build_grid(li);
}

inline void Detector::build_grid(int32_t li) {
  const LayerInfo& L = layers_[static_cast<std::size_t>(li)];
  Grid& g = grids_[static_cast<std::size_t>(li)];
  g.q_lo = L.barrel ? L.z_min : L.r_min;
  g.q_hi = L.barrel ? L.z_max : L.r_max;
  if (!(g.q_hi > g.q_lo)) g.q_hi = g.q_lo + 1;
  g.n_q = L.barrel ? 32 : 8;
  g.n_phi = std::clamp(L.n_modules / (L.barrel ? 8 : 2), 8, 512);
  const int64_t n_bins = static_cast<int64_t>(g.n_phi) * g.n_q;
  std::vector<std::vector<int32_t>> bins(static_cast<std::size_t>(n_bins));
  const double phi_bin = 2 * kPi / g.n_phi, q_bin = (g.q_hi - g.q_lo) / g.n_q;
  for (int32_t k = 0; k < L.n_modules; ++k) {
    const int32_t i = L.first_module + k;
    const auto& b = boxes_[static_cast<std::size_t>(i)];
    const double eps = 1e-6;
    int64_t p0 = static_cast<int64_t>(std::floor((b[0] - b[1] - eps + kPi) / phi_bin));
    int64_t p1 = static_cast<int64_t>(std::floor((b[0] + b[1] + eps + kPi) / phi_bin));
    if (p1 - p0 >= g.n_phi) p1 = p0 + g.n_phi - 1;
    const int64_t q0 = std::clamp<int64_t>(
        static_cast<int64_t>(std::floor((b[2] - eps - g.q_lo) / q_bin)), 0, g.n_q - 1);
    const int64_t q1 = std::clamp<int64_t>(
        static_cast<int64_t>(std::floor((b[3] + eps - g.q_lo) / q_bin)), 0, g.n_q - 1);
    for (int64_t p = p0; p <= p1; ++p) {
      const int64_t pw = ((p % g.n_phi) + g.n_phi) % g.n_phi;
      for (int64_t q = q0; q <= q1; ++q)
        bins[static_cast<std::size_t>(pw * g.n_q + q)].push_back(i);
    }
  }
  g.offsets.assign(static_cast<std::size_t>(n_bins + 1), 0);
  for (int64_t b = 0; b < n_bins; ++b)
    g.offsets[static_cast<std::size_t>(b + 1)] =
        g.offsets[static_cast<std::size_t>(b)] +
        static_cast<int32_t>(bins[static_cast<std::size_t>(b)].size());
  g.items.clear();
  g.items.reserve(static_cast<std::size_t>(g.offsets.back()));
  for (const auto& b : bins) g.items.insert(g.items.end(), b.begin(), b.end());
}

inline void Detector::candidates(int32_t li, double phi_lo, double phi_hi, double q_lo,
                                 double q_hi, std::vector<int32_t>& out,
                                 std::vector<uint32_t>& stamp, uint32_t& stamp_value) const {
  const Grid& g = grids_[static_cast<std::size_t>(li)];
  if (stamp.size() != modules_.size()) {
    stamp.assign(modules_.size(), 0);
    stamp_value = 0;
  }
  if (++stamp_value == 0) {  // wrapped: clear once every 2^32 queries
    std::fill(stamp.begin(), stamp.end(), 0);
    stamp_value = 1;
  }
  if (q_hi < g.q_lo || q_lo > g.q_hi) return;
  const double phi_bin = 2 * kPi / g.n_phi, q_bin = (g.q_hi - g.q_lo) / g.n_q;
  int64_t p0 = static_cast<int64_t>(std::floor((phi_lo + kPi) / phi_bin));
  int64_t p1 = static_cast<int64_t>(std::floor((phi_hi + kPi) / phi_bin));
  if (p1 < p0) std::swap(p0, p1);
  if (p1 - p0 >= g.n_phi) p1 = p0 + g.n_phi - 1;
  const int64_t q0 = std::clamp<int64_t>(
      static_cast<int64_t>(std::floor((q_lo - g.q_lo) / q_bin)), 0, g.n_q - 1);
  const int64_t q1 = std::clamp<int64_t>(
      static_cast<int64_t>(std::floor((q_hi - g.q_lo) / q_bin)), 0, g.n_q - 1);
  for (int64_t p = p0; p <= p1; ++p) {
    const int64_t pw = ((p % g.n_phi) + g.n_phi) % g.n_phi;
    for (int64_t q = q0; q <= q1; ++q) {
      const std::size_t b = static_cast<std::size_t>(pw * g.n_q + q);
      for (int32_t j = g.offsets[b]; j < g.offsets[b + 1]; ++j) {
        const int32_t i = g.items[static_cast<std::size_t>(j)];
        if (stamp[static_cast<std::size_t>(i)] == stamp_value) continue;
        stamp[static_cast<std::size_t>(i)] = stamp_value;
        out.push_back(i);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Built-in TrackML layout. Parameters read off the real detectors.csv (shared/data/trackml):
// barrel staves: n_z rings of n_phi modules, module_id = iz * n_phi + iphi + 1, centre phi =
// -pi + (iphi + 1/2) 2pi/n_phi, centre radius r + dr on even rings and r - dr on odd rings,
// w axis turned by `tilt` from the radial direction, u = z x w, v = +z.
// Disks: rings of n modules at phi = -pi + (k + 1/2) 2pi/n, v radial outward, w = sign(z) z,
// |z| = |z_disk| + dz[k mod len]; module ids in order of phi (then radius) within the disk.

namespace detail {

struct BarrelSpec {
  int32_t volume, layer;
  double r;
  int32_t n_phi, n_z;
  double z_step, dr, tilt, hu, hv, t, pitch_u, pitch_v;
};
struct RingSpec {
  double r;
  int32_t n;
  double min_hu, max_hu;
  double dz[4];
  int32_t n_dz;
};
struct DiskGroupSpec {
  int32_t volume;
  int32_t sign;          // -1: endcap at negative z, layer_id grows with z
  double z[7];           // |z| of the disks, in layer_id order for the +z side
  int32_t n_disks;
  RingSpec rings[3];
  int32_t n_rings;
  double hv, t, pitch_u, pitch_v;
};

inline const std::vector<BarrelSpec>& trackml_barrels() {
  static const std::vector<BarrelSpec> specs = {
      {8, 2, 32, 16, 14, 70, 0.25, 0.14, 8.4, 36, 0.15, 0.05, 0.05625},
      {8, 4, 72, 32, 14, 70, 0.25, 0.14, 8.4, 36, 0.15, 0.05, 0.05625},
      {8, 6, 116, 52, 14, 70, 0.25, 0.14, 8.4, 36, 0.15, 0.05, 0.05625},
      {8, 8, 172, 78, 14, 70, 0.25, 0.14, 8.4, 36, 0.15, 0.05, 0.05625},
      {13, 2, 260, 40, 21, 103, 1.5, -0.15, 24, 54, 0.25, 0.08, 1.2},
      {13, 4, 360, 56, 21, 103, 1.5, -0.15, 24, 54, 0.25, 0.08, 1.2},
      {13, 6, 500, 78, 21, 103, 1.5, -0.15, 24, 54, 0.25, 0.08, 1.2},
      {13, 8, 660, 102, 21, 103, 1.5, -0.15, 24, 54, 0.25, 0.08, 1.2},
      {17, 2, 820, 120, 21, 103, 1.5, -0.15, 24, 54, 0.35, 0.12, 10.8},
      {17, 4, 1020, 152, 21, 103, 1.5, -0.15, 24, 54, 0.35, 0.12, 10.8},
  };
  return specs;
}

inline const std::vector<DiskGroupSpec>& trackml_disks() {
  const RingSpec pix_in{66, 40, 8.4, 8.4, {2.5, -2, 2, -2.5}, 4};
  const RingSpec pix_out{140, 68, 8.4, 8.4, {2, -2, 0, 0}, 2};
  const RingSpec ss0{318, 54, 16.4, 24.2, {-1.5, -4.5, 0, 0}, 2};
  const RingSpec ss1{470, 56, 24.2, 32.2, {4.5, 1.5, 0, 0}, 2};
  const RingSpec ss2{622, 60, 32.2, 40.0, {-1.5, -4.5, 0, 0}, 2};
  const RingSpec ls0{828, 48, 54, 64.2, {-2.5, -5.5, 0, 0}, 2};
  const RingSpec ls1{942, 50, 66, 72, {5.5, 2.5, 0, 0}, 2};
  static const std::vector<DiskGroupSpec> specs = {
      {7, -1, {600, 700, 820, 960, 1100, 1300, 1500}, 7, {pix_in, pix_out, {}}, 2, 36, 0.15,
       0.05, 0.05625},
      {9, +1, {600, 700, 820, 960, 1100, 1300, 1500}, 7, {pix_in, pix_out, {}}, 2, 36, 0.15,
       0.05, 0.05625},
      {12, -1, {1220, 1500, 1800, 2150, 2550, 2950}, 6, {ss0, ss1, ss2}, 3, 78, 0.25, 0.08, 1.2},
      {14, +1, {1220, 1500, 1800, 2150, 2550, 2950}, 6, {ss0, ss1, ss2}, 3, 78, 0.25, 0.08, 1.2},
      {16, -1, {1220, 1500, 1800, 2150, 2550, 2950}, 6, {ls0, ls1, {}}, 2, 78, 0.35, 0.12, 10.4},
      {18, +1, {1220, 1500, 1800, 2150, 2550, 2950}, 6, {ls0, ls1, {}}, 2, 78, 0.35, 0.12, 10.4},
  };
  return specs;
}

inline void set_axes(ModuleRecord& m, const double u[3], const double v[3], const double w[3]) {
  for (int a = 0; a < 3; ++a) {
    m.rot[a][0] = u[a];
    m.rot[a][1] = v[a];
    m.rot[a][2] = w[a];
  }
}

}  // namespace detail

inline std::vector<ModuleRecord> Detector::trackml_builtin_records() {
  std::vector<ModuleRecord> out;
  out.reserve(18728);
  // Volumes in id order: 7, 8, 9, 12, 13, 14, 16, 17, 18 (the caller sorts anyway).
  for (const auto& d : detail::trackml_disks()) {
    for (int32_t k = 0; k < d.n_disks; ++k) {
      // layer_id grows with z: on the -z side layer 2 is the farthest disk.
      const double abs_z = d.sign > 0 ? d.z[k] : d.z[d.n_disks - 1 - k];
      const int32_t layer = 2 * (k + 1);
      std::vector<ModuleRecord> disk;
      std::vector<std::array<double, 2>> keys;
      for (int32_t ri = 0; ri < d.n_rings; ++ri) {
        const detail::RingSpec& ring = d.rings[ri];
        for (int32_t j = 0; j < ring.n; ++j) {
          const double phi = -kPi + (j + 0.5) * 2 * kPi / ring.n;
          const double cp = std::cos(phi), sp = std::sin(phi);
          ModuleRecord m;
          m.volume_id = d.volume;
          m.layer_id = layer;
          m.cx = ring.r * cp;
          m.cy = ring.r * sp;
          m.cz = d.sign * (abs_z + ring.dz[j % ring.n_dz]);
          const double s = d.sign;
          const double u[3] = {s * sp, -s * cp, 0}, v[3] = {cp, sp, 0}, w[3] = {0, 0, s};
          detail::set_axes(m, u, v, w);
          m.thickness = d.t;
          m.min_hu = ring.min_hu;
          m.max_hu = ring.max_hu;
          m.hv = d.hv;
          m.pitch_u = d.pitch_u;
          m.pitch_v = d.pitch_v;
          disk.push_back(m);
          keys.push_back({phi, ring.r});
        }
      }
      std::vector<std::size_t> order(disk.size());
      for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        return keys[a] < keys[b];
      });
      for (std::size_t i = 0; i < order.size(); ++i) {
        disk[order[i]].module_id = static_cast<int32_t>(i + 1);
        out.push_back(disk[order[i]]);
      }
    }
  }
  for (const auto& b : detail::trackml_barrels()) {
    for (int32_t iz = 0; iz < b.n_z; ++iz) {
      const double z = (iz - 0.5 * (b.n_z - 1)) * b.z_step;
      const double r = b.r + (iz % 2 == 0 ? b.dr : -b.dr);
      for (int32_t ip = 0; ip < b.n_phi; ++ip) {
        const double phi = -kPi + (ip + 0.5) * 2 * kPi / b.n_phi;
        const double a = phi + b.tilt;
        ModuleRecord m;
        m.volume_id = b.volume;
        m.layer_id = b.layer;
        m.module_id = iz * b.n_phi + ip + 1;
        m.cx = r * std::cos(phi);
        m.cy = r * std::sin(phi);
        m.cz = z;
        const double u[3] = {-std::sin(a), std::cos(a), 0}, v[3] = {0, 0, 1},
                     w[3] = {std::cos(a), std::sin(a), 0};
        detail::set_axes(m, u, v, w);
        m.thickness = b.t;
        m.min_hu = m.max_hu = b.hu;
        m.hv = b.hv;
        m.pitch_u = b.pitch_u;
        m.pitch_v = b.pitch_v;
        out.push_back(m);
      }
    }
  }
  return out;
}

}  // namespace mambatrack::data
