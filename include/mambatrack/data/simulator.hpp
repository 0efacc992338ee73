// A TrackML-like event generator (shared/reference/trackml.md section 6): primary vertices,
// charged particles with the real event-1000 pT and |eta| spectra, helices in a uniform field
// Bz (R[mm] = 1000 pT[GeV] / (0.299792458 |q| B[T])), intersections with every module crossed
// (exact helix-plane solution, trapezoid bounds), optional Highland multiple scattering, Gaussian
// smearing in local (u, v), noise hits, cells, and truth weights exactly as trackml-library.
// Seeded with Philox(seed).split(event_id): the same event on every machine with the same libm.
// Simplified: secondaries only from a per-layer interaction of primaries; not modelled: hits
// after the first half turn of loopers, energy loss, the field's fall-off in the far endcaps.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/philox.hpp"
#include "mambatrack/data/detector.hpp"
#include "mambatrack/data/event.hpp"

namespace mambatrack::data {

// c in the units of the curvature formula: R[m] = pT[GeV] / (kSpeedOfLightGeV * |q| * B[T]).
constexpr double kSpeedOfLightGeV = 0.299792458;

// A helix in a uniform field along z, parametrised by the transverse arc length s [mm]:
//   x(s) = x0 + h R [sin(phi0 + h s / R) - sin phi0],  y(s) = y0 - h R [cos(...) - cos phi0],
//   z(s) = z0 + lambda s,  with h = -sign(q Bz), lambda = pz / pT.
struct Helix {
  double x0 = 0, y0 = 0, z0 = 0, phi0 = 0, lambda = 0, R = 0, pt = 0, pz = 0;
  int h = 1, q = 1;

