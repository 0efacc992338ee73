// golden_runner DIR [--require-all]: runs every DIR/*.safetensors golden case through the handler
// registered for its `op`, printing one line per compared tensor with its relative error. Exit 0
// when everything matches, 1 on any mismatch or error, 77 when DIR does not exist or
// no file in it has a handler yet. Ops without a
// handler are reported and, with --require-all, count as failures.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "golden.hpp"

using namespace mambatrack;

namespace {
double relative_error(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: golden_runner DIR [--require-all]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const bool require_all = argc > 2 && std::strcmp(argv[2], "--require-all") == 0;
  DIR* d = opendir(dir.c_str());
  if (!d) {
    std::printf("golden directory %s not found: skipped\n", dir.c_str());
    return 77;
  }
  std::vector<std::string> files;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0) files.push_back(n);
  }
  closedir(d);
  std::sort(files.begin(), files.end());
  int compared = 0, failed = 0, unhandled = 0;
  for (const auto& name : files) {
    const std::string path = dir + "/" + name;
    try {
      const auto file = SafetensorsFile::open(path);
      const auto meta = nlohmann::json::parse(file.metadata().at("case"));
      const std::string op = meta.at("op").get<std::string>();
      auto it = golden::registry().find(op);
      if (it == golden::registry().end()) {
        std::printf("%-28s op %-22s NO HANDLER\n", name.c_str(), op.c_str());
        ++unhandled;
        continue;
      }
      const golden::Case c{path, file, meta};
      for (const auto& r : it->second(c)) {
        const auto want = c.want(r.want);
        bool ok = r.got.size() == want.size();
        const double err = ok ? relative_error(r.got, want) : INFINITY;
        ok = ok && err <= r.tolerance;  // NaN fails too
        std::printf("%-28s %-34s rel err %.3e  (tol %.0e)  %s\n", name.c_str(), r.label.c_str(), err,
                    r.tolerance, ok ? "ok" : "FAIL");
        ++compared;
        failed += !ok;
      }
    } catch (const std::exception& e) {
      std::printf("%-28s ERROR: %s\n", name.c_str(), e.what());
      ++failed;
    }
  }
  std::printf("golden: %d tensors compared, %d failed, %d files without a handler\n", compared, failed,
              unhandled);
  if (failed || (require_all && unhandled)) return 1;
  if (compared == 0) return unhandled ? 77 : 1;  // nothing could be checked: skipped, not passed
  return 0;
}
