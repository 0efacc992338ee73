// FM4NPP's per-event point pipeline. Features per point (E_n, η_n, φ_n, r_n) with r = √(x²+y²),
// φ = atan2(y, x), η = artanh(z/√(x²+y²+z²)), E_n = (E − μ_E)/σ_E and min-max η, φ, r (TPC
// constants by default, no clipping); a stable sort by r_n; k next-nearest neighbours: for row i
// the k rows j > i nearest in Euclidean (η_n, φ_n, r_n), nearest first, −100 where fewer exist
// (k-d tree, O(N log N)); the voxel raster scan (bucketize into an 8×8×6 grid, stable sort by cell
// id in sweep order EPR/RPE/REP/PER); the NeRF encoding [x, sin(2⁰x), cos(2⁰x), …, cos(2⁹x)].
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <unordered_map>
#include <vector>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/parallel.hpp"
#include "mambatrack/data/event.hpp"

namespace mambatrack::data {

constexpr float kKnnPad = -100.0f;        // missing neighbour slots (and the collator's padding)
constexpr int64_t kDefaultKnn = 30;       // FM4NPP klen
constexpr int64_t kTpcMaxPoints = 3200;   // FM4NPP drops events with more points (high_thr)
constexpr int kNerfFrequencies = 10;      // multires: frequencies 2^0 .. 2^9

struct PointNormalization {
  double e_mean = 253.0982, e_std = 268.7093;
  double eta_min = -2.0, eta_max = 2.0;
  double phi_min = -3.14159265358979323846, phi_max = 3.14159265358979323846;
  double r_min = 31.371997833251953, r_max = 75.38493347167969;  // cm, the sPHENIX TPC

