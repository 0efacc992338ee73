// Module tokenizer of MAMBA-PT: token ids PAD=0, MASK=1, UNK=2, CLS=3, SEP=4, then one id per
// detector module, 5 + rank of (volume_id, layer_id, module_id) in lexicographic order. A module
// that is not in the vocabulary encodes as UNK. Text file format (see save()):
//   line 1 "mambatrack-tokenizer 1", line 2 "modules N", then N lines "token volume layer module"
//   with token = 5, 6, ... and the triples strictly increasing.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "mambatrack/core/error.hpp"
#include "mambatrack/data/event.hpp"

namespace mambatrack::data {

// A detector module as (volume_id, layer_id, module_id); ordered lexicographically.
struct ModuleKey {
  int32_t volume_id = 0, layer_id = 0, module_id = 0;
  friend bool operator<(const ModuleKey& a, const ModuleKey& b) {
    return std::tie(a.volume_id, a.layer_id, a.module_id) <
           std::tie(b.volume_id, b.layer_id, b.module_id);
  }
  friend bool operator==(const ModuleKey& a, const ModuleKey& b) {
    return a.volume_id == b.volume_id && a.layer_id == b.layer_id && a.module_id == b.module_id;
  }
  friend bool operator!=(const ModuleKey& a, const ModuleKey& b) { return !(a == b); }
};

class Tokenizer {
 public:
  static constexpr int32_t kPad = 0, kMask = 1, kUnk = 2, kCls = 3, kSep = 4;
  static constexpr int32_t kNumSpecial = 5;
  static constexpr const char* kMagic = "mambatrack-tokenizer";

  Tokenizer() = default;

  // From any list of modules (duplicates allowed); `max_vocab` > 0 caps the total vocabulary
  // (specials included) like MAMBA-PT's vocab_size, dropping the highest-sorting modules.
  static Tokenizer from_keys(std::vector<ModuleKey> keys, int64_t max_vocab = 0) {
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    if (max_vocab > 0) {
      MAMBATRACK_CHECK(max_vocab > kNumSpecial, ConfigError, "tokenizer: max_vocab ", max_vocab,
                       " leaves no room for modules after the ", kNumSpecial, " special tokens");
      if (static_cast<int64_t>(keys.size()) > max_vocab - kNumSpecial) keys.resize(max_vocab - kNumSpecial);
    }
    Tokenizer t;
    t.modules_ = std::move(keys);
    return t;
  }

  // From detectors.csv rows; `volumes` empty = all volumes, else only those listed.
  static Tokenizer from_modules(const std::vector<ModuleRecord>& modules,
                                const std::vector<int32_t>& volumes = {}, int64_t max_vocab = 0) {
    std::vector<ModuleKey> keys;
    keys.reserve(modules.size());
    for (const auto& m : modules)
      if (selected(m.volume_id, volumes)) keys.push_back({m.volume_id, m.layer_id, m.module_id});
    return from_keys(std::move(keys), max_vocab);
  }

  // From the modules that have at least one hit in the given events (MAMBA-PT builds its
  // vocabulary this way, from the training tracks).
  // (Events read one at a time: collect hit_modules(ev.hits, volumes) per event, then from_keys.)
  static Tokenizer from_events(const std::vector<Event>& events,
                               const std::vector<int32_t>& volumes = {}, int64_t max_vocab = 0) {
    std::vector<ModuleKey> keys;
    for (const auto& ev : events) {
      const std::vector<ModuleKey> k = hit_modules(ev.hits, volumes);
      keys.insert(keys.end(), k.begin(), k.end());
    }
    return from_keys(std::move(keys), max_vocab);
  }

  // The distinct modules of some hits, sorted; `volumes` empty = all.
  static std::vector<ModuleKey> hit_modules(const Hits& h, const std::vector<int32_t>& volumes = {}) {
    std::vector<ModuleKey> keys;
    for (std::size_t i = 0; i < h.size(); ++i)
      if (selected(h.volume_id[i], volumes)) keys.push_back({h.volume_id[i], h.layer_id[i], h.module_id[i]});
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    return keys;
  }

  // Specials plus modules.
  int64_t vocab_size() const { return kNumSpecial + static_cast<int64_t>(modules_.size()); }
  int64_t num_modules() const { return static_cast<int64_t>(modules_.size()); }
  const std::vector<ModuleKey>& modules() const { return modules_; }
  static bool is_special(int32_t token) { return token >= 0 && token < kNumSpecial; }

