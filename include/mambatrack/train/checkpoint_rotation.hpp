// Checkpoints of one run: directories <run>/checkpoints/step_<N> (N zero-padded to 9 digits but
// always ordered by its value), each complete when it holds model.safetensors and
// train_state.safetensors (nn::save_checkpoint writes them atomically). Keeps the last K by step
// number, cleans "*.tmp-*" / "*.old-*" leftovers of a crash, and keeps a hard-linked copy of the
// best one in <run>/checkpoints/best with best.json {"step", "metric", "value", "mode"}.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/logging.hpp"

namespace mambatrack::train {

struct CheckpointEntry {
  int64_t step = 0;
  std::string path;
  bool operator==(const CheckpointEntry& o) const { return step == o.step && path == o.path; }
};

enum class BestMode { kMin, kMax };  // lower is better (a loss) or higher is better (an accuracy)

struct BestCheckpoint {
  int64_t step = 0;
  std::string metric;  // e.g. "val/loss"
  double value = 0.0;
  BestMode mode = BestMode::kMin;
};

class RunCheckpoints {
 public:
  static constexpr const char* kModelFile = "model.safetensors";
  static constexpr const char* kStateFile = "train_state.safetensors";
  static constexpr int kStepDigits = 9;

  explicit RunCheckpoints(const std::string& run_dir) : dir_(run_dir + "/checkpoints") {}

  // <run>/checkpoints
  const std::string& dir() const { return dir_; }
  // <run>/checkpoints/step_000001234: where nn::save_checkpoint writes step 1234.
  std::string path_for(int64_t step) const {
    MAMBATRACK_CHECK(step >= 0, ConfigError, "checkpoint step must be >= 0, got ", step);
    std::string digits = std::to_string(step);
    if (digits.size() < static_cast<std::size_t>(kStepDigits)) digits.insert(0, kStepDigits - digits.size(), '0');
    return dir_ + "/step_" + digits;
  }
  std::string best_path() const { return dir_ + "/best"; }

  // The step of a directory name "step_<digits>" (any number of digits), or nothing.
  static std::optional<int64_t> parse_step_name(const std::string& name) {
    if (name.size() <= 5 || name.compare(0, 5, "step_") != 0 || name.size() > 5 + 18) return std::nullopt;
    int64_t step = 0;
    for (std::size_t i = 5; i < name.size(); ++i) {
      if (name[i] < '0' || name[i] > '9') return std::nullopt;
      step = step * 10 + (name[i] - '0');
    }
    return step;
  }
  // Leftovers of an interrupted save or replacement ("step_5.tmp-123", "best.old-77").
  static bool is_leftover_name(const std::string& name) {
    return name.find(".tmp-") != std::string::npos || name.find(".old-") != std::string::npos;
  }
  static bool is_complete(const std::string& path) {
    std::error_code ec;
    return std::filesystem::is_regular_file(path + "/" + kModelFile, ec) &&
           std::filesystem::is_regular_file(path + "/" + kStateFile, ec);
  }

  // Creates <run>/checkpoints and removes crash leftovers; call once when a run starts (before
  // any save: a leftover of this very process would be removed too).
  std::vector<std::string> prepare() const {
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    MAMBATRACK_CHECK(!ec, CheckpointError, dir_, ": cannot create the checkpoint directory (", ec.message(), ")");
    return clean_leftovers();
  }

  // Removes every "*.tmp-*" and "*.old-*" entry; returns their names.
  std::vector<std::string> clean_leftovers() const {
    std::vector<std::string> removed;
    for (const auto& name : entry_names())
      if (is_leftover_name(name)) {
        std::error_code ec;
        std::filesystem::remove_all(dir_ + "/" + name, ec);
        if (ec) log(LogLevel::Warning, dir_, "/", name, ": cannot remove a crash leftover (", ec.message(), ")");
        else removed.push_back(name);
      }
    std::sort(removed.begin(), removed.end());
    if (!removed.empty()) log(LogLevel::Info, dir_, ": removed ", removed.size(), " leftover(s) of an interrupted save");
    return removed;
  }

  // Complete checkpoints, ascending by step (step_9 < step_10 < step_100); incomplete
  // directories and leftovers are skipped.
  std::vector<CheckpointEntry> list() const {
    std::vector<CheckpointEntry> out;
    for (const auto& name : entry_names()) {
      const auto step = parse_step_name(name);
      const std::string path = dir_ + "/" + name;
      if (step && is_complete(path)) out.push_back({*step, path});
    }
    std::sort(out.begin(), out.end(), [](const CheckpointEntry& a, const CheckpointEntry& b) { return a.step < b.step; });
    // Two names for one step (step_7 and step_000000007): keep the padded, canonical one.
    std::vector<CheckpointEntry> unique;
    for (auto& e : out) {
      if (!unique.empty() && unique.back().step == e.step) {
        if (e.path == path_for(e.step)) unique.back() = e;
        continue;
      }
      unique.push_back(e);
    }
    return unique;
  }

  std::optional<CheckpointEntry> latest() const {
    auto all = list();
    if (all.empty()) return std::nullopt;
    return all.back();
  }