  // FM4NPP's TPCpp-10M constants (TPCBatchDataset.apply_norm).
  static PointNormalization tpc() { return {}; }
  // Our choice for TrackML (mm): |η| < 4 and r from 0 to 1030 mm cover the whole detector; E is
  // left as is (E = 1 without cells, summed cell charge with them; set e_mean/e_std to taste).
  static PointNormalization trackml() {
    PointNormalization n;
    n.e_mean = 0.0;
    n.e_std = 1.0;
    n.eta_min = -4.0;
    n.eta_max = 4.0;
    n.r_min = 0.0;
    n.r_max = 1030.0;
    return n;
  }
  double normalize_r(double r) const { return (r - r_min) / (r_max - r_min); }
};

// Points of one event: features (n, 4) = (E_n, η_n, φ_n, r_n) row-major, and for each row the
// index of the point it came from (so labels can follow every reordering).
struct PointSet {
  std::vector<float> features;
  std::vector<int64_t> index;
  int64_t size() const { return static_cast<int64_t>(index.size()); }
  float e(int64_t i) const { return features[4 * i]; }
  float eta(int64_t i) const { return features[4 * i + 1]; }
  float phi(int64_t i) const { return features[4 * i + 2]; }
  float r(int64_t i) const { return features[4 * i + 3]; }
};

// Normalized features of one point from (E, x, y, z).
inline std::array<float, 4> normalize_point(double e, double x, double y, double z, const PointNormalization& n) {
  const double r = std::sqrt(x * x + y * y);
  const double phi = std::atan2(y, x);
  const double eta = std::atanh(z / std::sqrt(x * x + y * y + z * z));
  return {static_cast<float>((e - n.e_mean) / n.e_std), static_cast<float>((eta - n.eta_min) / (n.eta_max - n.eta_min)),
          static_cast<float>((phi - n.phi_min) / (n.phi_max - n.phi_min)), static_cast<float>(n.normalize_r(r))};
}

// From rows (E, x, y, z) as stored in TPCpp-10M's spacepoints `data`.
inline PointSet points_from_exyz(const float* exyz, int64_t n, const PointNormalization& norm = PointNormalization::tpc()) {
  PointSet p;
  p.features.resize(static_cast<std::size_t>(4 * n));
  p.index.resize(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const auto f = normalize_point(exyz[4 * i], exyz[4 * i + 1], exyz[4 * i + 2], exyz[4 * i + 3], norm);
    std::copy(f.begin(), f.end(), p.features.begin() + 4 * i);
    p.index[i] = i;
  }
  return p;
}

struct TrackmlPointOptions {
  PointNormalization norm = PointNormalization::trackml();
  bool energy_from_cells = true;  // E = Σ cell value of the hit when the event has cells, else 1
  std::vector<int32_t> volumes;   // empty = all
};

// From a TrackML event's hits (x, y, z in mm); index = the row in event.hits.
inline PointSet points_from_event(const Event& event, const TrackmlPointOptions& opt = {}) {
  const Hits& h = event.hits;
  std::vector<double> energy(h.size(), 1.0);
  if (opt.energy_from_cells && event.cells.size() > 0) {
    std::unordered_map<int32_t, int64_t> row;
    row.reserve(h.size() * 2);
    for (std::size_t i = 0; i < h.size(); ++i) row.emplace(h.hit_id[i], static_cast<int64_t>(i));
    std::fill(energy.begin(), energy.end(), 0.0);
    for (std::size_t c = 0; c < event.cells.size(); ++c) {
      auto it = row.find(event.cells.hit_id[c]);
      if (it == row.end())
        throw DataError("event " + std::to_string(event.event_id) + " cells", static_cast<int64_t>(c) + 2, "hit_id",
                        "hit_id " + std::to_string(event.cells.hit_id[c]) + " is not in the hits");
      energy[it->second] += event.cells.value[c];
    }
  }
  PointSet p;
  for (std::size_t i = 0; i < h.size(); ++i) {
    if (!opt.volumes.empty() && std::find(opt.volumes.begin(), opt.volumes.end(), h.volume_id[i]) == opt.volumes.end())
      continue;
    const auto f = normalize_point(energy[i], h.x[i], h.y[i], h.z[i], opt.norm);
    p.features.insert(p.features.end(), f.begin(), f.end());
    p.index.push_back(static_cast<int64_t>(i));
  }
  return p;
}

// Reorders rows of width `width`: row k of the result is row perm[k] of v.
template <class T>
void permute_rows(std::vector<T>& v, int64_t width, const std::vector<int64_t>& perm) {
  std::vector<T> out(v.size());
  for (std::size_t k = 0; k < perm.size(); ++k)
    std::copy(v.begin() + perm[k] * width, v.begin() + (perm[k] + 1) * width, out.begin() + static_cast<int64_t>(k) * width);
  v.swap(out);
}
inline void permute_points(PointSet& p, const std::vector<int64_t>& perm) {
  MAMBATRACK_CHECK(static_cast<int64_t>(perm.size()) == p.size(), ShapeError, "permute_points: permutation of ",
                   perm.size(), " for ", p.size(), " points");
  permute_rows(p.features, 4, perm);
  permute_rows(p.index, 1, perm);
}

// Stable argsort by r_n (ties keep the input order).
inline std::vector<int64_t> r_sort_order(const PointSet& p) {
  std::vector<int64_t> perm(static_cast<std::size_t>(p.size()));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return p.r(a) < p.r(b); });
  return perm;
}

