// `mambatrack inspect FILE`: prints a safetensors checkpoint's metadata (the model config
// pretty-printed), every tensor's name, dtype and shape, and the parameter count.
#pragma once

#include <algorithm>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "mambatrack/core/safetensors.hpp"

namespace mambatrack::cli {

inline int run_inspect(int argc, char** argv) {
  if (argc < 1 || std::string(argv[0]) == "--help" || std::string(argv[0]) == "-h") {
    std::printf("usage: mambatrack inspect FILE.safetensors\n"
                "Prints the metadata (model config), each tensor's name, dtype and shape, and the\n"
                "number of parameters.\n");
    return argc < 1 ? 2 : 0;
  }
  const auto f = SafetensorsFile::open(argv[0]);
  std::printf("file: %s\n", argv[0]);
  for (const auto& [key, value] : f.metadata()) {
    nlohmann::json parsed = nlohmann::json::parse(value, nullptr, false);
    if (!parsed.is_discarded() && (parsed.is_object() || parsed.is_array()))
      std::printf("metadata %s:\n%s\n", key.c_str(), parsed.dump(2).c_str());
    else
      std::printf("metadata %s: %s\n", key.c_str(), value.c_str());
  }
  std::size_t width = 4;
  for (const auto& t : f.tensors()) width = std::max(width, t.name.size());
  std::printf("%-*s  %-7s  %s\n", static_cast<int>(width), "name", "dtype", "shape");
  int64_t count = 0, bytes = 0;
  auto sorted = f.tensors();
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  for (const auto& t : sorted) {
    std::printf("%-*s  %-7s  %s\n", static_cast<int>(width), t.name.c_str(), dtype_name(t.dtype), t.shape_str().c_str());
    count += t.numel();
    bytes += static_cast<int64_t>(t.bytes());
  }
  std::printf("%zu tensors, %lld values (%.2f M), %.2f MB\n", f.tensors().size(), static_cast<long long>(count),
              count / 1e6, bytes / 1e6);
  return 0;
}

}  // namespace mambatrack::cli
