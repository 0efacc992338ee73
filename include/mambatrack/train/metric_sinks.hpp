// Training metrics to files: a MetricRecord (step, split, named losses/metrics, lr, grad norm,
// tokens/s, wall time) goes to metrics.jsonl (one JSON object per line) and metrics.csv (a header
// with the union of all columns), each flushed per record. On resume every record with
// step > the resumed step is dropped first, so the files read as if the run had never stopped.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/logging.hpp"

namespace mambatrack::train {

// Seconds since the Unix epoch, for MetricRecord::wall_time.
inline double unix_time_now() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

// One row of metrics. `values` holds the losses and metrics ("loss", "mdm_loss", "mdm_accuracy",
// ...); the optional fields are left empty where they do not apply (no lr in a val record).
struct MetricRecord {
  int64_t step = 0;
  std::string split = "train";  // "train", "val", ...
  std::map<std::string, double> values;
  std::optional<double> lr;
  std::optional<double> grad_norm;
  std::optional<double> tokens_per_s;
  double wall_time = unix_time_now();  // seconds since the Unix epoch
};

// The fixed leading columns of every record; metric names may not reuse them.
inline const std::vector<std::string>& metric_fixed_columns() {
  static const std::vector<std::string> kColumns = {"step", "split", "wall_time", "lr", "grad_norm", "tokens_per_s"};
  return kColumns;
}

class MetricSink {
 public:
  virtual ~MetricSink() = default;
  virtual void write(const MetricRecord& record) = 0;
  virtual void flush() {}
};

// Writes every record to each of its sinks, in the order they were added.
class MultiSink : public MetricSink {
 public:
  MetricSink& add(std::unique_ptr<MetricSink> sink) {
    MAMBATRACK_CHECK(sink != nullptr, ConfigError, "MultiSink::add: null sink");
    sinks_.push_back(std::move(sink));
    return *sinks_.back();
  }
  template <class Sink, class... Args>
  Sink& emplace(Args&&... args) {
    auto sink = std::make_unique<Sink>(std::forward<Args>(args)...);
    Sink& ref = *sink;
    sinks_.push_back(std::move(sink));
    return ref;
  }
  void write(const MetricRecord& record) override {
    for (auto& s : sinks_) s->write(record);
  }
  void flush() override {
    for (auto& s : sinks_) s->flush();
  }
  std::size_t size() const { return sinks_.size(); }

 private:
  std::vector<std::unique_ptr<MetricSink>> sinks_;
};

namespace detail {

// The shortest text that reads back to the same double, as the JSONL file writes it (0.0003,
// 2.0, 1e-05); "nan", "inf", "-inf" for non-finite values.
inline std::string number_text(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return nlohmann::json(v).dump();
}

inline void check_metric_record(const MetricRecord& r) {
  MAMBATRACK_CHECK(!r.split.empty() && r.split.find_first_of("\r\n") == std::string::npos, ConfigError,
                   "metric record at step ", r.step, ": split name '", r.split,
                   "' must be non-empty and on one line");
  for (const auto& kv : r.values) {
    const std::string& name = kv.first;
    MAMBATRACK_CHECK(!name.empty() && name.find_first_of("\r\n") == std::string::npos, ConfigError,
                     "metric record at step ", r.step, ": metric name '", name, "' must be non-empty and on one line");
    for (const auto& fixed : metric_fixed_columns())
      MAMBATRACK_CHECK(name != fixed, ConfigError, "metric record at step ", r.step, ": metric name '", name,
                       "' is a reserved column (step, split, wall_time, lr, grad_norm, tokens_per_s)");
  }
}

inline std::string read_whole_file(const std::string& path, bool* exists) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    MAMBATRACK_CHECK(errno == ENOENT, Error, path, ": cannot open for reading (", std::strerror(errno), ")");
    if (exists) *exists = false;
    return {};
  }
  if (exists) *exists = true;
  std::string text;
  char buf[1 << 16];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  MAMBATRACK_CHECK(!failed, Error, path, ": read failed");
  return text;
}

// Replaces PATH's contents atomically: a temporary sibling, flushed and fsync'd, renamed over it.
inline void replace_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  MAMBATRACK_CHECK(f != nullptr, Error, tmp, ": cannot create (", std::strerror(errno), ")");
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0 &&
                  ::fsync(::fileno(f)) == 0;
  const int err = errno;
  std::fclose(f);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = ok ? errno : err;
    std::remove(tmp.c_str());
    throw Error(path + ": rewriting the metrics file failed (" + std::strerror(e) + ")");
  }
}

// A file opened for appending; every append is flushed to the OS at once, so a killed process
// loses nothing it has written (a power cut can still lose the last records).
class AppendFile {
 public:
  AppendFile() = default;
  explicit AppendFile(std::string path) : path_(std::move(path)) { open(); }
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  ~AppendFile() { close(); }