  static Helix from_momentum(double x, double y, double z, double px, double py, double pz,
                             int q, double bz) {
    Helix H;
    H.x0 = x;
    H.y0 = y;
    H.z0 = z;
    H.pt = std::hypot(px, py);
    H.pz = pz;
    H.phi0 = std::atan2(py, px);
    H.lambda = pz / H.pt;
    H.R = 1000.0 * H.pt / (kSpeedOfLightGeV * std::abs(q) * std::abs(bz));
    H.h = (q * bz > 0) ? -1 : 1;
    H.q = q;
    return H;
  }
  double phi_at(double s) const { return phi0 + h * s / R; }
  std::array<double, 3> position(double s) const {
    const double p = phi_at(s);
    return {x0 + h * R * (std::sin(p) - std::sin(phi0)), y0 - h * R * (std::cos(p) - std::cos(phi0)),
            z0 + lambda * s};
  }
  std::array<double, 3> momentum(double s) const {
    const double p = phi_at(s);
    return {pt * std::cos(p), pt * std::sin(p), pz};
  }
  double xc() const { return x0 - h * R * std::sin(phi0); }
  double yc() const { return y0 + h * R * std::cos(phi0); }
};

struct SimulatorOptions {
  uint64_t seed = 1;
  int64_t n_particles = 10000;  // generation-0 charged particles per event (real event 1000: 9,431)
  int32_t n_vertices = 160;     // primary vertices the particles are spread over
  // Ranges of generation-0 particles (secondaries have their own spectrum below).
  double pt_min = 0.1, pt_max = 100.0;  // GeV; the spectrum itself starts at 0.1 GeV
  double eta_max = 4.0;                 // |eta| < eta_max (at most 6)
  double bz = 2.0;                      // T, uniform along +z
  double positive_fraction = 0.554;     // real event 1000: 6,789 of 12,263 positive
  double vertex_sigma_x = 0.04, vertex_sigma_y = 0.03, vertex_sigma_z = 6.0;  // mm
  std::vector<int32_t> volumes;         // volumes to simulate (hits and noise); empty: all
  double noise_per_module = 0.93;       // mean noise hits per module (Poisson)
  bool multiple_scattering = true;
  // x/X0 per layer crossing at normal incidence, by sensor kind (trackml.md 6.3, assumed).
  double x_over_x0_pixel = 0.015, x_over_x0_short_strip = 0.025, x_over_x0_long_strip = 0.03;
  double hit_inefficiency = 0.0;        // probability to drop each true hit
  // Real event 1000 has no hits for ~90% of particles below pT = 0.15 GeV (a simulation cut)
  // and loses ~2% of the tracks at every layer (nuclear interactions, decays): particles below
  // pt_min_propagate are listed with nhits = 0, and a particle stops after a layer crossing with
  // probability interaction_probability.
  double pt_min_propagate = 0.15;
  double interaction_probability = 0.02;
  // Each interaction of a generation-0 particle makes 1 + Poisson(secondaries_mean - 1) charged
  // secondaries at the interaction point (real event 1000: 2,832 secondaries from 1,395
  // parents, pT median 0.21 GeV, 73% positive); 0 turns them off.
  double secondaries_mean = 2.0;
  double secondary_pt_median = 0.21, secondary_pt_log_sigma = 0.475;
  double secondary_angle_sigma = 0.6;  // rad, Gaussian polar angle around the parent direction
  double secondary_positive_fraction = 0.73;
  double max_half_turns = 1.0;          // stop after this many half turns (pi R of path)
  bool cells = true;
  // Gaussian resolution in local (u, v) [mm] by sensor kind (real residuals, trackml.md 2).
  double sigma_u_pixel = 0.005, sigma_v_pixel = 0.017;
  double sigma_u_short_strip = 0.018, sigma_v_short_strip = 0.23;
  double sigma_u_long_strip = 0.036, sigma_v_long_strip = 2.9;
};

// TrackML score weights (trackml-library weights.py): pT term and hit-order term.
inline double trackml_pt_weight(double pt) {
  if (pt < 0.05) return 0.0;
  if (pt <= 0.5) return 0.2;
  if (pt >= 3.0) return 1.0;
  return 0.2 + 0.8 * (pt - 0.5) / 2.5;
}
// Order weights of a track with nhits hits (nhits < 4: all zero; capped at 20 like the library;
// entry i is the weight of the i-th hit by |tz - vz|, hits beyond the 20th get 0).
inline std::vector<double> trackml_order_weights(int32_t nhits) {
  std::vector<double> w(static_cast<std::size_t>(std::max(nhits, 0)), 0.0);
  if (nhits < 4) return w;
  const int32_t n = std::min(nhits, 20);
  static const double kProposal[9] = {10, 8, 6, 5, 3, 3, 3, 5, 6};
  double sum = 0;
  for (int32_t i = 0; i < n; ++i) {
    // np.interp(i, k (n-1)/8, proposal)
    const double x = static_cast<double>(i) * 8.0 / (n - 1);
    int32_t k = std::min(static_cast<int32_t>(std::floor(x)), 7);
    const double t = x - k;
    const double v = kProposal[k] + (kProposal[k + 1] - kProposal[k]) * t;
    w[static_cast<std::size_t>(i)] = v;
    sum += v;
  }
  for (int32_t i = 0; i < n; ++i) w[static_cast<std::size_t>(i)] /= sum;
  return w;
}

// Fills event.truth.weight with the phase-1 TrackML weights: w = w_pt(particle pT) *
// w_order(rank of |tz - vz| among the particle's truth hits, its number of truth hits), noise
// and unknown particles 0, normalised to sum 1 (all zero if nothing has weight).
inline void assign_trackml_weights(Event& ev) {
  const Truth& t = ev.truth;
  const Particles& p = ev.particles;
  std::vector<std::size_t> order(p.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return p.particle_id[a] < p.particle_id[b]; });
  auto find_particle = [&](uint64_t id) -> int64_t {
    auto it = std::lower_bound(order.begin(), order.end(), id,
                               [&](std::size_t a, uint64_t v) { return p.particle_id[a] < v; });
    if (it == order.end() || p.particle_id[*it] != id) return -1;
    return static_cast<int64_t>(*it);
  };
  // Group truth rows by particle.
  std::vector<std::size_t> rows(t.size());
  std::iota(rows.begin(), rows.end(), std::size_t{0});
  std::vector<int64_t> pidx(t.size());
  for (std::size_t i = 0; i < t.size(); ++i)
    pidx[i] = t.particle_id[i] == 0 ? -1 : find_particle(t.particle_id[i]);
  std::stable_sort(rows.begin(), rows.end(), [&](std::size_t a, std::size_t b) {
    if (t.particle_id[a] != t.particle_id[b]) return t.particle_id[a] < t.particle_id[b];
    return false;
  });
  std::vector<double> w(t.size(), 0.0);
  double total = 0;
  for (std::size_t a = 0; a < rows.size();) {
    std::size_t b = a;
    while (b < rows.size() && t.particle_id[rows[b]] == t.particle_id[rows[a]]) ++b;
    const int64_t pi = pidx[rows[a]];
    if (t.particle_id[rows[a]] != 0 && pi >= 0) {
      const auto k = static_cast<std::size_t>(pi);
      const double vz = p.vz[k];
      const double wpt = trackml_pt_weight(std::hypot(static_cast<double>(p.px[k]),
                                                      static_cast<double>(p.py[k])));
      std::vector<std::size_t> hits(rows.begin() + static_cast<std::ptrdiff_t>(a),
                                    rows.begin() + static_cast<std::ptrdiff_t>(b));
      std::stable_sort(hits.begin(), hits.end(), [&](std::size_t x, std::size_t y) {
        return std::abs(t.tz[x] - vz) < std::abs(t.tz[y] - vz);
      });
      const auto ow = trackml_order_weights(static_cast<int32_t>(hits.size()));
      for (std::size_t r = 0; r < hits.size(); ++r) {
        w[hits[r]] = wpt * ow[r];
        total += w[hits[r]];
      }
    }
    a = b;
  }
  ev.truth.weight.assign(t.size(), 0.0f);
  if (total > 0)
    for (std::size_t i = 0; i < t.size(); ++i)
      ev.truth.weight[i] = static_cast<float>(w[i] / total);
}

// Per-layer and per-event counters of the last generate() call (for monitoring).
struct SimulatorStats {
  int64_t particles = 0, true_hits = 0, noise_hits = 0, cells = 0;
};

class Simulator {
 public:
  explicit Simulator(Detector detector, SimulatorOptions options = {})
      : det_(std::move(detector)), opt_(std::move(options)) {
    validate();
    const auto& layers = det_.layers();
    for (int32_t li = 0; li < static_cast<int32_t>(layers.size()); ++li) {
      const LayerInfo& L = layers[static_cast<std::size_t>(li)];
      if (opt_.volumes.empty() || std::find(opt_.volumes.begin(), opt_.volumes.end(),
                                            L.volume_id) != opt_.volumes.end())
        (L.barrel ? barrel_layers_ : disk_layers_).push_back(li);
    }
  }

