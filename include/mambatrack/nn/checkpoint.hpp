// Model and training-state checkpoints as safetensors files (DESIGN.md §6):
//   model.safetensors        every parameter under its reference state-dict name and shape (F32),
//                            __metadata__ {"format": "pt", "config": <model config as JSON text>}
//   train_state.safetensors  optimizer buffers per parameter ("optimizer.<buffer>.<name>"), the step,
//                            RNG states and the data cursor, plus free-form JSON in the metadata.
// Files are written atomically; loading checks every name and shape and reports all mismatches
// in one CheckpointError.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/safetensors.hpp"
#include "mambatrack/nn/parameter_store.hpp"

namespace mambatrack::nn {

// Everything besides the weights that resuming a run needs.
struct TrainState {
  int64_t step = 0;
  // Optimizer buffers laid out like the store's flat buffer (e.g. "exp_avg", "exp_avg_sq").
  std::map<std::string, std::vector<float>> buffers;
  // Integer states: RNG (seed, stream, position) triples, the data cursor, counters.
  std::map<std::string, std::vector<int64_t>> integers;
  nlohmann::json extra = nlohmann::json::object();  // scheduler, best metric, ... (metadata)
};

namespace detail {

inline std::string shape_text(const std::vector<int64_t>& s) {
  std::string t = "(";
  for (std::size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + ")";
}

// Reads the tensors named `prefix + param name` of a file into `flat` (the store's layout),
// collecting every problem instead of stopping at the first.
inline void read_params_into(const SafetensorsFile& f, const ParameterStore& store, const std::string& prefix,
                             float* flat, std::vector<std::string>& problems, bool strict_extra) {
  std::set<std::string> expected;
  for (const auto& p : store.params()) {
    const std::string name = prefix + p.name;
    expected.insert(name);
    if (!f.contains(name)) {
      problems.push_back("missing tensor '" + name + "' " + shape_text(p.disk_shape));
      continue;
    }
    const auto& t = f.info(name);
    if (t.shape != p.disk_shape) {
      problems.push_back("tensor '" + name + "' has shape " + t.shape_str() + ", the model expects " +
                         shape_text(p.disk_shape));
      continue;
    }
    if (t.dtype != DType::F32 && t.dtype != DType::F64 && t.dtype != DType::BF16 && t.dtype != DType::F16) {
      problems.push_back("tensor '" + name + "' has dtype " + dtype_name(t.dtype) + ", expected a float type");
      continue;
    }
    auto values = f.tensor<float>(name);  // converts F64/BF16/F16 to float
    std::memcpy(flat + p.offset, values.data(), sizeof(float) * static_cast<std::size_t>(p.numel()));
  }
  if (strict_extra) {
    for (const auto& t : f.tensors())
      if (t.name.compare(0, prefix.size(), prefix) == 0 && !expected.count(t.name))
        problems.push_back("unexpected tensor '" + t.name + "' " + t.shape_str() + " (not in the model)");
  }
}

[[noreturn]] inline void report(const std::string& path, const std::vector<std::string>& problems) {
  std::string msg = path + ": " + std::to_string(problems.size()) + " mismatch" +
                    (problems.size() == 1 ? "" : "es") + " with the model:";
  for (const auto& p : problems) msg += "\n  " + p;
  throw CheckpointError(msg);
}

}  // namespace detail

// Writes model.safetensors: parameters (frozen ones too) with their disk shapes, F32.
inline void save_model(const std::string& path, const ParameterStore& store, const nlohmann::json& config) {
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  w.set_metadata("config", config.dump());
  for (const auto& p : store.params())
    w.add(p.name, DType::F32, p.disk_shape, store.values().data + p.offset,
          sizeof(float) * static_cast<std::size_t>(p.numel()));
  w.write(path);
}

// Reads model.safetensors into the store; returns the stored config (null when absent). Every
// missing, unexpected or mis-shaped tensor is listed in one CheckpointError; the store is left
// untouched unless everything matches.
inline nlohmann::json load_model(const std::string& path, ParameterStore& store) {
  const auto f = SafetensorsFile::open(path);
  std::vector<float> staged(static_cast<std::size_t>(store.flat_size()), 0.0f);
  std::vector<std::string> problems;
  detail::read_params_into(f, store, "", staged.data(), problems, true);
  if (!problems.empty()) detail::report(path, problems);
  std::memcpy(store.values().data, staged.data(), sizeof(float) * staged.size());
  nlohmann::json config;
  auto it = f.metadata().find("config");
  if (it != f.metadata().end()) {
    try {
      config = nlohmann::json::parse(it->second);
    } catch (const nlohmann::json::exception& e) {
      throw CheckpointError(path + ": metadata 'config' is not JSON: " + e.what());
    }
  }
  return config;
}

inline void save_train_state(const std::string& path, const ParameterStore& store, const TrainState& state) {
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  w.set_metadata("extra", state.extra.dump());
  const int64_t step = state.step;
  w.add<int64_t>("step", {}, &step);
  for (const auto& [buffer, values] : state.buffers) {
    if (static_cast<int64_t>(values.size()) != store.flat_size())
      throw CheckpointError(path + ": optimizer buffer '" + buffer + "' has " + std::to_string(values.size()) +
                            " elements, the model's flat buffer " + std::to_string(store.flat_size()));
    for (const auto& p : store.params())
      if (!p.frozen)
        w.add("optimizer." + buffer + "." + p.name, DType::F32, p.disk_shape, values.data() + p.offset,
              sizeof(float) * static_cast<std::size_t>(p.numel()));
  }
  for (const auto& [name, values] : state.integers)
    w.add<int64_t>("state." + name, {static_cast<int64_t>(values.size())}, values.data());
  w.write(path);
}

inline TrainState load_train_state(const std::string& path, const ParameterStore& store) {
  const auto f = SafetensorsFile::open(path);
  TrainState state;
  std::vector<std::string> problems;
  if (!f.contains("step")) problems.push_back("missing tensor 'step'");
  else state.step = f.read<int64_t>("step").at(0);
  // Optimizer buffers: every "optimizer.<buffer>.<param>" group must be complete.
  std::set<std::string> buffers;
  for (const auto& t : f.tensors()) {
    if (t.name.rfind("optimizer.", 0) != 0) continue;
    const auto dot = t.name.find('.', 10);
    if (dot != std::string::npos) buffers.insert(t.name.substr(10, dot - 10));
  }
  for (const auto& b : buffers) {
    std::vector<float> flat(static_cast<std::size_t>(store.flat_size()), 0.0f);
    const std::string prefix = "optimizer." + b + ".";
    for (const auto& p : store.params()) {
      if (p.frozen) continue;  // frozen parameters have no optimizer state
      const std::string name = prefix + p.name;
      if (!f.contains(name)) {
        problems.push_back("missing tensor '" + name + "'");
        continue;
      }
      const auto& t = f.info(name);
      if (t.shape != p.disk_shape || t.dtype != DType::F32) {
        problems.push_back("tensor '" + name + "' is " + dtype_name(t.dtype) + " " + t.shape_str() +
                           ", expected F32 " + detail::shape_text(p.disk_shape));
        continue;
      }
      std::memcpy(flat.data() + p.offset, f.raw(name), t.bytes());
    }
    state.buffers[b] = std::move(flat);
  }
  for (const auto& t : f.tensors()) {
    if (t.name.rfind("state.", 0) != 0) continue;
    if (t.dtype != DType::I64) {
      problems.push_back("tensor '" + t.name + "' is " + dtype_name(t.dtype) + ", expected I64");
      continue;
    }
    state.integers[t.name.substr(6)] = f.read<int64_t>(t.name);
  }
  if (!problems.empty()) detail::report(path, problems);
  auto it = f.metadata().find("extra");
  if (it != f.metadata().end()) {
    try {
      state.extra = nlohmann::json::parse(it->second);
    } catch (const nlohmann::json::exception& e) {
      throw CheckpointError(path + ": metadata 'extra' is not JSON: " + e.what());
    }
  }
  return state;
}

// A checkpoint directory DIR with model.safetensors and train_state.safetensors, written into a
// temporary sibling directory and renamed into place, so DIR is either absent or complete.
inline void save_checkpoint(const std::string& dir, const ParameterStore& store, const nlohmann::json& config,
                            const TrainState& state) {
  const std::string tmp = dir + ".tmp-" + std::to_string(::getpid());
  auto remove_tree = [](const std::string& d) {
    if (DIR* h = ::opendir(d.c_str())) {
      while (dirent* e = ::readdir(h)) {
        const std::string n = e->d_name;
        if (n != "." && n != "..") ::unlink((d + "/" + n).c_str());
      }
      ::closedir(h);
      ::rmdir(d.c_str());
    }
  };
  remove_tree(tmp);
  if (::mkdir(tmp.c_str(), 0755) != 0)
    throw CheckpointError(tmp + ": cannot create the checkpoint directory (" + std::strerror(errno) + ")");
  save_model(tmp + "/model.safetensors", store, config);
  save_train_state(tmp + "/train_state.safetensors", store, state);
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {  // an older checkpoint of the same name: move it aside first
    const std::string old = dir + ".old-" + std::to_string(::getpid());
    if (::rename(dir.c_str(), old.c_str()) != 0)
      throw CheckpointError(dir + ": cannot replace the existing checkpoint (" + std::strerror(errno) + ")");
    remove_tree(old);
  }
  if (::rename(tmp.c_str(), dir.c_str()) != 0)
    throw CheckpointError(dir + ": rename of the finished checkpoint failed (" + std::strerror(errno) + ")");
  const auto slash = dir.find_last_of('/');
  const std::string parent = slash == std::string::npos ? "." : dir.substr(0, slash == 0 ? 1 : slash);
  const int fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Loads DIR/model.safetensors into the store and returns DIR/train_state.safetensors' state.
inline TrainState load_checkpoint(const std::string& dir, ParameterStore& store, nlohmann::json* config = nullptr) {
  nlohmann::json c = load_model(dir + "/model.safetensors", store);
  if (config) *config = c;
  return load_train_state(dir + "/train_state.safetensors", store);
}

}  // namespace mambatrack::nn
