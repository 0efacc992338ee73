// Checkpoint I/O speed: serialising and parsing a 256 MB float32 safetensors file in memory, and
// the atomic write + read through the file system, against one core's memcpy bandwidth.
#include <cstdio>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "mambatrack/core/philox.hpp"
#include "mambatrack/core/safetensors.hpp"

using namespace mambatrack;

int main() {
  const int64_t tensors = 64, per = int64_t(1) << 20;  // 64 tensors of 4 MB: 256 MB
  std::vector<std::vector<float>> data(tensors, std::vector<float>(per));
  Philox rng(1);
  for (auto& d : data)
    for (auto& x : d) x = rng.uniform();
  const double bytes = double(tensors * per * 4);

  std::vector<unsigned char> file;
  const double t_ser = bench::median_seconds([&] {
    SafetensorsWriter w;
    w.set_metadata("format", "pt");
    for (int64_t i = 0; i < tensors; ++i) w.add<float>("layers." + std::to_string(i) + ".weight", {per}, data[i].data());
    file = w.serialize();
  }, 5);
  double checksum = 0;
  const double t_parse = bench::median_seconds([&] {
    SafetensorsFile f(file, "memory");
    checksum += f.read<float>("layers.7.weight")[3];
  }, 5);
  const std::string path = "bench_safetensors_io.safetensors";
  const double t_write = bench::median_seconds([&] { SafetensorsWriter::write_file_atomically(path, file); }, 3);
  const double t_read = bench::median_seconds([&] { checksum += SafetensorsFile::open(path).tensors().size(); }, 3);
  std::remove(path.c_str());
  const double ceiling = bench::memcpy_bandwidth();

  std::printf("safetensors I/O, %.0f MB of float32 in %lld tensors (checksum %.3f)\n", bytes / 1e6,
              static_cast<long long>(tensors), checksum);
  std::printf("%-34s %10s %10s %12s\n", "step", "ms", "GB/s", "of memcpy");
  auto row = [&](const char* name, double s, double moved) {
    std::printf("%-34s %10.1f %10.2f %11.0f%%\n", name, s * 1e3, moved / s / 1e9, 100.0 * (moved / s) / ceiling);
  };
  row("serialise (copy in + copy out)", t_ser, 4 * bytes);
  row("parse + copy one tensor out", t_parse, 2 * bytes);
  row("atomic write (write + fsync)", t_write, bytes);
  row("read whole file", t_read, 2 * bytes);
  std::printf("memcpy ceiling: %.2f GB/s (read + write, one core)\n", ceiling / 1e9);
  return 0;
}