// ---- k next-nearest neighbours -------------------------------------------------------------
namespace detail {
inline double dist2(const float* a, const float* b) {
  const double d0 = double(a[0]) - double(b[0]), d1 = double(a[1]) - double(b[1]), d2 = double(a[2]) - double(b[2]);
  return d0 * d0 + d1 * d1 + d2 * d2;
}
// The k best (distance², index) seen so far, best first; ties in distance go to the lower index.
struct KBest {
  explicit KBest(int64_t k) : k_(k) { d_.reserve(k); j_.reserve(k); }
  bool full() const { return static_cast<int64_t>(d_.size()) == k_; }
  double worst() const { return d_.back(); }
  void offer(double d, int64_t j) {
    if (full() && (d > d_.back() || (d == d_.back() && j > j_.back()))) return;
    std::size_t pos = d_.size();
    while (pos > 0 && (d < d_[pos - 1] || (d == d_[pos - 1] && j < j_[pos - 1]))) --pos;
    d_.insert(d_.begin() + pos, d);
    j_.insert(j_.begin() + pos, j);
    if (static_cast<int64_t>(d_.size()) > k_) {
      d_.pop_back();
      j_.pop_back();
    }
  }
  void clear() { d_.clear(); j_.clear(); }
  int64_t k_;
  std::vector<double> d_;
  std::vector<int64_t> j_;
};

inline void check_coords(const std::vector<float>& xyz) {
  for (std::size_t i = 0; i < xyz.size(); ++i)
    MAMBATRACK_CHECK(std::isfinite(xyz[i]), DataError, "k-NNN: point ", i / 3, " has a non-finite coordinate ",
                     "(a hit at the origin gives η = NaN); remove it first");
}
}  // namespace detail

// Neighbour indices (n, k), −1 where fewer than k later rows exist, by brute force: O(N²).
// xyz: (n, 3) row-major (η_n, φ_n, r_n). The reference for knn_later_indices.
inline std::vector<int64_t> knn_later_indices_brute(const std::vector<float>& xyz, int64_t k) {
  detail::check_coords(xyz);
  const int64_t n = static_cast<int64_t>(xyz.size() / 3);
  std::vector<int64_t> out(static_cast<std::size_t>(n * k), -1);
  detail::KBest best(k);
  for (int64_t i = 0; i < n; ++i) {
    best.clear();
    for (int64_t j = i + 1; j < n; ++j) best.offer(detail::dist2(&xyz[3 * i], &xyz[3 * j]), j);
    for (std::size_t m = 0; m < best.j_.size(); ++m) out[i * k + static_cast<int64_t>(m)] = best.j_[m];
  }
  return out;
}

