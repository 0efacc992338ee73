// TrackML CSV speed on one core: parsing the real hits, truth, particles and detectors files from
// memory, reading them from disk plain and gzip (a .gz copy is written to $TMPDIR first), and
// formatting/writing them back. Rates are MB/s of CSV text and rows/s. Target: >= 100 MB/s parse.
// On a shared machine wall time counts the time other processes hold the core, so each step is
// timed both ways: median wall time and median thread CPU time (CLOCK_THREAD_CPUTIME_ID).
// Usage: bench_trackml_csv [shared_dir]   (default $MAMBATRACK_SHARED_DIR, else ../shared)
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <cstdlib>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "bench_util.hpp"
#include "mambatrack/data/trackml_io.hpp"

using namespace mambatrack;
using namespace mambatrack::data;

namespace {

double g_parse_mb = 0, g_parse_s = 0;

double thread_cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

struct Timing {
  double wall, cpu;
};

// Median wall and median thread-CPU seconds of `runs` calls after one warm-up.
template <class F>
Timing time_it(F&& f, int runs) {
  f();
  std::vector<double> cpu;
  const double wall = bench::median_seconds([&] {
    const double a = thread_cpu_seconds();
    f();
    cpu.push_back(thread_cpu_seconds() - a);
  }, runs, 0);
  std::sort(cpu.begin(), cpu.end());
  return {wall, cpu[cpu.size() / 2]};
}

void row(const char* file, const char* step, double mb, Timing t, std::size_t rows) {
  std::printf("%-24s %-24s %6.2f %8.2f %8.1f %8.2f %8.1f %8.2f\n", file, step, mb, t.wall * 1e3, mb / t.wall,
              t.cpu * 1e3, mb / t.cpu, rows / t.cpu / 1e6);
}

// Parse, read (plain and gz), format and write one file; Parse/Read/Format/Write are the
// trackml_io functions for its type.
template <class Parse, class Read, class Format, class Write>
void bench_file(const char* label, const std::string& path, const std::string& tmp, Parse parse, Read read,
                Format format, Write write) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    std::printf("%-24s skipped: %s is absent\n", label, path.c_str());
    return;
  }
  const std::string text = read_text_file(path);
  const double mb = text.size() / 1e6;
  auto table = parse(text.data(), text.size(), path);
  const std::size_t rows = table.size();
  std::size_t check = 0;
  const Timing t_parse = time_it([&] { check += parse(text.data(), text.size(), path).size(); }, 21);
  row(label, "parse from memory", mb, t_parse, rows);
  g_parse_mb += mb, g_parse_s += t_parse.cpu;
  row(label, "read .csv (disk)", mb, time_it([&] { check += read(path).size(); }, 11), rows);
  const std::string gz = tmp + "/copy.csv.gz";
  write_text_file(gz, text);
  row(label, "read .csv.gz", mb, time_it([&] { check += read(gz).size(); }, 11), rows);
  std::string out;
  const Timing t_fmt = time_it([&] { out = format(table, path); }, 11);
  row(label, "format to text", out.size() / 1e6, t_fmt, rows);
  row(label, "write .csv (+fsync)", out.size() / 1e6, time_it([&] { write(tmp + "/out.csv", table); }, 7), rows);
  row(label, "write .csv.gz (level 1)", out.size() / 1e6,
      time_it([&] { write(tmp + "/out.csv.gz", table); }, 7), rows);
  std::remove((tmp + "/out.csv").c_str());
  std::remove((tmp + "/out.csv.gz").c_str());
  std::remove(gz.c_str());
  if (check == 0) std::printf("(empty)\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::string shared = argc > 1 ? argv[1] : "";
  if (shared.empty()) {
    const char* env = std::getenv("MAMBATRACK_SHARED_DIR");
    shared = env ? env : "../shared";
  }
  const std::string dir = shared + "/data/trackml";
  const char* tmp_env = std::getenv("TMPDIR");
  const std::string tmp = std::string(tmp_env && *tmp_env ? tmp_env : "/tmp") + "/bench_trackml_csv." +
                          std::to_string(::getpid());
  ::mkdir(tmp.c_str(), 0755);

  std::printf("TrackML CSV on one core (MB = 1e6 bytes of CSV text; median of timed runs)\n");
  std::printf("%-24s %-24s %6s %8s %8s %8s %8s %8s\n", "file", "step", "MB", "wall ms", "MB/s", "cpu ms",
              "MB/s", "Mrows/s");
  bench_file("hits (ez-1.0 barrel)", dir + "/qallse_ez-1.0_hpt-1.0/event000001000-hits.csv", tmp,
             parse_hits_buffer, read_hits, format_hits, write_hits);
  bench_file("truth (ez-0.5 barrel)", dir + "/qallse_ez-0.5_hpt-1.0/event000001000-truth.csv", tmp,
             parse_truth_buffer, read_truth, format_truth, write_truth);
  bench_file("particles (event 1000)", dir + "/event000001000-particles.csv", tmp, parse_particles_buffer,
             read_particles, format_particles, write_particles);
  bench_file("detectors", dir + "/detectors.csv", tmp, parse_detectors_buffer, read_detectors,
             [](const std::vector<ModuleRecord>& m, const std::string& n) { return format_detectors(m, n); },
             write_detectors);
  ::rmdir(tmp.c_str());
  if (g_parse_s > 0) {
    std::printf("all four files, parse from memory: %.1f MB/s of CPU time (target >= 100 MB/s)\n",
                g_parse_mb / g_parse_s);
    std::printf("memcpy ceiling: %.2f GB/s (read + write, one core)\n", bench::memcpy_bandwidth() / 1e9);
  }
  return 0;
}
