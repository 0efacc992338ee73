// `mambatrack simulate`: TrackML-format events from the built-in simulator (or a given
// detectors.csv), written as eventNNNNNNNNN-{hits,cells,particles,truth}.csv[.gz] plus the
// detectors.csv they were made with, so every TrackML reader (ours, trackml-library, ACTS) and
// the pretraining commands read them.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

#include "commands/args.hpp"
#include "mambatrack/data/detector.hpp"
#include "mambatrack/data/simulator.hpp"
#include "mambatrack/data/trackml_io.hpp"

namespace mambatrack::cli {

// Simulates events first .. first+n-1 into `dir` (created by write_event) with the detectors.csv
// they were made with beside them; progress on stderr. Returns the number of hits written.
inline int64_t write_simulated_events(const std::string& dir, const data::Detector& detector,
                                      const data::SimulatorOptions& options, int64_t first, int64_t n,
                                      bool gzip = false) {
  const data::Simulator sim(detector, options);
  const auto t0 = std::chrono::steady_clock::now();
  int64_t hits = 0;
  for (int64_t i = 0; i < n; ++i) {
    data::Event ev = sim.generate(first + i);
    hits += static_cast<int64_t>(ev.hits.size());
    data::write_event(dir, ev, gzip);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "\rsimulating into %s: event %lld/%lld (%lld hits, %.1f s)", dir.c_str(),
                 static_cast<long long>(i + 1), static_cast<long long>(n), static_cast<long long>(hits), s);
  }
  std::fprintf(stderr, "\n");
  data::write_detectors(dir + "/detectors.csv", detector.records());
  return hits;
}

inline int run_simulate(int argc, char** argv) {
  Args a("simulate", "Simulate TrackML-like events and write them in the Kaggle formats.");
  a.option("events", "10", "number of events")
      .option("out", "", "output directory (created)")
      .option("first-event", "1000", "id of the first event")
      .option("particles", "10000", "generation-0 charged particles per event")
      .option("vertices", "160", "primary vertices per event")
      .option("seed", "1", "random seed; the same seed gives the same events everywhere")
      .option("pt-min", "0.1", "minimum pT of generation-0 particles [GeV]")
      .option("pt-max", "100", "maximum pT [GeV]")
      .option("eta-max", "4", "maximum |eta|")
      .option("noise", "0.93", "mean noise hits per module")
      .option("volumes", "", "comma-separated volume ids to simulate (default: all)")
      .option("detector", "", "detectors.csv to use instead of the built-in TrackML layout")
      .flag("no-scattering", "turn multiple scattering off")
      .flag("no-cells", "do not write cells files")
      .flag("gzip", "write .csv.gz files");
  if (!a.parse(argc, argv)) return 0;
  const std::string out = a.str("out");
  if (out.empty()) throw ConfigError("simulate: --out DIR is required");
  data::SimulatorOptions o;
  o.seed = static_cast<uint64_t>(a.integer("seed"));
  o.n_particles = a.integer("particles");
  o.n_vertices = static_cast<int32_t>(a.integer("vertices"));
  o.pt_min = a.number("pt-min");
  o.pt_max = a.number("pt-max");
  o.eta_max = a.number("eta-max");
  o.noise_per_module = a.number("noise");
  if (a.given("volumes")) o.volumes = a.int_list("volumes");
  o.multiple_scattering = !a.flag_set("no-scattering");
  o.cells = !a.flag_set("no-cells");
  data::Detector detector = a.given("detector") ? data::Detector(data::read_detectors(a.str("detector")))
                                                : data::Detector::trackml_builtin();
  const int64_t n = a.integer("events");
  const int64_t hits = write_simulated_events(out, detector, o, a.integer("first-event"), n, a.flag_set("gzip"));
  std::printf("wrote %lld events (%lld hits) and detectors.csv to %s\n", static_cast<long long>(n),
              static_cast<long long>(hits), out.c_str());
  return 0;
}

}  // namespace mambatrack::cli