// The same with a k-d tree whose nodes know their largest row index, so subtrees with no row
// after i are skipped: O(N log N) for the r-sorted inputs this is used on. Threaded over queries
// (parallel_for); the result does not depend on the thread count.
inline std::vector<int64_t> knn_later_indices(const std::vector<float>& xyz, int64_t k) {
  detail::check_coords(xyz);
  MAMBATRACK_CHECK(k >= 0, ConfigError, "k-NNN: k must be >= 0, got ", k);
  const int64_t n = static_cast<int64_t>(xyz.size() / 3);
  std::vector<int64_t> out(static_cast<std::size_t>(n * k), -1);
  if (n == 0 || k == 0) return out;
  struct Node {
    float lo[3], hi[3];
    int64_t max_index, begin, end, left, right;
  };
  constexpr int64_t kLeaf = 12;
  std::vector<int64_t> ids(static_cast<std::size_t>(n));
  std::iota(ids.begin(), ids.end(), int64_t{0});
  std::vector<Node> nodes;
  nodes.reserve(static_cast<std::size_t>(2 * n / kLeaf + 2));
  // Iterative build (explicit stack) so deep trees cannot overflow the call stack.
  struct Job { int64_t node, begin, end; };
  std::vector<Job> stack;
  nodes.push_back(Node{});
  stack.push_back({0, 0, n});
  while (!stack.empty()) {
    Job job = stack.back();
    stack.pop_back();
    Node nd{};
    nd.begin = job.begin;
    nd.end = job.end;
    nd.left = nd.right = -1;
    nd.max_index = -1;
    for (int d = 0; d < 3; ++d) { nd.lo[d] = INFINITY; nd.hi[d] = -INFINITY; }
    for (int64_t t = job.begin; t < job.end; ++t) {
      const int64_t id = ids[t];
      nd.max_index = std::max(nd.max_index, id);
      for (int d = 0; d < 3; ++d) {
        nd.lo[d] = std::min(nd.lo[d], xyz[3 * id + d]);
        nd.hi[d] = std::max(nd.hi[d], xyz[3 * id + d]);
      }
    }
    if (job.end - job.begin > kLeaf) {
      int dim = 0;
      for (int d = 1; d < 3; ++d)
        if (nd.hi[d] - nd.lo[d] > nd.hi[dim] - nd.lo[dim]) dim = d;
      const int64_t mid = (job.begin + job.end) / 2;
      std::nth_element(ids.begin() + job.begin, ids.begin() + mid, ids.begin() + job.end,
                       [&](int64_t a, int64_t b) { return xyz[3 * a + dim] < xyz[3 * b + dim]; });
      nd.left = static_cast<int64_t>(nodes.size());
      nodes.push_back(Node{});
      nd.right = static_cast<int64_t>(nodes.size());
      nodes.push_back(Node{});
      stack.push_back({nd.left, job.begin, mid});
      stack.push_back({nd.right, mid, job.end});
    }
    nodes[job.node] = nd;
  }
  auto box_dist2 = [&](const Node& nd, const float* q) {
    double s = 0;
    for (int d = 0; d < 3; ++d) {
      double e = 0;
      if (q[d] < nd.lo[d]) e = double(nd.lo[d]) - double(q[d]);
      else if (q[d] > nd.hi[d]) e = double(q[d]) - double(nd.hi[d]);
      s += e * e;
    }
    return s;
  };
  // Queries are independent: blocks of them run in parallel, each with its own scratch.
  constexpr int64_t kBlock = 256;
  parallel_for(0, (n + kBlock - 1) / kBlock, [&](int64_t block) {
    detail::KBest best(k);
    std::vector<int64_t> todo;
    for (int64_t i = block * kBlock; i < std::min(n, (block + 1) * kBlock); ++i) {
      best.clear();
      const float* q = &xyz[3 * i];
      todo.clear();
      todo.push_back(0);
      while (!todo.empty()) {
        const Node& nd = nodes[todo.back()];
        todo.pop_back();
        if (nd.max_index <= i) continue;
        // A box at exactly the worst distance may still hold a tie with a lower index: keep it.
        if (best.full() && box_dist2(nd, q) > best.worst()) continue;
        if (nd.left < 0) {
          for (int64_t t = nd.begin; t < nd.end; ++t) {
            const int64_t j = ids[t];
            if (j > i) best.offer(detail::dist2(q, &xyz[3 * j]), j);
          }
          continue;
        }
        // Visit the nearer child first (pushed last).
        const double dl = box_dist2(nodes[nd.left], q), dr = box_dist2(nodes[nd.right], q);
        if (dl <= dr) {
          todo.push_back(nd.right);
          todo.push_back(nd.left);
        } else {
          todo.push_back(nd.left);
          todo.push_back(nd.right);
        }
      }
      for (std::size_t m = 0; m < best.j_.size(); ++m) out[i * k + static_cast<int64_t>(m)] = best.j_[m];
    }
  });
  return out;
}

// The (η_n, φ_n, r_n) columns of a point set, (n, 3).
inline std::vector<float> point_coordinates(const PointSet& p) {
  std::vector<float> xyz(static_cast<std::size_t>(3 * p.size()));
  for (int64_t i = 0; i < p.size(); ++i)
    for (int d = 0; d < 3; ++d) xyz[3 * i + d] = p.features[4 * i + 1 + d];
  return xyz;
}

// k-NNN regression targets (n, 3k): the neighbours' (η_n, φ_n, r_n), nearest first, −100 padded.
// Call on r-sorted points (FM4NPP does), so "later" means "at larger or equal r".
inline std::vector<float> knn_later_targets(const PointSet& p, int64_t k = kDefaultKnn) {
  const std::vector<float> xyz = point_coordinates(p);
  const std::vector<int64_t> idx = knn_later_indices(xyz, k);
  std::vector<float> out(static_cast<std::size_t>(3 * k * p.size()), kKnnPad);
  for (int64_t i = 0; i < p.size(); ++i)
    for (int64_t m = 0; m < k; ++m) {
      const int64_t j = idx[i * k + m];
      if (j < 0) continue;
      for (int d = 0; d < 3; ++d) out[(i * k + m) * 3 + d] = xyz[3 * j + d];
    }
  return out;
}

