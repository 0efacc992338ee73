// TensorBoard event files for scalars, written by hand: TFRecord frames
//   uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)   (little-endian)
// with masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 over CRC32C (Castagnoli), holding
// tensorboard.Event protobufs (wall_time=1 double, step=2 int64, file_version=3, summary=5 with
// Summary.Value{tag=1, simple_value=2 float}, session_log=7 {status=1: START=1}).
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mambatrack/core/error.hpp"
#include "mambatrack/train/metric_sinks.hpp"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tensorboard.hpp writes little-endian fields with memcpy; add byte swapping for this host"
#endif

namespace mambatrack::train {

// ---- CRC32C (reflected polynomial 0x82F63B78), table-driven ---------------------------------

namespace detail {
inline const std::array<uint32_t, 256>& crc32c_table() {
  static const std::array<uint32_t, 256> kTable = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return kTable;
}
}  // namespace detail

// CRC of `n` more bytes after a CRC `crc` of the bytes before them (crc32c_extend(0, ...) starts).
inline uint32_t crc32c_extend(uint32_t crc, const void* data, std::size_t n) {
  const auto& table = detail::crc32c_table();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = ~crc;
  for (std::size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFFu] ^ (c >> 8);
  return ~c;
}
inline uint32_t crc32c(const void* data, std::size_t n) { return crc32c_extend(0, data, n); }

// TFRecord stores CRCs masked, so that a CRC of data that itself holds CRCs stays well mixed.
inline uint32_t mask_crc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }
inline uint32_t unmask_crc32c(uint32_t masked) {
  const uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

// ---- protobuf wire format, the few pieces an Event needs ------------------------------------

namespace proto {
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

inline void append_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}
inline void append_tag(std::string& out, uint32_t field, WireType type) { append_varint(out, (uint64_t{field} << 3) | type); }
template <class T>
void append_little_endian(std::string& out, T value) {
  unsigned char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // the hosts we build for are little-endian
  out.append(reinterpret_cast<const char*>(bytes), sizeof(T));
}
inline void append_double(std::string& out, uint32_t field, double v) {
  append_tag(out, field, kFixed64);
  append_little_endian(out, v);
}
inline void append_float(std::string& out, uint32_t field, float v) {
  append_tag(out, field, kFixed32);
  append_little_endian(out, v);
}
// int64 is a plain varint of the two's complement (10 bytes for negatives).
inline void append_int64(std::string& out, uint32_t field, int64_t v) {
  append_tag(out, field, kVarint);
  append_varint(out, static_cast<uint64_t>(v));
}
inline void append_bytes(std::string& out, uint32_t field, const std::string& bytes) {
  append_tag(out, field, kLengthDelimited);
  append_varint(out, bytes.size());
  out += bytes;
}
}  // namespace proto

// Event field numbers (tensorboard/compat/proto/event.proto, summary.proto).
struct EventField {
  static constexpr uint32_t kWallTime = 1, kStep = 2, kFileVersion = 3, kSummary = 5, kSessionLog = 7;
  static constexpr uint32_t kSummaryValue = 1, kValueTag = 1, kValueSimpleValue = 2;
  static constexpr uint32_t kSessionLogStatus = 1, kSessionStart = 1;
};
constexpr const char* kEventFileVersion = "brain.Event:2";

namespace detail {
// wall_time and step as proto3 writes them: left out when zero.
inline std::string event_header(double wall_time, int64_t step) {
  std::string e;
  if (wall_time != 0.0) proto::append_double(e, EventField::kWallTime, wall_time);
  if (step != 0) proto::append_int64(e, EventField::kStep, step);
  return e;
}
}  // namespace detail

inline std::string encode_file_version_event(double wall_time, const std::string& version = kEventFileVersion) {
  std::string e = detail::event_header(wall_time, 0);
  proto::append_bytes(e, EventField::kFileVersion, version);
  return e;
}

// One Event holding several scalars of one step (a Summary with one Value per tag).
inline std::string encode_scalar_event(double wall_time, int64_t step,
                                       const std::vector<std::pair<std::string, float>>& scalars) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string v;
    proto::append_bytes(v, EventField::kValueTag, tag);
    proto::append_float(v, EventField::kValueSimpleValue, value);
    proto::append_bytes(summary, EventField::kSummaryValue, v);
  }
  std::string e = detail::event_header(wall_time, step);
  proto::append_bytes(e, EventField::kSummary, summary);
  return e;
}

