// k next-nearest neighbours (FM4NPP targets, k = 30): the k-d tree against the O(N²) brute force,
// on TPC-like events (points at 48 radii, |z| < 105 cm) of growing size, and on the real barrel
// hits of TrackML event 1000 (qallse ez-1.0 subset, 55,446 hits) when ../shared is there.
// Usage: bench_fm4npp_knn [shared_dir]
#include <cmath>
#include <cstdio>
#include <string>

#include "bench_util.hpp"
#include "mambatrack/core/philox.hpp"
#include "mambatrack/data/fm4npp_points.hpp"
#include "mambatrack/data/trackml_io.hpp"

using namespace mambatrack;
using namespace mambatrack::data;

namespace {
std::vector<float> tpc_like(int64_t n, uint64_t seed) {
  Philox rng(seed, 0);
  std::vector<float> exyz;
  for (int64_t i = 0; i < n; ++i) {
    const double r = 31.5 + (75.2 - 31.5) * static_cast<double>(rng.below(48)) / 47.0 + rng.uniform(-0.05, 0.05);
    const double phi = rng.uniform(-M_PI, M_PI);
    exyz.insert(exyz.end(), {static_cast<float>(rng.uniform(10, 900)), static_cast<float>(r * std::cos(phi)),
                             static_cast<float>(r * std::sin(phi)), static_cast<float>(rng.uniform(-105, 105))});
  }
  return exyz;
}

void run(const char* what, PointSet p, bool brute) {
  permute_points(p, r_sort_order(p));
  const std::vector<float> xyz = point_coordinates(p);
  const int64_t n = p.size();
  const double t_tree = bench::median_seconds([&] { knn_later_indices(xyz, kDefaultKnn); }, 3);
  double t_brute = NAN;
  if (brute) t_brute = bench::median_seconds([&] { knn_later_indices_brute(xyz, kDefaultKnn); }, 1, 0);
  std::printf("| %-28s | %8lld | %10.2f | %10.2f | %8.1f | %8.0f |\n", what, static_cast<long long>(n), 1e3 * t_tree,
              1e3 * t_brute, t_brute / t_tree, 1e9 * t_tree / (n * std::log2(double(n))));
}
}  // namespace

int main(int argc, char** argv) {
  const std::string shared = argc > 1 ? argv[1] : "../shared";
  std::printf("k = %lld, %d thread(s) for the tree (OMP_NUM_THREADS), brute force serial\n\n", static_cast<long long>(kDefaultKnn), num_threads());
  std::printf("| %-28s | %8s | %10s | %10s | %8s | %8s |\n", "points", "N", "tree ms", "brute ms", "speed-up",
              "ns/NlogN");
  std::printf("|------------------------------|----------|------------|------------|----------|----------|\n");
  for (int64_t n : {856, 3200, 10000, 30000, 100000}) {
    const auto exyz = tpc_like(n, 7 + n);
    run("TPC-like", points_from_exyz(exyz.data(), n), n <= 30000);
  }
  const std::string prefix = shared + "/data/trackml/qallse_ez-1.0_hpt-1.0/event000001000";
  try {
    const Event ev = read_event(prefix, false, false, false);
    run("TrackML barrel, event 1000", points_from_event(ev), true);
  } catch (const Error& e) {
    std::printf("(TrackML event skipped: %s)\n", e.what());
  }
  return 0;
}