// ---- voxel raster scan ---------------------------------------------------------------------
// Bin edges in normalized units (n_bins + 1 each); FM4NPP's are 8, 8, 6 bins.
struct VoxelEdges {
  std::vector<float> eta, phi, r;
};

// Sweep orders, named from the fastest-varying axis to the slowest: EPR = η fastest, then φ,
// r slowest (boxes sorted by (r, φ, η)); RPE = η, φ, r slowest-first; REP = φ, η, r; PER = r, η, φ.
enum class SweepOrder { kEPR, kRPE, kREP, kPER };

inline SweepOrder parse_sweep_order(const std::string& s) {
  if (s == "EPR") return SweepOrder::kEPR;
  if (s == "RPE") return SweepOrder::kRPE;
  if (s == "REP") return SweepOrder::kREP;
  if (s == "PER") return SweepOrder::kPER;
  throw ConfigError("voxel sweep order '" + s + "' is not supported; supported: EPR, RPE, REP, PER");
}

// torch.bucketize(x, edges, right=False) = #edges < x, clamped to a cell 1..n_bins (FM4NPP's
// nearest-reference-cell lookup clamps points outside the grid), returned 0-based.
inline int64_t voxel_bin(float x, const std::vector<float>& edges) {
  const int64_t nb = static_cast<int64_t>(edges.size()) - 1;
  int64_t b = std::lower_bound(edges.begin(), edges.end(), x) - edges.begin();
  b = std::min(std::max<int64_t>(b, 1), nb);
  return b - 1;
}

inline std::vector<int64_t> voxel_cell_ids(const PointSet& p, const VoxelEdges& edges, SweepOrder order) {
  const int64_t ne = static_cast<int64_t>(edges.eta.size()) - 1, np = static_cast<int64_t>(edges.phi.size()) - 1,
                nr = static_cast<int64_t>(edges.r.size()) - 1;
  MAMBATRACK_CHECK(ne >= 1 && np >= 1 && nr >= 1, ConfigError, "voxel edges need at least 2 values per axis, got ",
                   edges.eta.size(), ", ", edges.phi.size(), ", ", edges.r.size());
  std::vector<int64_t> cell(static_cast<std::size_t>(p.size()));
  for (int64_t i = 0; i < p.size(); ++i) {
    const int64_t e = voxel_bin(p.eta(i), edges.eta), f = voxel_bin(p.phi(i), edges.phi), r = voxel_bin(p.r(i), edges.r);
    switch (order) {
      case SweepOrder::kEPR: cell[i] = (r * np + f) * ne + e; break;
      case SweepOrder::kRPE: cell[i] = (e * np + f) * nr + r; break;
      case SweepOrder::kREP: cell[i] = (f * ne + e) * nr + r; break;
      case SweepOrder::kPER: cell[i] = (r * ne + e) * np + f; break;
    }
  }
  return cell;
}

// The serialization permutation: stable argsort of the cell ids (input order kept in a cell).
inline std::vector<int64_t> raster_scan_order(const PointSet& p, const VoxelEdges& edges, SweepOrder order) {
  const std::vector<int64_t> cell = voxel_cell_ids(p, edges, order);
  std::vector<int64_t> perm(cell.size());
  std::iota(perm.begin(), perm.end(), int64_t{0});
  std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return cell[a] < cell[b]; });
  return perm;
}