  int32_t token(const ModuleKey& key) const {
    auto it = std::lower_bound(modules_.begin(), modules_.end(), key);
    if (it == modules_.end() || *it != key) return kUnk;
    return kNumSpecial + static_cast<int32_t>(it - modules_.begin());
  }
  int32_t token(int32_t volume_id, int32_t layer_id, int32_t module_id) const {
    return token(ModuleKey{volume_id, layer_id, module_id});
  }
  // The module of a module token; throws for specials and out-of-range ids.
  ModuleKey module(int32_t token) const {
    MAMBATRACK_CHECK(token >= kNumSpecial && token < vocab_size(), Error, "tokenizer: token ",
                     token, " is not a module token (modules are ", kNumSpecial, "..",
                     vocab_size() - 1, ")");
    return modules_[static_cast<std::size_t>(token - kNumSpecial)];
  }

  // [CLS] m1 ... mn [SEP].
  std::vector<int32_t> encode(const std::vector<ModuleKey>& track) const {
    std::vector<int32_t> out;
    out.reserve(track.size() + 2);
    out.push_back(kCls);
    for (const auto& k : track) out.push_back(token(k));
    out.push_back(kSep);
    return out;
  }

  void save(const std::string& path) const {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    if (!f) throw DataError(path, 0, "", "cannot open the tokenizer file for writing");
    f << kMagic << " 1\nmodules " << modules_.size() << '\n';
    for (std::size_t i = 0; i < modules_.size(); ++i)
      f << (kNumSpecial + i) << ' ' << modules_[i].volume_id << ' ' << modules_[i].layer_id << ' '
        << modules_[i].module_id << '\n';
    f.flush();
    if (!f) throw DataError(path, 0, "", "write failed (disk full?)");
  }

  static Tokenizer load(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw DataError(path, 0, "", "cannot open the tokenizer file");
    std::string line;
    int64_t lineno = 0;
    auto next_line = [&](const char* what) {
      if (!std::getline(f, line)) throw DataError(path, lineno + 1, "", std::string("unexpected end of file, expected ") + what);
      ++lineno;
      if (!line.empty() && line.back() == '\r') line.pop_back();
    };
    next_line("the header line");
    {
      std::istringstream is(line);
      std::string magic, version, extra;
      is >> magic >> version;
      if (magic != kMagic || version != "1" || (is >> extra))
        throw DataError(path, lineno, "", "expected the header \"" + std::string(kMagic) + " 1\", got \"" + line + "\"");
    }
    next_line("\"modules N\"");
    int64_t n = 0;
    {
      std::istringstream is(line);
      std::string word, extra;
      is >> word;
      if (word != "modules" || !parse_int(is, n) || n < 0 || (is >> extra))
        throw DataError(path, lineno, "", "expected \"modules N\" with N >= 0, got \"" + line + "\"");
    }
    Tokenizer t;
    t.modules_.reserve(static_cast<std::size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      next_line("a module line \"token volume layer module\"");
      std::istringstream is(line);
      int64_t tok = 0, v = 0, l = 0, m = 0;
      std::string extra;
      if (!parse_int(is, tok) || !parse_int(is, v) || !parse_int(is, l) || !parse_int(is, m) || (is >> extra))
        throw DataError(path, lineno, "", "expected four integers \"token volume layer module\", got \"" + line + "\"");
      if (tok != kNumSpecial + i)
        throw DataError(path, lineno, "token", "expected token " + std::to_string(kNumSpecial + i) + ", got " + std::to_string(tok));
      ModuleKey k{static_cast<int32_t>(v), static_cast<int32_t>(l), static_cast<int32_t>(m)};
      if (!t.modules_.empty() && !(t.modules_.back() < k))
        throw DataError(path, lineno, "", "modules must be strictly increasing in (volume, layer, module)");
      t.modules_.push_back(k);
    }
    while (std::getline(f, line)) {
      ++lineno;
      if (line.find_first_not_of(" \t\r") != std::string::npos)
        throw DataError(path, lineno, "", "unexpected content after the " + std::to_string(n) + " module lines");
    }
    return t;
  }

  friend bool operator==(const Tokenizer& a, const Tokenizer& b) { return a.modules_ == b.modules_; }

 private:
  static bool selected(int32_t volume, const std::vector<int32_t>& volumes) {
    return volumes.empty() || std::find(volumes.begin(), volumes.end(), volume) != volumes.end();
  }
  static bool parse_int(std::istream& is, int64_t& out) {
    std::string w;
    if (!(is >> w)) return false;
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(w.c_str(), &end, 10);
    if (end == w.c_str() || *end != '\0' || errno != 0) return false;
    out = v;
    return true;
  }

  std::vector<ModuleKey> modules_;  // sorted, unique; token = kNumSpecial + index
};

}  // namespace mambatrack::data