  const Detector& detector() const { return det_; }
  const SimulatorOptions& options() const { return opt_; }

  // One event; the random stream is Philox(options.seed).split(event_id).
  Event generate(int64_t event_id) const {
    SimulatorStats stats;
    return generate(event_id, stats);
  }
  Event generate(int64_t event_id, SimulatorStats& stats) const;

  // Inverse CDFs of the built-in spectra (exposed for tests): u in [0, 1).
  static double pt_quantile(double u);
  static double pt_cdf(double pt);
  static double abs_eta_quantile(double u);
  static double abs_eta_cdf(double a);

 private:
  struct RawHit {
    int32_t module = 0;
    uint64_t particle = 0;  // 0: noise
    double tx = 0, ty = 0, tz = 0, tpx = 0, tpy = 0, tpz = 0;
    double x = 0, y = 0, z = 0;
    double du = 0, dv = 0, dw = 1;  // direction in the module frame (cells)
  };
  struct Interaction {
    bool happened = false;
    double x = 0, y = 0, z = 0, px = 0, py = 0, pz = 0;
  };
  struct Workspace {
    std::vector<int32_t> cand;
    std::vector<uint32_t> stamp;
    uint32_t stamp_value = 0;
  };

  void validate() const {
    const SimulatorOptions& o = opt_;
    MAMBATRACK_CHECK(o.n_particles >= 0, ConfigError, "simulator: n_particles must be >= 0, got ",
                     o.n_particles);
    MAMBATRACK_CHECK(o.n_vertices >= 1 && o.n_vertices <= 4095, ConfigError,
                     "simulator: n_vertices must be in [1, 4095] (12-bit vertex_id), got ",
                     o.n_vertices);
    MAMBATRACK_CHECK(o.n_particles <= 65535LL * o.n_vertices, ConfigError,
                     "simulator: at most 65535 particles per vertex (16-bit primary_id); ",
                     o.n_particles, " particles over ", o.n_vertices, " vertices");
    MAMBATRACK_CHECK(o.pt_min > 0 && o.pt_max > o.pt_min && o.pt_max > 0.1, ConfigError,
                     "simulator: need 0 < pt_min < pt_max and pt_max > 0.1 GeV, got pt_min ",
                     o.pt_min, ", pt_max ", o.pt_max);
    MAMBATRACK_CHECK(o.eta_max > 0 && o.eta_max <= 6, ConfigError,
                     "simulator: eta_max must be in (0, 6], got ", o.eta_max);
    MAMBATRACK_CHECK(std::abs(o.bz) > 1e-6, ConfigError,
                     "simulator: bz must be non-zero (helices need a field), got ", o.bz);
    MAMBATRACK_CHECK(o.noise_per_module >= 0, ConfigError,
                     "simulator: noise_per_module must be >= 0, got ", o.noise_per_module);
    MAMBATRACK_CHECK(o.hit_inefficiency >= 0 && o.hit_inefficiency < 1, ConfigError,
                     "simulator: hit_inefficiency must be in [0, 1), got ", o.hit_inefficiency);
    MAMBATRACK_CHECK(o.interaction_probability >= 0 && o.interaction_probability < 1, ConfigError,
                     "simulator: interaction_probability must be in [0, 1), got ",
                     o.interaction_probability);
    MAMBATRACK_CHECK(o.secondaries_mean >= 0 && o.secondaries_mean < 100, ConfigError,
                     "simulator: secondaries_mean must be in [0, 100), got ", o.secondaries_mean);
    MAMBATRACK_CHECK(o.max_half_turns > 0, ConfigError,
                     "simulator: max_half_turns must be > 0, got ", o.max_half_turns);
    MAMBATRACK_CHECK(o.positive_fraction >= 0 && o.positive_fraction <= 1, ConfigError,
                     "simulator: positive_fraction must be in [0, 1], got ", o.positive_fraction);
    MAMBATRACK_CHECK(det_.size() > 0, ConfigError, "simulator: the detector has no modules");
    for (int32_t v : o.volumes) {
      bool found = false;
      for (const auto& L : det_.layers()) found = found || L.volume_id == v;
      if (!found) {
        std::ostringstream os;
        os << "simulator: volume " << v << " is not in the detector; volumes present:";
        int32_t last = -1;
        for (const auto& L : det_.layers())
          if (L.volume_id != last) os << ' ' << (last = L.volume_id);
        throw ConfigError(os.str());
      }
    }
  }

  void sigma_for(const Module& m, double& su, double& sv) const {
    switch (m.kind()) {
      case SensorKind::kPixel: su = opt_.sigma_u_pixel, sv = opt_.sigma_v_pixel; break;
      case SensorKind::kShortStrip:
        su = opt_.sigma_u_short_strip, sv = opt_.sigma_v_short_strip;
        break;
      default: su = opt_.sigma_u_long_strip, sv = opt_.sigma_v_long_strip; break;
    }
  }
  double x0_for(const Module& m) const {
    switch (m.kind()) {
      case SensorKind::kPixel: return opt_.x_over_x0_pixel;
      case SensorKind::kShortStrip: return opt_.x_over_x0_short_strip;
      default: return opt_.x_over_x0_long_strip;
    }
  }

