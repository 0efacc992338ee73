// Command-line options of the mambatrack subcommands: each option is declared once with its
// default and help text, so `--help` lists every option with its default, unknown options are
// errors with a did-you-mean, and values are checked by type.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "mambatrack/core/error.hpp"
#include "mambatrack/train/config.hpp"

namespace mambatrack::cli {

class Args {
 public:
  Args(std::string command, std::string summary) : command_(std::move(command)), summary_(std::move(summary)) {}

  // --name VALUE; `repeat` options collect every occurrence (e.g. --set).
  Args& option(const std::string& name, const std::string& default_value, const std::string& help,
               bool repeat = false) {
    specs_.push_back({name, default_value, help, false, repeat});
    return *this;
  }
  // --name (no value).
  Args& flag(const std::string& name, const std::string& help) {
    specs_.push_back({name, "", help, true, false});
    return *this;
  }

  // False when --help was asked for (the help has been printed).
  bool parse(int argc, char** argv) {
    for (int i = 0; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        print_help();
        return false;
      }
      if (a.rfind("--", 0) != 0) throw ConfigError(std::string("unexpected argument '") + a + "' (options start with --)");
      std::string name = a.substr(2), value;
      const auto eq = name.find('=');
      const bool inline_value = eq != std::string::npos;
      if (inline_value) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      }
      const Spec* spec = find(name);
      if (!spec) {
        std::string msg = "unknown option --" + name;
        int best = 1 << 30;
        std::string near;
        for (const auto& s : specs_) {
          const int d = train::ConfigSchema::edit_distance(name, s.name);
          if (d < best) best = d, near = s.name;
        }
        if (best <= 3) msg += "; did you mean --" + near + "?";
        throw ConfigError(msg + " (see --help)");
      }
      if (spec->is_flag) {
        values_[name] = {"1"};
        continue;
      }
      if (!inline_value) {
        if (i + 1 >= argc) throw ConfigError(std::string("option --") + name + " needs a value");
        value = argv[++i];
      }
      if (spec->repeat) values_[name].push_back(value);
      else values_[name] = {value};
    }
    return true;
  }

  bool given(const std::string& name) const { return values_.count(name) != 0; }
  bool flag_set(const std::string& name) const { return given(name); }
  std::string str(const std::string& name) const {
    auto it = values_.find(name);
    return it != values_.end() ? it->second.back() : spec(name).default_value;
  }
  std::vector<std::string> all(const std::string& name) const {
    auto it = values_.find(name);
    return it != values_.end() ? it->second : std::vector<std::string>{};
  }
  int64_t integer(const std::string& name) const {
    const std::string v = str(name);
    char* end = nullptr;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end) throw ConfigError(std::string("--") + name + " expects an integer, got \"" + v + "\"");
    return x;
  }
  double number(const std::string& name) const {
    const std::string v = str(name);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end) throw ConfigError(std::string("--") + name + " expects a number, got \"" + v + "\"");
    return x;
  }
  std::vector<int32_t> int_list(const std::string& name) const {
    std::vector<int32_t> out;
    const std::string v = str(name);
    std::size_t pos = 0;
    while (pos < v.size()) {
      const auto comma = v.find(',', pos);
      const std::string item = v.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      char* end = nullptr;
      const long x = std::strtol(item.c_str(), &end, 10);
      if (item.empty() || *end)
        throw ConfigError(std::string("--") + name + " expects comma-separated integers, got \"" + v + "\"");
      out.push_back(static_cast<int32_t>(x));
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
    return out;
  }

  void print_help() const {
    std::printf("usage: mambatrack %s [options]\n%s\n\noptions:\n", command_.c_str(), summary_.c_str());
    for (const auto& s : specs_) {
      std::string left = "--" + s.name + (s.is_flag ? "" : " VALUE");
      std::printf("  %-24s %s", left.c_str(), s.help.c_str());
      if (!s.is_flag && !s.default_value.empty()) std::printf(" (default: %s)", s.default_value.c_str());
      std::printf("\n");
    }
  }

 private:
  struct Spec {
    std::string name, default_value, help;
    bool is_flag, repeat;
  };
  const Spec* find(const std::string& name) const {
    for (const auto& s : specs_)
      if (s.name == name) return &s;
    return nullptr;
  }
  const Spec& spec(const std::string& name) const {
    const Spec* s = find(name);
    if (!s) throw ConfigError(std::string("internal: option --") + name + " was not declared");
    return *s;
  }

  std::string command_, summary_;
  std::vector<Spec> specs_;
  std::map<std::string, std::vector<std::string>> values_;
};

}  // namespace mambatrack::cli