// SessionLog START at `step`: TensorBoard then discards the events of earlier files with
// step >= `step`, which is how a resumed run hides what the interrupted one wrote past its
// checkpoint.
inline std::string encode_session_start_event(double wall_time, int64_t step) {
  std::string log;
  proto::append_tag(log, EventField::kSessionLogStatus, proto::kVarint);
  proto::append_varint(log, EventField::kSessionStart);
  std::string e = detail::event_header(wall_time, step);
  proto::append_bytes(e, EventField::kSessionLog, log);
  return e;
}

// length, masked CRC of the length, data, masked CRC of the data.
inline std::string tfrecord_frame(const std::string& data) {
  std::string out;
  out.reserve(data.size() + 16);
  const uint64_t length = data.size();
  proto::append_little_endian(out, length);
  proto::append_little_endian(out, mask_crc32c(crc32c(out.data(), 8)));
  out += data;
  proto::append_little_endian(out, mask_crc32c(crc32c(data.data(), data.size())));
  return out;
}

// A new event file DIR/events.out.tfevents.<unix time>.<hostname> (".<pid>[.<n>]" appended
// when that name is taken), starting with the file_version record; each record is flushed.
class EventFileWriter {
 public:
  // With `resume_step`, a SessionLog START at *resume_step + 1 follows the version record, so
  // TensorBoard drops the interrupted run's events past the checkpoint it resumed from.
  explicit EventFileWriter(const std::string& dir, std::optional<int64_t> resume_step = std::nullopt,
                           double wall_time = unix_time_now()) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    MAMBATRACK_CHECK(!ec, Error, dir, ": cannot create the TensorBoard directory (", ec.message(), ")");
    char host[256] = {};
    if (::gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') std::strcpy(host, "localhost");
    const std::string base = dir + "/events.out.tfevents." + std::to_string(static_cast<int64_t>(wall_time)) + "." + host;
    for (int attempt = 0; attempt < 1000 && !file_; ++attempt) {
      path_ = attempt == 0 ? base : base + "." + std::to_string(::getpid()) + (attempt == 1 ? "" : "." + std::to_string(attempt));
      file_ = std::fopen(path_.c_str(), "wbx");  // exclusive: never overwrite another writer's file
      MAMBATRACK_CHECK(file_ || errno == EEXIST, Error, path_, ": cannot create the event file (", std::strerror(errno), ")");
    }
    MAMBATRACK_CHECK(file_ != nullptr, Error, base, ": no free event file name");
    write_record(encode_file_version_event(wall_time));
    if (resume_step) write_record(encode_session_start_event(wall_time, *resume_step + 1));
  }
  EventFileWriter(const EventFileWriter&) = delete;
  EventFileWriter& operator=(const EventFileWriter&) = delete;
  ~EventFileWriter() {
    if (file_) std::fclose(file_);
  }

  void add_scalar(const std::string& tag, int64_t step, double value, double wall_time = unix_time_now()) {
    write_record(encode_scalar_event(wall_time, step, {{tag, static_cast<float>(value)}}));
  }
  void add_scalars(int64_t step, const std::vector<std::pair<std::string, float>>& scalars,
                   double wall_time = unix_time_now()) {
    if (!scalars.empty()) write_record(encode_scalar_event(wall_time, step, scalars));
  }
  // Appends one framed record holding `event` (an encoded Event) and flushes it.
  void write_record(const std::string& event) {
    const std::string frame = tfrecord_frame(event);
    MAMBATRACK_CHECK(std::fwrite(frame.data(), 1, frame.size(), file_) == frame.size() && std::fflush(file_) == 0,
                     Error, path_, ": write failed (", std::strerror(errno), ")");
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// MetricRecords as TensorBoard scalars: one Event per record, tags "<split>/<name>" for each
// metric and "<split>/lr", "<split>/grad_norm", "<split>/tokens_per_s" when present.
class TensorBoardSink : public MetricSink {
 public:
  explicit TensorBoardSink(const std::string& dir, std::optional<int64_t> resume_step = std::nullopt)
      : writer_(dir, resume_step) {}
  void write(const MetricRecord& r) override {
    std::vector<std::pair<std::string, float>> scalars;
    const std::string prefix = r.split + "/";
    if (r.lr) scalars.emplace_back(prefix + "lr", static_cast<float>(*r.lr));
    if (r.grad_norm) scalars.emplace_back(prefix + "grad_norm", static_cast<float>(*r.grad_norm));
    if (r.tokens_per_s) scalars.emplace_back(prefix + "tokens_per_s", static_cast<float>(*r.tokens_per_s));
    for (const auto& [name, v] : r.values) scalars.emplace_back(prefix + name, static_cast<float>(v));
    writer_.add_scalars(r.step, scalars, r.wall_time);
  }
  const std::string& path() const { return writer_.path(); }

 private:
  EventFileWriter writer_;
};

}  // namespace mambatrack::train