  // Smallest crossing s > s_from of the nominal surface of any active layer (barrel cylinder at
  // its mean radius inside its z range; disk plane at its mean z inside its r range).
  bool next_crossing(const Helix& H, double s_from, double s_limit, int32_t& layer,
                     double& s_out) const;
  // Propagates one particle and appends its true hits.
  void propagate(Helix H, uint64_t particle_id, double mass, Philox& rng, Workspace& ws,
                 std::vector<RawHit>& hits, Interaction& interaction) const;
  void make_cells(const RawHit& h, int32_t hit_id, Philox& rng, Cells& cells) const;

  Detector det_;
  SimulatorOptions opt_;
  std::vector<int32_t> barrel_layers_, disk_layers_;
};

// ---------------------------------------------------------------------------------------------
// Spectra of generation-0 particles of the real event 1000 (9,431 particles): pT quantiles
// (log-linear between knots, power-law tail pT ~ (1 - u)^(-1/2) above the 99% quantile) and
// the |eta| histogram in bins of 0.5 (flat density per bin; the last bin's density beyond 4).

namespace detail {
constexpr int kPtKnots = 14;
constexpr double kPtU[kPtKnots] = {0,   0.05, 0.1, 0.2, 0.3,  0.4,  0.5,
                                   0.6, 0.7,  0.8, 0.9, 0.95, 0.98, 0.99};
constexpr double kPtV[kPtKnots] = {0.1,    0.1379, 0.1736, 0.2356, 0.2982, 0.3672, 0.4441,
                                   0.5389, 0.656,  0.8472, 1.2479, 1.7125, 2.4788, 3.2735};
constexpr double kPtTailAlpha = 2.0;
constexpr int kEtaBins = 8;
constexpr double kEtaBin = 0.5;
constexpr double kEtaCounts[kEtaBins] = {1182, 1157, 1244, 1272, 1219, 1174, 1090, 1093};
}  // namespace detail

inline double Simulator::pt_quantile(double u) {
  using namespace detail;
  if (u <= 0) return kPtV[0];
  if (u >= kPtU[kPtKnots - 1]) {
    const double tail = (1 - kPtU[kPtKnots - 1]) / std::max(1 - u, 1e-300);
    return kPtV[kPtKnots - 1] * std::pow(tail, 1.0 / kPtTailAlpha);
  }
  int k = 0;
  while (u > kPtU[k + 1]) ++k;
  const double t = (u - kPtU[k]) / (kPtU[k + 1] - kPtU[k]);
  return std::exp(std::log(kPtV[k]) + t * (std::log(kPtV[k + 1]) - std::log(kPtV[k])));
}
inline double Simulator::pt_cdf(double pt) {
  using namespace detail;
  if (pt <= kPtV[0]) return 0.0;
  if (pt >= kPtV[kPtKnots - 1])
    return 1 - (1 - kPtU[kPtKnots - 1]) * std::pow(pt / kPtV[kPtKnots - 1], -kPtTailAlpha);
  int k = 0;
  while (pt > kPtV[k + 1]) ++k;
  const double t = (std::log(pt) - std::log(kPtV[k])) / (std::log(kPtV[k + 1]) - std::log(kPtV[k]));
  return kPtU[k] + t * (kPtU[k + 1] - kPtU[k]);
}
inline double Simulator::abs_eta_cdf(double a) {
  using namespace detail;
  // Unnormalised: density kEtaCounts[b] per bin, last bin's density beyond the table.
  double acc = 0;
  for (int b = 0; b < kEtaBins; ++b) {
    const double lo = b * kEtaBin, hi = lo + kEtaBin;
    if (a <= lo) return acc;
    acc += kEtaCounts[b] * (std::min(a, hi) - lo) / kEtaBin;
  }
  if (a > kEtaBins * kEtaBin)
    acc += kEtaCounts[kEtaBins - 1] * (a - kEtaBins * kEtaBin) / kEtaBin;
  return acc;
}
inline double Simulator::abs_eta_quantile(double c) {
  using namespace detail;
  // c: unnormalised cumulative value in [0, abs_eta_cdf(eta_max)).
  double acc = 0;
  for (int b = 0; b < kEtaBins; ++b) {
    if (c < acc + kEtaCounts[b]) return b * kEtaBin + kEtaBin * (c - acc) / kEtaCounts[b];
    acc += kEtaCounts[b];
  }
  return kEtaBins * kEtaBin + kEtaBin * (c - acc) / kEtaCounts[kEtaBins - 1];
}