  // Deletes complete checkpoints older than the newest `keep` (k >= 1, so the newest always
  // stays); returns the deleted steps, ascending. A directory is renamed to "*.old-<pid>" before
  // it is removed, so an interrupted deletion leaves a leftover, not a half checkpoint.
  std::vector<int64_t> keep_last(int64_t keep) const {
    MAMBATRACK_CHECK(keep >= 1, ConfigError, "keep_last_checkpoints must be >= 1 (the newest checkpoint is never "
                                             "deleted), got ", keep);
    const auto all = list();
    std::vector<int64_t> deleted;
    if (static_cast<int64_t>(all.size()) <= keep) return deleted;
    for (std::size_t i = 0; i + static_cast<std::size_t>(keep) < all.size(); ++i) {
      remove_dir(all[i].path);
      deleted.push_back(all[i].step);
    }
    return deleted;
  }

  // The recorded best checkpoint, from best/best.json; nothing when there is none.
  std::optional<BestCheckpoint> best() const {
    const std::string json_path = best_path() + "/best.json";
    std::FILE* f = std::fopen(json_path.c_str(), "rb");
    if (!f) return std::nullopt;
    std::string text;
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof(buf), f)) > 0;) text.append(buf, n);
    std::fclose(f);
    const auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j.contains("value") || !j.contains("metric") ||
        !j["step"].is_number_integer() || !j["value"].is_number() || !j["metric"].is_string())
      throw CheckpointError(json_path + ": expected {\"step\": int, \"metric\": string, \"value\": number, \"mode\": "
                                        "\"min\"|\"max\"}; move the best/ directory away to start a new best");
    BestCheckpoint b;
    b.step = j["step"].get<int64_t>();
    b.metric = j["metric"].get<std::string>();
    b.value = j["value"].get<double>();
    b.mode = j.value("mode", std::string("min")) == "max" ? BestMode::kMax : BestMode::kMin;
    return b;
  }

  // Makes checkpoint `step` the best one when `value` of `metric` beats the recorded best (or
  // there is none, or the recorded one is for another metric or mode); returns whether it did.
  // best/ holds hard links to the checkpoint's files (copies where links fail), so rotating the
  // step directory away later leaves the best intact; it is replaced atomically.
  bool update_best(int64_t step, const std::string& metric, double value, BestMode mode) const {
    if (!std::isfinite(value)) return false;
    const auto current = best();
    if (current && current->metric == metric && current->mode == mode) {
      const bool better = mode == BestMode::kMin ? value < current->value : value > current->value;
      if (!better) return false;
    } else if (current) {
      log(LogLevel::Warning, best_path(), ": the recorded best is for '", current->metric,
          "', now tracking '", metric, "'; replacing it");
    }
    const std::string source = path_for(step);
    MAMBATRACK_CHECK(is_complete(source), CheckpointError, source,
                     ": not a complete checkpoint (needs model.safetensors and train_state.safetensors); save it "
                     "before marking it best");
    const std::string tmp = best_path() + ".tmp-" + std::to_string(::getpid());
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::remove_all(tmp, ec);
    fs::create_directory(tmp, ec);
    MAMBATRACK_CHECK(!ec, CheckpointError, tmp, ": cannot create (", ec.message(), ")");
    for (const auto& entry : fs::directory_iterator(source)) {
      if (!entry.is_regular_file()) continue;
      const std::string target = tmp + "/" + entry.path().filename().string();
      fs::create_hard_link(entry.path(), target, ec);
      if (ec) {
        ec.clear();
        fs::copy_file(entry.path(), target, ec);
        MAMBATRACK_CHECK(!ec, CheckpointError, target, ": cannot link or copy the best checkpoint (", ec.message(), ")");
      }
    }
    const nlohmann::json j = {{"step", step}, {"metric", metric}, {"value", value},
                              {"mode", mode == BestMode::kMax ? "max" : "min"}};
    write_synced(tmp + "/best.json", j.dump(2) + "\n");
    if (fs::exists(best_path(), ec)) remove_dir(best_path());
    fs::rename(tmp, best_path(), ec);
    MAMBATRACK_CHECK(!ec, CheckpointError, best_path(), ": renaming the new best checkpoint into place failed (",
                     ec.message(), ")");
    return true;
  }

 private:
  std::vector<std::string> entry_names() const {
    std::vector<std::string> names;
    std::error_code ec;
    std::filesystem::directory_iterator it(dir_, ec), end;
    if (ec) return names;  // no checkpoints directory yet
    for (; it != end; it.increment(ec)) {
      if (ec) break;
      names.push_back(it->path().filename().string());
    }
    return names;
  }

  static void remove_dir(const std::string& path) {
    std::error_code ec;
    const std::string old = path + ".old-" + std::to_string(::getpid());
    std::filesystem::remove_all(old, ec);
    std::filesystem::rename(path, old, ec);
    MAMBATRACK_CHECK(!ec, CheckpointError, path, ": cannot move the old checkpoint aside (", ec.message(), ")");
    std::filesystem::remove_all(old, ec);
    if (ec) log(LogLevel::Warning, old, ": cannot remove (", ec.message(), "); it is removed at the next start");
  }

  static void write_synced(const std::string& path, const std::string& text) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    MAMBATRACK_CHECK(f != nullptr, CheckpointError, path, ": cannot create");
    const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0 &&
                    ::fsync(::fileno(f)) == 0;
    std::fclose(f);
    MAMBATRACK_CHECK(ok, CheckpointError, path, ": write failed");
  }

  std::string dir_;
};

}  // namespace mambatrack::train