  void open() {
    close();
    file_ = std::fopen(path_.c_str(), "ab");
    MAMBATRACK_CHECK(file_ != nullptr, Error, path_, ": cannot open for appending (", std::strerror(errno), ")");
  }
  void close() {
    if (file_) std::fclose(file_);
    file_ = nullptr;
  }
  void append(const std::string& text) {
    MAMBATRACK_CHECK(std::fwrite(text.data(), 1, text.size(), file_) == text.size() && std::fflush(file_) == 0,
                     Error, path_, ": write failed (", std::strerror(errno), ")");
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// Splits TEXT into its complete ('\n'-terminated) lines, without the terminators; an unterminated
// tail (a record cut off by a kill) is reported through `tail`.
inline std::vector<std::string> complete_lines(const std::string& text, std::string* tail) {
  std::vector<std::string> lines;
  std::size_t begin = 0;
  for (std::size_t nl; (nl = text.find('\n', begin)) != std::string::npos; begin = nl + 1)
    lines.push_back(text.substr(begin, nl - begin));
  if (tail) *tail = text.substr(begin);
  return lines;
}

inline bool parse_step(const std::string& text, int64_t* step) {
  const char* end = text.data() + text.size();
  const auto r = std::from_chars(text.data(), end, *step);
  return r.ec == std::errc() && r.ptr == end;
}

// RFC 4180 field: quoted when it holds a comma, a quote or surrounding spaces.
inline std::string csv_field(const std::string& s) {
  const bool quote = s.find_first_of(",\"") != std::string::npos ||
                     (!s.empty() && (s.front() == ' ' || s.back() == ' '));
  if (!quote) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + '"';
}

// Splits one CSV line into fields (quotes as written by csv_field; no embedded newlines).
inline std::vector<std::string> csv_split(const std::string& line, bool* ok) {
  std::vector<std::string> fields(1);
  bool in_quotes = false;
  *ok = true;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (in_quotes) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else if (c == '"') {
        in_quotes = false;
      } else {
        fields.back() += c;
      }
    } else if (c == '"') {
      in_quotes = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else {
      fields.back() += c;
    }
  }
  if (in_quotes) *ok = false;
  return fields;
}

inline void warn_cut_record(const std::string& path, std::size_t line, const std::string& tail) {
  log(LogLevel::Warning, path, ":", line, ": dropped an incomplete last record (", tail.size(),
      " bytes, cut off when the run stopped)");
}

}  // namespace detail

// metrics.jsonl: one JSON object per record,
//   {"step":120,"split":"train","wall_time":1732460000.5,"lr":0.0003,"grad_norm":0.8,
//    "tokens_per_s":51234.0,"loss":2.31,"mdm_accuracy":0.41}
// fixed keys first, then the metrics in name order; absent optional fields are left out and
// non-finite values are written as null (JSON has no NaN).
class JsonlSink : public MetricSink {
 public:
  // A fresh file (an existing one is truncated), or with `resume_step` the existing file with
  // every record of step > *resume_step and any cut-off last line removed, appended to.
  explicit JsonlSink(std::string path, std::optional<int64_t> resume_step = std::nullopt) {
    if (!resume_step) {
      detail::replace_file(path, "");
    } else {
      truncate_for_resume(path, *resume_step);
    }
    file_ = std::make_unique<detail::AppendFile>(path);
  }

  void write(const MetricRecord& r) override {
    detail::check_metric_record(r);
    nlohmann::ordered_json j;
    auto number = [](double v) { return std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json(); };
    j["step"] = r.step;
    j["split"] = r.split;
    j["wall_time"] = number(r.wall_time);
    if (r.lr) j["lr"] = number(*r.lr);
    if (r.grad_norm) j["grad_norm"] = number(*r.grad_norm);
    if (r.tokens_per_s) j["tokens_per_s"] = number(*r.tokens_per_s);
    for (const auto& [name, v] : r.values) j[name] = number(v);
    file_->append(j.dump() + "\n");
  }

  const std::string& path() const { return file_->path(); }

 private:
  static void truncate_for_resume(const std::string& path, int64_t resume_step) {
    bool exists = false;
    const std::string text = detail::read_whole_file(path, &exists);
    std::string tail;
    const auto lines = detail::complete_lines(text, &tail);
    std::string kept;
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (lines[i].empty()) continue;
      nlohmann::json j = nlohmann::json::parse(lines[i], nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) {
        if (i + 1 == lines.size()) {  // the last line: a record damaged when the run stopped
          detail::warn_cut_record(path, i + 1, lines[i]);
          continue;
        }
        throw DataError(path, static_cast<int64_t>(i + 1), "step",
                        "not a JSON object with an integer \"step\"; the metrics file is damaged");
      }
      if (j["step"].get<int64_t>() <= resume_step) kept += lines[i] + "\n";
    }
    if (!tail.empty()) detail::warn_cut_record(path, lines.size() + 1, tail);
    if (!exists || kept.size() != text.size()) detail::replace_file(path, kept);
  }

  std::unique_ptr<detail::AppendFile> file_;
};