inline bool Simulator::next_crossing(const Helix& H, double s_from, double s_limit,
                                     int32_t& layer, double& s_out) const {
  constexpr double kEps = 1e-3;  // mm: the surface just left is not crossed again
  constexpr double kMargin = 1.0;  // mm beyond the layer's sensitive extent
  const auto& layers = det_.layers();
  double best = std::numeric_limits<double>::infinity();
  int32_t best_layer = -1;
  const double xc = H.xc(), yc = H.yc();
  const double d = std::hypot(xc, yc);
  const double two_pi_r = 2 * kPi * H.R;
  const auto pf = H.position(s_from);
  const double alpha_from = std::atan2(pf[1] - yc, pf[0] - xc);
  for (int32_t li : barrel_layers_) {
    const LayerInfo& L = layers[static_cast<std::size_t>(li)];
    const double r = L.radius;
    if (d < 1e-9 || d > H.R + r || d < std::abs(H.R - r)) continue;
    const double a = (r * r - H.R * H.R + d * d) / (2 * d);
    const double hh = r * r - a * a;
    if (hh < 0) continue;
    const double hgt = std::sqrt(hh), ux = xc / d, uy = yc / d;
    for (int sgn = -1; sgn <= 1; sgn += 2) {
      const double px = a * ux - sgn * hgt * uy, py = a * uy + sgn * hgt * ux;
      double dalpha = H.h * (std::atan2(py - yc, px - xc) - alpha_from);
      dalpha = std::fmod(dalpha, 2 * kPi);
      if (dalpha < 0) dalpha += 2 * kPi;
      double s = s_from + H.R * dalpha;
      if (s <= s_from + kEps) s += two_pi_r;
      if (s >= best || s > s_limit) continue;
      const double z = H.z0 + H.lambda * s;
      if (z < L.z_min - kMargin || z > L.z_max + kMargin) continue;
      best = s;
      best_layer = li;
    }
  }
  if (H.lambda != 0) {
    for (int32_t li : disk_layers_) {
      const LayerInfo& L = layers[static_cast<std::size_t>(li)];
      const double s = (L.z - H.z0) / H.lambda;
      if (s <= s_from + kEps || s >= best || s > s_limit) continue;
      const auto p = H.position(s);
      const double r = std::hypot(p[0], p[1]);
      if (r < L.r_min - kMargin || r > L.r_max + kMargin) continue;
      best = s;
      best_layer = li;
    }
  }
  if (best_layer < 0) return false;
  layer = best_layer;
  s_out = best;
  return true;
}

