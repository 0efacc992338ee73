// The golden runner's plug-in interface: each op handler (golden_<op>.cpp) registers itself for
// one `op` value of a golden file's `case` metadata, runs that case with our implementation(s)
// and returns one result per tensor compared: what we computed, the name of the expected tensor,
// and the tolerance on ||got - want||_2 / ||want||_2 (shared/golden/README.md).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mambatrack/core/safetensors.hpp"

namespace mambatrack::golden {

struct Case {
  std::string path;
  const SafetensorsFile& file;
  nlohmann::json meta;  // the parsed `case` metadata

  std::vector<double> want(const std::string& name) const { return file.as_double(name); }
  int64_t size(const char* key) const { return meta.at(key).get<int64_t>(); }
};

struct Result {
  std::string label;        // e.g. "cpu f32 grad_u"
  std::string want;         // the expected tensor's name in the file
  std::vector<double> got;  // our values, same element order as the file's tensor
  double tolerance;         // on the relative L2 error, with its reason in the handler
};

using Handler = std::function<std::vector<Result>(const Case&)>;

inline std::map<std::string, Handler>& registry() {
  static std::map<std::string, Handler> handlers;
  return handlers;
}

// static golden::Register reg("selective_scan", run_selective_scan);
struct Register {
  Register(const std::string& op, Handler h) { registry()[op] = std::move(h); }
};

}  // namespace mambatrack::golden