// numpy's equalObs: interp(linspace(0, n, bins+1), arange(n), sort(x)).
inline std::vector<double> equal_population_edges(std::vector<double> x, int64_t bins) {
  MAMBATRACK_CHECK(!x.empty() && bins >= 1, ConfigError, "equal_population_edges: need data and bins >= 1, got ",
                   x.size(), " values and ", bins, " bins");
  std::sort(x.begin(), x.end());
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<double> e(static_cast<std::size_t>(bins + 1));
  for (int64_t b = 0; b <= bins; ++b) {
    const double t = static_cast<double>(n) * static_cast<double>(b) / static_cast<double>(bins);
    if (t >= static_cast<double>(n - 1)) { e[b] = x[n - 1]; continue; }
    const int64_t lo = static_cast<int64_t>(std::floor(t));
    const double w = t - static_cast<double>(lo);
    e[b] = x[lo] + w * (x[lo + 1] - x[lo]);
  }
  return e;
}

// FM4NPP's bin computation (Voxelizer.compute_bins) on normalized points: η and φ equal-population
// with the ends forced to 0 and 1; r cut into sections at `r_splits` (normalized; FM4NPP: 40 and
// 57 cm), each section's boundary halfway between the nearest values on either side, and each
// section split into n_r / sections equal-population bins.
inline VoxelEdges compute_voxel_edges(const std::vector<PointSet>& events, int64_t n_eta = 8, int64_t n_phi = 8,
                                      int64_t n_r = 6, const std::vector<double>& r_splits = {}) {
  std::vector<double> eta, phi, r;
  for (const auto& p : events)
    for (int64_t i = 0; i < p.size(); ++i) {
      eta.push_back(p.eta(i));
      phi.push_back(p.phi(i));
      r.push_back(p.r(i));
    }
  const int64_t sections = static_cast<int64_t>(r_splits.size()) + 1;
  MAMBATRACK_CHECK(n_r % sections == 0, ConfigError, "compute_voxel_edges: ", n_r, " r bins do not divide into ",
                   sections, " sections");
  VoxelEdges out;
  auto to_float = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  auto e = equal_population_edges(eta, n_eta);
  e.front() = 0.0;
  e.back() = 1.0;
  out.eta = to_float(e);
  auto f = equal_population_edges(phi, n_phi);
  f.front() = 0.0;
  f.back() = 1.0;
  out.phi = to_float(f);
  std::vector<double> uniq = r;
  std::sort(uniq.begin(), uniq.end());
  uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
  std::vector<double> bounds{uniq.front()};
  for (double s : r_splits) {
    auto it = std::lower_bound(uniq.begin(), uniq.end(), s);
    MAMBATRACK_CHECK(it != uniq.begin() && it != uniq.end(), ConfigError, "compute_voxel_edges: r split ", s,
                     " has no data on one side");
    bounds.push_back(*(it - 1) + (*it - *(it - 1)) / 2);
  }
  bounds.push_back(uniq.back());
  std::vector<double> edges;
  for (int64_t s = 0; s < sections; ++s) {
    std::vector<double> inside;
    for (double v : r)
      if (bounds[s] < v && v < bounds[s + 1]) inside.push_back(v);
    MAMBATRACK_CHECK(!inside.empty(), ConfigError, "compute_voxel_edges: r section ", s, " is empty");
    auto sec = equal_population_edges(inside, n_r / sections);
    sec.front() = bounds[s];
    sec.back() = bounds[s + 1];
    edges.insert(edges.end(), sec.begin() + (s == 0 ? 0 : 1), sec.end());
  }
  out.r = to_float(edges);
  return out;
}

// ---- NeRF positional encoding ----------------------------------------------------------------
inline int64_t nerf_dim(int64_t d_in, int n_freq = kNerfFrequencies) { return d_in * (1 + 2 * n_freq); }

