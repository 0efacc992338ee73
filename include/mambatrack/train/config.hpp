// YAML run configurations checked against a schema: the file is read with yaml-cpp, `<<:` merge
// keys are resolved (YAML 1.1 merge, which yaml-cpp 0.7 leaves as a plain key), an optional
// top-level section is selected (FM4NPP's `--config-section mamba_5m`), nested maps are flattened
// to dotted keys ("training.learning_rate"), and every key is checked: known keys by type, keys
// the schema marks as ignored are listed once, anything else is a ConfigError with a
// did-you-mean. Errors name the file, line, key and expected type. `--set key=value` overrides.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "mambatrack/core/error.hpp"

namespace mambatrack::train {

enum class ValueType { Int, Float, Bool, String, IntList, FloatList, StringList };

inline const char* type_name(ValueType t) {
  switch (t) {
    case ValueType::Int: return "an integer";
    case ValueType::Float: return "a number";
    case ValueType::Bool: return "true or false";
    case ValueType::String: return "a string";
    case ValueType::IntList: return "a list of integers";
    case ValueType::FloatList: return "a list of numbers";
    case ValueType::StringList: return "a list of strings";
  }
  return "?";
}

struct KeySpec {
  std::string key;
  ValueType type = ValueType::String;
  std::string default_value;  // YAML text; empty string for String means ""
  std::string help;
  bool ignored = false;  // accepted for compatibility with the seeds' files, not used
};

class ConfigSchema {
 public:
  ConfigSchema& add(std::string key, ValueType type, std::string default_value, std::string help) {
    specs_.push_back(KeySpec{std::move(key), type, std::move(default_value), std::move(help), false});
    return *this;
  }
  // A key the seeds' configs carry that we accept and do not use; `why` says what we do instead.
  ConfigSchema& ignore(std::string key, std::string why) {
    specs_.push_back(KeySpec{std::move(key), ValueType::String, "", std::move(why), true});
    return *this;
  }
  const KeySpec* find(const std::string& key) const {
    for (const auto& s : specs_)
      if (s.key == key) return &s;
    return nullptr;
  }
  const std::vector<KeySpec>& specs() const noexcept { return specs_; }

  // Up to three known keys closest to `key` (edit distance, and same last component elsewhere).
  std::vector<std::string> suggestions(const std::string& key) const {
    std::vector<std::pair<int, std::string>> scored;
    const std::string last = key.substr(key.find_last_of('.') + 1);
    for (const auto& s : specs_) {
      if (s.ignored) continue;
      int d = edit_distance(key, s.key);
      const std::string slast = s.key.substr(s.key.find_last_of('.') + 1);
      if (slast == last) d = std::min(d, 1);
      else d = std::min(d, edit_distance(last, slast) + 1);
      if (d <= std::max<int>(2, static_cast<int>(last.size()) / 3)) scored.emplace_back(d, s.key);
    }
    std::sort(scored.begin(), scored.end());
    std::vector<std::string> out;
    for (std::size_t i = 0; i < scored.size() && i < 3; ++i) out.push_back(scored[i].second);
    return out;
  }

  static int edit_distance(const std::string& a, const std::string& b) {
    std::vector<int> prev(b.size() + 1), cur(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = static_cast<int>(j);
    for (std::size_t i = 1; i <= a.size(); ++i) {
      cur[0] = static_cast<int>(i);
      for (std::size_t j = 1; j <= b.size(); ++j)
        cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
      std::swap(prev, cur);
    }
    return prev[b.size()];
  }

 private:
  std::vector<KeySpec> specs_;
};

namespace detail {

// YAML 1.1 merge keys: a map holding `<<: *anchor` (or a list of anchors) takes every entry of
// the merged map(s) it does not define itself; earlier maps in a list win over later ones.
// Resolved in place, so the original key nodes keep their line numbers for error messages.
inline void resolve_merges(YAML::Node node) {
  if (node.IsSequence()) {
    for (auto item : node) resolve_merges(item);
    return;
  }
  if (!node.IsMap()) return;
  YAML::Node merge;
  for (auto kv : node) {
    if (kv.first.Scalar() == "<<") merge = kv.second;
    else resolve_merges(kv.second);
  }
  if (!merge) return;
  node.remove("<<");
  std::vector<YAML::Node> sources;
  if (merge.IsMap()) sources.push_back(merge);
  else if (merge.IsSequence())
    for (auto m : merge) sources.push_back(m);
  for (auto& src : sources) {
    if (!src.IsMap()) continue;
    resolve_merges(src);
    for (auto kv : src) {
      const std::string key = kv.first.Scalar();
      if (!node[key]) node[key] = kv.second;
    }
  }
}

// The line of a map entry: the key's mark, or the value's for entries added by a merge.
inline int entry_line(const YAML::Node& key, const YAML::Node& value) {
  if (key.Mark().line >= 0 && !key.Mark().is_null()) return key.Mark().line + 1;
  return value.Mark().line + 1;
}

}  // namespace detail

class Config {
 public:
  struct Entry {
    YAML::Node value;
    std::string origin;  // "file:line", "--set", or "default"
  };