inline void Simulator::propagate(Helix H, uint64_t particle_id, double mass, Philox& rng,
                                 Workspace& ws, std::vector<RawHit>& hits,
                                 Interaction& interaction) const {
  interaction = Interaction{};
  const auto& layers = det_.layers();
  const auto& modules = det_.modules();
  double angle_left = opt_.max_half_turns * kPi;  // turning angle still allowed
  double s_cur = 0, s_limit = angle_left * H.R;
  std::vector<std::pair<double, RawHit>> layer_hits;
  for (int step = 0; step < 256; ++step) {
    int32_t li = -1;
    double s_star = 0;
    if (!next_crossing(H, s_cur, s_limit, li, s_star)) break;
    const LayerInfo& L = layers[static_cast<std::size_t>(li)];
    // Query box: the helix around s_star over the layer's envelope thickness.
    const auto P = H.position(s_star);
    const double phi_p = std::atan2(P[1], P[0]);
    double delta;
    if (L.barrel) {
      const double rp = std::hypot(P[0], P[1]);
      const double ph = H.phi_at(s_star);
      const double drds = (P[0] * std::cos(ph) + P[1] * std::sin(ph)) / std::max(rp, 1e-9);
      const double half_env = std::max(L.r_max - L.radius, L.radius - L.r_min) + 0.5;
      delta = std::min(half_env / std::max(std::abs(drds), 0.02), 200.0);
    } else {
      const double half_env = std::max(L.z_max - L.z, L.z - L.z_min) + 0.5;
      delta = std::min(half_env / std::abs(H.lambda), 200.0);
    }
    double phi_lo = 0, phi_hi = 0, q_lo = 1e30, q_hi = -1e30;
    for (int k = -2; k <= 2; ++k) {
      const auto Q = H.position(s_star + 0.5 * k * delta);
      const double dphi = std::remainder(std::atan2(Q[1], Q[0]) - phi_p, 2 * kPi);
      phi_lo = std::min(phi_lo, dphi);
      phi_hi = std::max(phi_hi, dphi);
      const double q = L.barrel ? Q[2] : std::hypot(Q[0], Q[1]);
      q_lo = std::min(q_lo, q);
      q_hi = std::max(q_hi, q);
    }
    const double r_ref = std::max(std::hypot(P[0], P[1]), 10.0);
    ws.cand.clear();
    det_.candidates(li, phi_p + phi_lo - 1.0 / r_ref, phi_p + phi_hi + 1.0 / r_ref, q_lo - 1.0,
                    q_hi + 1.0, ws.cand, ws.stamp, ws.stamp_value);
    layer_hits.clear();
    for (int32_t mi : ws.cand) {
      const Module& m = modules[static_cast<std::size_t>(mi)];
      const double nx = m.rot[0][2], ny = m.rot[1][2], nz = m.rot[2][2];
      double s = s_star;
      bool ok = false;
      for (int it = 0; it < 12; ++it) {
        const double ph = H.phi_at(s);
        const double sp = std::sin(ph), cp = std::cos(ph);
        const double x = H.x0 + H.h * H.R * (sp - std::sin(H.phi0));
        const double y = H.y0 - H.h * H.R * (cp - std::cos(H.phi0));
        const double z = H.z0 + H.lambda * s;
        const double f = nx * (x - m.c[0]) + ny * (y - m.c[1]) + nz * (z - m.c[2]);
        const double fp = nx * cp + ny * sp + nz * H.lambda;
        if (std::abs(fp) < 1e-9) break;
        const double ds = std::clamp(-f / fp, -100.0, 100.0);
        s += ds;
        if (std::abs(ds) < 1e-9) {
          ok = true;
          break;
        }
      }
      if (!ok || s <= s_cur + 1e-6 || s > s_limit || std::abs(s - s_star) > delta + 50) continue;
      const auto X = H.position(s);
      const auto loc = m.to_local(X[0], X[1], X[2]);
      if (!m.contains(loc[0], loc[1])) continue;
      RawHit h;
      h.module = mi;
      h.particle = particle_id;
      h.tx = X[0];
      h.ty = X[1];
      h.tz = X[2];
      const auto p = H.momentum(s);
      h.tpx = p[0];
      h.tpy = p[1];
      h.tpz = p[2];
      const double pn = std::sqrt(p[0] * p[0] + p[1] * p[1] + p[2] * p[2]);
      const auto dl = m.to_local(m.c[0] + p[0] / pn, m.c[1] + p[1] / pn, m.c[2] + p[2] / pn);
      h.du = dl[0];
      h.dv = dl[1];
      h.dw = dl[2];
      double su, sv;
      sigma_for(m, su, sv);
      double v = std::clamp(loc[1] + sv * rng.normal(), -m.hv, m.hv);
      const double hu = m.half_u_at(v);
      double u = std::clamp(loc[0] + su * rng.normal(), -hu, hu);
      const auto g = m.to_global(u, v, 0);
      h.x = g[0];
      h.y = g[1];
      h.z = g[2];
      layer_hits.emplace_back(s, h);
    }
    std::sort(layer_hits.begin(), layer_hits.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& lh : layer_hits) {
      if (opt_.hit_inefficiency > 0 && rng.uniform_double() < opt_.hit_inefficiency) continue;
      hits.push_back(lh.second);
    }
    if (opt_.interaction_probability > 0 && rng.uniform_double() < opt_.interaction_probability) {
      const auto p = H.momentum(s_star);
      interaction = Interaction{true, P[0], P[1], P[2], p[0], p[1], p[2]};
      break;
    }
    if (opt_.multiple_scattering) {
      // Highland kick at the nominal crossing; path through the layer grows as 1/cos(incidence).
      const auto p = H.momentum(s_star);
      const double pmag = std::sqrt(p[0] * p[0] + p[1] * p[1] + p[2] * p[2]);
      double dir[3] = {p[0] / pmag, p[1] / pmag, p[2] / pmag};
      double cos_inc;
      if (L.barrel) {
        const double rp = std::max(std::hypot(P[0], P[1]), 1e-9);
        cos_inc = std::abs(dir[0] * P[0] / rp + dir[1] * P[1] / rp);
      } else {
        cos_inc = std::abs(dir[2]);
      }
      const Module& m0 = modules[static_cast<std::size_t>(L.first_module)];
      const double x = x0_for(m0) / std::max(cos_inc, 0.1);
      const double beta = pmag / std::sqrt(pmag * pmag + mass * mass);
      const double theta0 = 0.0136 / (beta * pmag) * std::sqrt(x) * (1 + 0.038 * std::log(x));
      // Two directions orthogonal to dir.
      double e1[3];
      if (std::abs(dir[2]) < 0.9) {
        e1[0] = -dir[1], e1[1] = dir[0], e1[2] = 0;
      } else {
        e1[0] = 0, e1[1] = -dir[2], e1[2] = dir[1];
      }
      const double n1 = std::sqrt(e1[0] * e1[0] + e1[1] * e1[1] + e1[2] * e1[2]);
      for (double& e : e1) e /= n1;
      const double e2[3] = {dir[1] * e1[2] - dir[2] * e1[1], dir[2] * e1[0] - dir[0] * e1[2],
                            dir[0] * e1[1] - dir[1] * e1[0]};
      const double t1 = theta0 * rng.normal(), t2 = theta0 * rng.normal();
      double nd[3];
      for (int k = 0; k < 3; ++k) nd[k] = dir[k] + t1 * e1[k] + t2 * e2[k];
      const double nn = std::sqrt(nd[0] * nd[0] + nd[1] * nd[1] + nd[2] * nd[2]);
      angle_left -= s_star / H.R;  // (s_cur is 0 after every re-anchoring)
      H = Helix::from_momentum(P[0], P[1], P[2], pmag * nd[0] / nn, pmag * nd[1] / nn,
                               pmag * nd[2] / nn, H.q, opt_.bz);
      s_cur = 0;
      s_limit = angle_left * H.R;
      if (angle_left <= 0) break;
    } else {
      s_cur = s_star;
    }
  }
}

inline void Simulator::make_cells(const RawHit& h, int32_t hit_id, Philox& rng,
                                  Cells& cells) const {
  const Module& m = det_.modules()[static_cast<std::size_t>(h.module)];
  const auto loc = m.to_local(h.x, h.y, h.z);
  const double dw = std::max(std::abs(h.dw), 0.05);
  // Extent of the path through the sensor thickness, projected on u and v.
  const double eu = m.thickness * std::abs(h.du) / dw, ev = m.thickness * std::abs(h.dv) / dw;
  const bool pixel = m.kind() == SensorKind::kPixel;
  const int32_t n_u_cells = std::max(1, static_cast<int32_t>(2 * m.max_hu / m.pitch_u));
  const int32_t n_v_cells = std::max(1, static_cast<int32_t>(2 * m.hv / m.pitch_v));
  auto cell_u = [&](double u) {
    return std::clamp(static_cast<int32_t>(std::floor((u + m.max_hu) / m.pitch_u)), 0,
                      n_u_cells - 1);
  };
  auto cell_v = [&](double v) {
    return std::clamp(static_cast<int32_t>(std::floor((v + m.hv) / m.pitch_v)), 0,
                      n_v_cells - 1);
  };
  int32_t u0 = cell_u(loc[0] - 0.5 * eu), u1 = cell_u(loc[0] + 0.5 * eu);
  int32_t v0 = cell_v(loc[1] - (pixel ? 0.5 * ev : 0)), v1 = cell_v(loc[1] + (pixel ? 0.5 * ev : 0));
  u1 = std::min(u1, u0 + 3);
  v1 = std::min(v1, v0 + (pixel ? 3 : 0));
  const int32_t n = (u1 - u0 + 1) * (v1 - v0 + 1);
  // Deposit ~ path length in silicon with a Landau-like (exponential) tail; arbitrary units
  // of the same order as the Kaggle cells (values ~0.01-0.3).
  const double path = m.thickness / dw;
  const double total = 0.1 * path / m.thickness * (0.8 + 0.4 * rng.uniform_double()) *
                       (1.0 - 0.3 * std::log(1.0 - rng.uniform_double()));
  for (int32_t a = u0; a <= u1; ++a)
    for (int32_t b = v0; b <= v1; ++b) {
      cells.hit_id.push_back(hit_id);
      cells.ch0.push_back(a);
      cells.ch1.push_back(b);
      cells.value.push_back(
          static_cast<float>(total / n * (0.6 + 0.8 * rng.uniform_double())));
    }
}

