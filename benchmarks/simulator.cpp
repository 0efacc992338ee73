// Event simulator speed on one core: events/s and hits/s for a 200-particle event (noise in every
// module still dominates its hit count) and a full 10k-particle event, with and without noise,
// plus the cost of formatting the event as Kaggle CSV text.
#include <cstdio>
#include <ctime>

#include "bench_util.hpp"
#include "mambatrack/data/simulator.hpp"
#include "mambatrack/data/trackml_io.hpp"

using namespace mambatrack;
using namespace mambatrack::data;

// CPU seconds of this thread: on a shared machine the wall time includes waiting for the core.
static double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

int main() {
  const Detector det = Detector::trackml_builtin();
  std::printf("simulator, built-in TrackML detector (%zu modules), one core\n\n", det.size());
  std::printf("| particles | noise/module | MS | cells | hits/event | ms/event (wall, median) | "
              "ms/event (CPU, mean) | events/s (CPU) | Mhits/s (CPU) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  struct Case {
    int64_t particles;
    double noise;
    bool ms, cells;
  };
  const Case cases[] = {{200, 0.93, true, true},    {200, 0.0, true, true},
                        {10000, 0.93, true, true},  {10000, 0.93, false, false},
                        {10000, 0.0, true, false}};
  for (const Case& c : cases) {
    SimulatorOptions o;
    o.n_particles = c.particles;
    o.noise_per_module = c.noise;
    o.multiple_scattering = c.ms;
    o.cells = c.cells;
    const Simulator sim(det, o);
    int64_t event = 0;
    std::size_t hits = 0;
    const int runs = c.particles > 1000 ? 9 : 51;
    const double cpu0 = thread_cpu_seconds();
    const double t = bench::median_seconds([&] { hits = sim.generate(event++).hits.size(); }, runs, 2);
    const double cpu = (thread_cpu_seconds() - cpu0) / (runs + 2);
    std::printf("| %lld | %.2f | %s | %s | %zu | %.2f | %.2f | %.1f | %.2f |\n",
                static_cast<long long>(c.particles), c.noise, c.ms ? "on" : "off",
                c.cells ? "on" : "off", hits, 1e3 * t, 1e3 * cpu, 1.0 / cpu,
                static_cast<double>(hits) / cpu / 1e6);
  }
  // Formatting the four CSV files of a full event (what write_event spends besides the disk).
  SimulatorOptions o;
  const Event ev = Simulator(det, o).generate(1);
  std::size_t bytes = 0;
  const double t = bench::median_seconds([&] {
    bytes = format_hits(ev.hits).size() + format_truth(ev.truth).size() +
            format_particles(ev.particles).size() + format_cells(ev.cells).size();
  }, 5);
  std::printf("\nCSV text of a 10k-particle event: %.1f MB in %.1f ms (%.0f MB/s)\n", bytes / 1e6,
              1e3 * t, bytes / t / 1e6);
  return 0;
}