  explicit Config(ConfigSchema schema) : schema_(std::move(schema)) {
    for (const auto& s : schema_.specs())
      if (!s.ignored) values_[s.key] = Entry{s.default_value.empty() && s.type == ValueType::String
                                                 ? YAML::Node(std::string())
                                                 : YAML::Load(s.default_value),
                                             "default"};
  }

  // Reads `path`; with a section, only that top-level map (after merges) is the configuration.
  static Config load(const std::string& path, ConfigSchema schema, const std::string& section = "") {
    Config cfg(std::move(schema));
    cfg.read_file(path, section);
    return cfg;
  }

  void read_file(const std::string& path, const std::string& section = "") {
    YAML::Node root;
    try {
      root = YAML::LoadFile(path);
    } catch (const YAML::BadFile&) {
      throw ConfigError(path + ": cannot open the config file");
    } catch (const YAML::Exception& e) {
      throw ConfigError(path + ":" + std::to_string(e.mark.line + 1) + ": not valid YAML: " + e.msg);
    }
    if (!root || root.IsNull()) return;  // an empty file sets nothing
    if (!root.IsMap()) throw ConfigError(path + ": the top level must be a map of keys");
    YAML::Node merged = root;
    detail::resolve_merges(merged);
    if (!section.empty()) {
      if (!merged[section] || !merged[section].IsMap()) {
        std::string names;
        for (const auto& kv : merged)
          if (kv.second.IsMap()) names += (names.empty() ? "" : ", ") + kv.first.Scalar();
        throw ConfigError(path + ": no section '" + section + "' (sections: " + names + ")");
      }
      merged = merged[section];
    }
    apply(merged, "", path);
  }