// metrics.csv: the header is the union of the columns seen so far,
//   step,split,wall_time,lr,grad_norm,tokens_per_s,<metrics in order of first appearance>
// and a record leaves the cells it has no value for empty. When a record brings a metric name
// the header does not have yet (a val metric after the first train rows), the file is rewritten
// once, atomically, with the widened header and every earlier row padded with empty cells, so
// the file is a valid CSV at every moment. Non-finite values are written nan, inf, -inf.
class CsvSink : public MetricSink {
 public:
  // A fresh file, or with `resume_step` the existing file (its header kept, rows with step >
  // *resume_step and a cut-off last line removed), appended to without a second header.
  explicit CsvSink(std::string path, std::optional<int64_t> resume_step = std::nullopt) : path_(std::move(path)) {
    if (!resume_step) {
      detail::replace_file(path_, "");
    } else {
      truncate_for_resume(*resume_step);
    }
    file_ = std::make_unique<detail::AppendFile>(path_);
  }

  void write(const MetricRecord& r) override {
    detail::check_metric_record(r);
    std::vector<std::string> added;
    for (const auto& kv : r.values)
      if (!column_index_.count(kv.first)) added.push_back(kv.first);
    if (columns_.empty()) {  // the first record of a fresh file: write the header
      columns_ = metric_fixed_columns();
      columns_.insert(columns_.end(), added.begin(), added.end());
      index_columns();
      file_->append(header_line());
    } else if (!added.empty()) {
      widen(added);
    }
    std::vector<std::string> cells(columns_.size());
    cells[0] = std::to_string(r.step);
    cells[1] = detail::csv_field(r.split);
    cells[2] = detail::number_text(r.wall_time);
    if (r.lr) cells[3] = detail::number_text(*r.lr);
    if (r.grad_norm) cells[4] = detail::number_text(*r.grad_norm);
    if (r.tokens_per_s) cells[5] = detail::number_text(*r.tokens_per_s);
    for (const auto& [name, v] : r.values) cells[column_index_.at(name)] = detail::number_text(v);
    std::string line;
    for (std::size_t i = 0; i < cells.size(); ++i) line += (i ? "," : "") + cells[i];
    file_->append(line + "\n");
  }

  const std::vector<std::string>& columns() const { return columns_; }
  const std::string& path() const { return path_; }

 private:
  void index_columns() {
    column_index_.clear();
    for (std::size_t i = metric_fixed_columns().size(); i < columns_.size(); ++i) column_index_[columns_[i]] = i;
  }
  std::string header_line() const {
    std::string line;
    for (std::size_t i = 0; i < columns_.size(); ++i) line += (i ? "," : "") + detail::csv_field(columns_[i]);
    return line + "\n";
  }

  // New columns go at the end: the header is replaced and each existing row gets one empty
  // cell per new column.
  void widen(const std::vector<std::string>& added) {
    file_->close();
    const std::string text = detail::read_whole_file(path_, nullptr);
    const auto lines = detail::complete_lines(text, nullptr);
    columns_.insert(columns_.end(), added.begin(), added.end());
    index_columns();
    std::string out = header_line();
    const std::string pad(added.size(), ',');
    for (std::size_t i = 1; i < lines.size(); ++i) out += lines[i] + pad + "\n";
    detail::replace_file(path_, out);
    file_->open();
  }

  void truncate_for_resume(int64_t resume_step) {
    bool exists = false;
    const std::string text = detail::read_whole_file(path_, &exists);
    std::string tail;
    const auto lines = detail::complete_lines(text, &tail);
    if (lines.empty()) {  // no header yet: start afresh
      if (!tail.empty()) detail::warn_cut_record(path_, 1, tail);
      detail::replace_file(path_, "");
      return;
    }
    bool ok = true;
    columns_ = detail::csv_split(lines[0], &ok);
    const auto& fixed = metric_fixed_columns();
    const bool fixed_ok = ok && columns_.size() >= fixed.size() &&
                          std::equal(fixed.begin(), fixed.end(), columns_.begin());
    if (!fixed_ok)
      throw DataError(path_, 1, "", "the header does not start with step,split,wall_time,lr,grad_norm,tokens_per_s; "
                                    "not a metrics file of this program (move it away to start a new one)");
    index_columns();
    std::string kept = lines[0] + "\n";
    for (std::size_t i = 1; i < lines.size(); ++i) {
      int64_t step = 0;
      if (!detail::parse_step(lines[i].substr(0, lines[i].find(',')), &step)) {
        if (i + 1 == lines.size()) {
          detail::warn_cut_record(path_, i + 1, lines[i]);
          continue;
        }
        throw DataError(path_, static_cast<int64_t>(i + 1), "step", "expected an integer step; the metrics file is damaged");
      }
      if (step <= resume_step) kept += lines[i] + "\n";
    }
    if (!tail.empty()) detail::warn_cut_record(path_, lines.size() + 1, tail);
    if (!exists || kept.size() != text.size()) detail::replace_file(path_, kept);
  }

  std::string path_;
  std::vector<std::string> columns_;                   // empty until the header is written
  std::map<std::string, std::size_t> column_index_;   // metric name -> column
  std::unique_ptr<detail::AppendFile> file_;
};

}  // namespace mambatrack::train