// x: (n, d) row-major -> (n, d(1 + 2·n_freq)): [x, sin(2⁰x), cos(2⁰x), sin(2¹x), cos(2¹x), …],
// each block d wide (FM4NPP's NerfEmbedder with log-sampled frequencies 2^0..2^(n_freq-1)).
// The fixed random projection that follows belongs to the model (stored in its checkpoint).
inline std::vector<float> nerf_encode(const std::vector<float>& x, int64_t d, int n_freq = kNerfFrequencies) {
  MAMBATRACK_CHECK(d > 0 && x.size() % static_cast<std::size_t>(d) == 0, ShapeError, "nerf_encode: ", x.size(),
                   " values are not rows of width ", d);
  const int64_t n = static_cast<int64_t>(x.size()) / d, w = nerf_dim(d, n_freq);
  std::vector<float> out(static_cast<std::size_t>(n * w));
  for (int64_t i = 0; i < n; ++i) {
    float* o = &out[i * w];
    for (int64_t c = 0; c < d; ++c) o[c] = x[i * d + c];
    for (int f = 0; f < n_freq; ++f) {
      const double freq = std::ldexp(1.0, f);
      for (int64_t c = 0; c < d; ++c) {
        const double a = static_cast<double>(x[i * d + c]) * freq;
        o[d * (1 + 2 * f) + c] = static_cast<float>(std::sin(a));
        o[d * (2 + 2 * f) + c] = static_cast<float>(std::cos(a));
      }
    }
  }
  return out;
}

// ---- the whole per-event pipeline ------------------------------------------------------------
struct Fm4nppOptions {
  int64_t k = kDefaultKnn;
  bool voxelize = true;  // false: keep the r order
  SweepOrder order = SweepOrder::kEPR;
  VoxelEdges edges;      // required when voxelize
};

// One event ready for the model: rows in sequence order; knn (n, 3k); index = the input row
// (spacepoint or hit) of each sequence position, to permute labels the same way.
struct Fm4nppEvent {
  PointSet points;
  std::vector<float> knn;
  int64_t k = 0;
  int64_t size() const { return points.size(); }
};

inline Fm4nppEvent prepare_fm4npp_event(PointSet points, const Fm4nppOptions& opt = {}) {
  Fm4nppEvent ev;
  ev.k = opt.k;
  permute_points(points, r_sort_order(points));
  ev.knn = knn_later_targets(points, opt.k);
  if (opt.voxelize) {
    const std::vector<int64_t> perm = raster_scan_order(points, opt.edges, opt.order);
    permute_points(points, perm);
    permute_rows(ev.knn, 3 * opt.k, perm);
  }
  ev.points = std::move(points);
  return ev;
}

// Events packed for the model: rows of all events back to back, event e = rows
// cu_seqlens[e] .. cu_seqlens[e+1]. FM4NPP's collator pads instead, with −100 everywhere:
// packed_to_padded(points, cu_seqlens, kKnnPad, 0, 4) (batching.hpp) gives that layout.
struct Fm4nppBatch {
  std::vector<float> points;           // (total, 4)
  std::vector<float> knn;              // (total, 3k)
  std::vector<int64_t> index;          // input row of each row, per event
  std::vector<int64_t> cu_seqlens{0};  // events + 1
  int64_t k = 0;
  int64_t size() const { return static_cast<int64_t>(cu_seqlens.size()) - 1; }
};

inline Fm4nppBatch pack_fm4npp_batch(const std::vector<const Fm4nppEvent*>& events) {
  Fm4nppBatch b;
  for (const Fm4nppEvent* e : events) {
    if (b.size() == 0) b.k = e->k;
    MAMBATRACK_CHECK(e->k == b.k, ShapeError, "pack_fm4npp_batch: events with k = ", b.k, " and ", e->k);
    b.points.insert(b.points.end(), e->points.features.begin(), e->points.features.end());
    b.knn.insert(b.knn.end(), e->knn.begin(), e->knn.end());
    b.index.insert(b.index.end(), e->points.index.begin(), e->points.index.end());
    b.cu_seqlens.push_back(b.cu_seqlens.back() + e->size());
  }
  return b;
}

}  // namespace mambatrack::data