  // "training.learning_rate=3e-4" (the value is YAML: lists like [4, 8] work).
  void set(const std::string& assignment) {
    const auto eq = assignment.find('=');
    if (eq == std::string::npos || eq == 0)
      throw ConfigError("--set " + assignment + ": expected key=value");
    const std::string key = assignment.substr(0, eq);
    YAML::Node value;
    try {
      value = YAML::Load(assignment.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      throw ConfigError("--set " + assignment + ": value is not valid YAML: " + e.msg);
    }
    assign(key, value, "--set");
  }

  template <class T>
  T get(const std::string& key) const {
    auto it = values_.find(key);
    if (it == values_.end()) throw ConfigError("config key '" + key + "' is not in the schema");
    try {
      if (it->second.value.IsNull()) return T{};
      return it->second.value.as<T>();
    } catch (const YAML::Exception&) {
      throw ConfigError(it->second.origin + ": key '" + key + "' cannot be read as the requested type");
    }
  }
  const std::string& origin(const std::string& key) const { return values_.at(key).origin; }
  bool given(const std::string& key) const {
    auto it = values_.find(key);
    return it != values_.end() && it->second.origin != "default";
  }
  // Keys present in the file(s) that the schema accepts but does not use, with the reason.
  const std::vector<std::pair<std::string, std::string>>& ignored() const noexcept { return ignored_; }
  const ConfigSchema& schema() const noexcept { return schema_; }

  // The resolved configuration as YAML, nested again, every key with its value and (as a
  // comment) where the value came from; written into the run directory.
  std::string dump_yaml() const {
    YAML::Emitter out;
    out << YAML::BeginMap;
    emit(out, "", 0);
    out << YAML::EndMap;
    return std::string(out.c_str()) + "\n";
  }

 private:
  void apply(const YAML::Node& node, const std::string& prefix, const std::string& file) {
    for (const auto& kv : node) {
      const std::string key = prefix + kv.first.Scalar();
      const std::string where = file + ":" + std::to_string(detail::entry_line(kv.first, kv.second));
      if (kv.second.IsMap() && !schema_.find(key)) {
        apply(kv.second, key + ".", file);
        continue;
      }
      assign(key, kv.second, where);
    }
  }

  void assign(const std::string& key, const YAML::Node& value, const std::string& where) {
    const KeySpec* spec = schema_.find(key);
    if (!spec) {
      // A whole ignored section ("hardware") covers its keys.
      for (const auto& s : schema_.specs())
        if (s.ignored && key.rfind(s.key + ".", 0) == 0) {
          note_ignored(key, s.help);
          return;
        }
      std::string msg = where + ": unknown key '" + key + "'";
      const auto near = schema_.suggestions(key);
      if (!near.empty()) {
        msg += "; did you mean ";
        for (std::size_t i = 0; i < near.size(); ++i) msg += (i ? " or '" : "'") + near[i] + "'";
        msg += "?";
      }
      throw ConfigError(msg);
    }
    if (spec->ignored) {
      note_ignored(key, spec->help);
      return;
    }
    check_type(*spec, value, where);
    values_[key] = Entry{YAML::Clone(value), where};
  }

  void note_ignored(const std::string& key, const std::string& why) {
    for (const auto& k : ignored_)
      if (k.first == key) return;
    ignored_.emplace_back(key, why);
  }

  static bool scalar_is(ValueType t, const YAML::Node& n) {
    if (!n.IsScalar()) return false;
    try {
      switch (t) {
        case ValueType::Int: {
          const std::string s = n.Scalar();
          std::size_t pos = 0;
          (void)std::stoll(s, &pos);
          return pos == s.size();
        }
        case ValueType::Float: (void)n.as<double>(); return true;
        case ValueType::Bool: (void)n.as<bool>(); return true;
        default: return true;
      }
    } catch (...) {
      return false;
    }
  }

  static void check_type(const KeySpec& spec, const YAML::Node& value, const std::string& where) {
    bool ok = true;
    switch (spec.type) {
      case ValueType::Int:
      case ValueType::Float:
      case ValueType::Bool: ok = scalar_is(spec.type, value); break;
      case ValueType::String: ok = value.IsScalar() || value.IsNull(); break;
      case ValueType::IntList:
      case ValueType::FloatList:
      case ValueType::StringList: {
        ok = value.IsSequence();
        const ValueType elem = spec.type == ValueType::IntList ? ValueType::Int
                               : spec.type == ValueType::FloatList ? ValueType::Float
                                                                   : ValueType::String;
        if (ok)
          for (const auto& v : value) ok = ok && scalar_is(elem, v);
        break;
      }
    }
    if (!ok) {
      YAML::Emitter e;
      e << YAML::Flow << value;
      throw ConfigError(where + ": key '" + spec.key + "': expected " + type_name(spec.type) + ", got " +
                        (value.IsNull() ? std::string("null") : "\"" + std::string(e.c_str()) + "\""));
    }
  }

  // Emits keys under `prefix` as nested maps, in schema order.
  void emit(YAML::Emitter& out, const std::string& prefix, int) const {
    std::vector<std::string> children;  // direct children: leaf keys or section names
    for (const auto& s : schema_.specs()) {
      if (s.ignored || s.key.compare(0, prefix.size(), prefix) != 0) continue;
      const std::string rest = s.key.substr(prefix.size());
      const std::string child = rest.substr(0, rest.find('.'));
      if (std::find(children.begin(), children.end(), child) == children.end()) children.push_back(child);
    }
    for (const auto& child : children) {
      const std::string key = prefix + child;
      auto it = values_.find(key);
      if (it != values_.end()) {
        out << YAML::Key << child << YAML::Value;
        if (it->second.value.IsSequence()) out << YAML::Flow;
        out << it->second.value << YAML::Comment(it->second.origin);
      } else {
        out << YAML::Key << child << YAML::Value << YAML::BeginMap;
        emit(out, key + ".", 0);
        out << YAML::EndMap;
      }
    }
  }

  ConfigSchema schema_;
  std::map<std::string, Entry> values_;
  std::vector<std::pair<std::string, std::string>> ignored_;
};

}  // namespace mambatrack::train