inline Event Simulator::generate(int64_t event_id, SimulatorStats& stats) const {
  const SimulatorOptions& o = opt_;
  Philox rng = Philox(o.seed).split(static_cast<uint64_t>(event_id));
  Event ev;
  ev.event_id = event_id;
  stats = SimulatorStats{};

  // Vertices and the particle count of each.
  struct Vtx {
    double x, y, z;
  };
  std::vector<Vtx> vtx(static_cast<std::size_t>(o.n_vertices));
  for (auto& v : vtx) {
    v.x = o.vertex_sigma_x * rng.normal();
    v.y = o.vertex_sigma_y * rng.normal();
    v.z = o.vertex_sigma_z * rng.normal();
  }
  std::vector<int64_t> per_vertex(vtx.size(), 0);
  for (int64_t i = 0; i < o.n_particles; ++i)
    ++per_vertex[static_cast<std::size_t>(rng.below(vtx.size()))];

  const double u_lo = pt_cdf(o.pt_min), u_hi = pt_cdf(o.pt_max);
  const double eta_c_hi = abs_eta_cdf(o.eta_max);
  constexpr double kPionMass = 0.13957;
  std::vector<RawHit> raw;
  raw.reserve(static_cast<std::size_t>(static_cast<double>(o.n_particles) * 14 +
                                       1.1 * o.noise_per_module * static_cast<double>(det_.size())));
  Workspace ws;
  Particles& P = ev.particles;
  Interaction inter, ignored;
  // Appends one particle row, propagates it and records its nhits.
  auto emit = [&](const ParticleBarcode& bc, double x, double y, double z, double px, double py,
                  double pz, int q, Interaction& out) {
    P.particle_id.push_back(encode_particle_id(bc));
    P.vx.push_back(static_cast<float>(x));
    P.vy.push_back(static_cast<float>(y));
    P.vz.push_back(static_cast<float>(z));
    P.px.push_back(static_cast<float>(px));
    P.py.push_back(static_cast<float>(py));
    P.pz.push_back(static_cast<float>(pz));
    P.q.push_back(q);
    const std::size_t before = raw.size();
    out = Interaction{};
    if (std::hypot(px, py) >= o.pt_min_propagate)
      propagate(Helix::from_momentum(x, y, z, px, py, pz, q, o.bz), P.particle_id.back(),
                kPionMass, rng, ws, raw, out);
    P.nhits.push_back(static_cast<int32_t>(raw.size() - before));
  };
  for (std::size_t vi = 0; vi < vtx.size(); ++vi) {
    for (int64_t k = 0; k < per_vertex[vi]; ++k) {
      const double pt = pt_quantile(u_lo + (u_hi - u_lo) * rng.uniform_double());
      const double abs_eta = abs_eta_quantile(eta_c_hi * rng.uniform_double());
      const double eta = rng.uniform_double() < 0.5 ? -abs_eta : abs_eta;
      const double phi = -kPi + 2 * kPi * rng.uniform_double();
      const int q = rng.uniform_double() < o.positive_fraction ? 1 : -1;
      const ParticleBarcode parent{static_cast<uint32_t>(vi + 1), static_cast<uint32_t>(k + 1), 0,
                                   0, 0};
      emit(parent, vtx[vi].x, vtx[vi].y, vtx[vi].z, pt * std::cos(phi), pt * std::sin(phi),
           pt * std::sinh(eta), q, inter);
      if (!inter.happened || o.secondaries_mean <= 0) continue;
      // Secondaries at the interaction point, rows right after their parent (ids ascending).
      int n_sec;
      if (o.secondaries_mean >= 1) {
        const double l = std::exp(-(o.secondaries_mean - 1));
        n_sec = 1;
        for (double p = rng.uniform_double(); p > l && n_sec < 64; p *= rng.uniform_double())
          ++n_sec;
      } else {
        n_sec = rng.uniform_double() < o.secondaries_mean ? 1 : 0;
      }
      const double pm = std::sqrt(inter.px * inter.px + inter.py * inter.py + inter.pz * inter.pz);
      const double d[3] = {inter.px / pm, inter.py / pm, inter.pz / pm};
      double e1[3];
      if (std::abs(d[2]) < 0.9) {
        e1[0] = -d[1], e1[1] = d[0], e1[2] = 0;
      } else {
        e1[0] = 0, e1[1] = -d[2], e1[2] = d[1];
      }
      const double n1 = std::sqrt(e1[0] * e1[0] + e1[1] * e1[1] + e1[2] * e1[2]);
      for (double& e : e1) e /= n1;
      const double e2[3] = {d[1] * e1[2] - d[2] * e1[1], d[2] * e1[0] - d[0] * e1[2],
                            d[0] * e1[1] - d[1] * e1[0]};
      for (int j = 0; j < n_sec; ++j) {
        double spt = 0, dir[3] = {0, 0, 1};
        for (int attempt = 0; attempt < 32; ++attempt) {
          spt = o.secondary_pt_median * std::exp(o.secondary_pt_log_sigma * rng.normal());
          const double th = o.secondary_angle_sigma * rng.normal();
          const double ps = 2 * kPi * rng.uniform_double();
          for (int c = 0; c < 3; ++c)
            dir[c] = std::cos(th) * d[c] + std::sin(th) * (std::cos(ps) * e1[c] + std::sin(ps) * e2[c]);
          if (spt >= 0.1 && std::hypot(dir[0], dir[1]) > 0.02) break;
          spt = 0;
        }
        if (spt == 0) continue;
        const double dt = std::hypot(dir[0], dir[1]);
        const double sp = spt / dt;  // |p| giving the drawn pT
        const int sq = rng.uniform_double() < o.secondary_positive_fraction ? 1 : -1;
        const auto id = static_cast<uint32_t>(std::min(j + 1, 4095));
        const ParticleBarcode child{parent.vertex_id, parent.primary_id, 1, id, id};
        emit(child, inter.x, inter.y, inter.z, sp * dir[0], sp * dir[1], sp * dir[2], sq, ignored);
      }
    }
  }
  stats.particles = static_cast<int64_t>(P.size());
  stats.true_hits = static_cast<int64_t>(raw.size());

  // Noise: Poisson(noise_per_module) hits per active module, uniform over its area.
  if (o.noise_per_module > 0) {
    const double l = std::exp(-o.noise_per_module);
    const auto& layers = det_.layers();
    for (const auto* group : {&disk_layers_, &barrel_layers_}) {
      for (int32_t li : *group) {
        const LayerInfo& L = layers[static_cast<std::size_t>(li)];
        for (int32_t k = 0; k < L.n_modules; ++k) {
          const int32_t mi = L.first_module + k;
          const Module& m = det_.modules()[static_cast<std::size_t>(mi)];
          int n = 0;
          for (double p = rng.uniform_double(); p > l && n < 64; p *= rng.uniform_double()) ++n;
          for (int j = 0; j < n; ++j) {
            double u, v;
            do {
              u = rng.uniform(-m.max_hu, m.max_hu);
              v = rng.uniform(-m.hv, m.hv);
            } while (!m.contains(u, v));
            const auto g = m.to_global(u, v, 0);
            RawHit h;
            h.module = mi;
            h.x = h.tx = g[0];
            h.y = h.ty = g[1];
            h.z = h.tz = g[2];
            raw.push_back(h);
          }
        }
      }
    }
  }
  stats.noise_hits = static_cast<int64_t>(raw.size()) - stats.true_hits;

  // hit_id order: by (volume, layer, module) = module index; creation order inside a module.
  std::vector<std::size_t> order(raw.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return raw[a].module < raw[b].module; });
  Hits& H = ev.hits;
  Truth& T = ev.truth;
  const std::size_t n = raw.size();
  H.hit_id.resize(n);
  H.x.resize(n);
  H.y.resize(n);
  H.z.resize(n);
  H.volume_id.resize(n);
  H.layer_id.resize(n);
  H.module_id.resize(n);
  T.hit_id.resize(n);
  T.particle_id.resize(n);
  T.tx.resize(n);
  T.ty.resize(n);
  T.tz.resize(n);
  T.tpx.resize(n);
  T.tpy.resize(n);
  T.tpz.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const RawHit& h = raw[order[i]];
    const Module& m = det_.modules()[static_cast<std::size_t>(h.module)];
    const auto id = static_cast<int32_t>(i + 1);
    H.hit_id[i] = id;
    H.x[i] = static_cast<float>(h.x);
    H.y[i] = static_cast<float>(h.y);
    H.z[i] = static_cast<float>(h.z);
    H.volume_id[i] = m.volume_id;
    H.layer_id[i] = m.layer_id;
    H.module_id[i] = m.module_id;
    T.hit_id[i] = id;
    T.particle_id[i] = h.particle;
    T.tx[i] = static_cast<float>(h.tx);
    T.ty[i] = static_cast<float>(h.ty);
    T.tz[i] = static_cast<float>(h.tz);
    T.tpx[i] = static_cast<float>(h.tpx);
    T.tpy[i] = static_cast<float>(h.tpy);
    T.tpz[i] = static_cast<float>(h.tpz);
  }
  if (o.cells) {
    ev.cells.hit_id.reserve(n * 3);
    for (std::size_t i = 0; i < n; ++i)
      make_cells(raw[order[i]], static_cast<int32_t>(i + 1), rng, ev.cells);
  }
  stats.cells = static_cast<int64_t>(ev.cells.size());
  assign_trackml_weights(ev);
  return ev;
}

}  // namespace mambatrack::data
