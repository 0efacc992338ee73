// Comma-separated tables as the TrackML files use them: one header line naming the columns, then
// one row per line, fields separated by ',', no quoting. The reader takes the whole text at once
// (plain, or gzip inflated with zlib), finds columns by header name, splits rows without an
// allocation per field and parses numbers with std::from_chars (no locale); every problem is a
// DataError "file:line: column 'name': problem, got "text"". The writer side formats numbers with
// std::to_chars (shortest text that reads back to the same bits) and replaces files atomically.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "mambatrack/core/error.hpp"

namespace mambatrack::data {

// zlib level of the .gz writers: 1 is ~5x faster than gzip's default 6 on TrackML text for
// files ~17% larger (hits: 42% vs 36% of the text).
inline constexpr int kGzipLevel = 1;

// Largest text a .gz file may inflate to (guards against decompression bombs).
inline constexpr std::size_t kMaxInflatedBytes = std::size_t(1) << 34;  // 16 GiB

inline bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
inline bool is_gzip_path(std::string_view path) { return ends_with(path, ".gz"); }

namespace detail {

// A field's text for an error message: quoted, at most 40 characters, bytes outside printable
// ASCII written as \xNN so a binary file gives a readable message.
inline std::string quote_text(std::string_view s) {
  static const char* kHex = "0123456789abcdef";
  std::string out = "\"";
  const std::size_t n = s.size() < 40 ? s.size() : 40;
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (s.size() > n) out += "...";
  out += '"';
  return out;
}

inline std::string errno_text() { return std::strerror(errno); }

}  // namespace detail

// Inflates a complete gzip stream (one or more members, as `cat a.gz b.gz` makes). A truncated or
// corrupt stream, trailing bytes that are not another member, or output beyond max_bytes throw
// DataError naming `name`.
inline std::string inflate_gzip(const char* data, std::size_t size, const std::string& name,
                                std::size_t max_bytes = kMaxInflatedBytes) {
  std::string out;
  if (size == 0) throw DataError(name, 0, "", "empty file, expected a gzip stream");
  out.resize(size < (max_bytes / 4) ? size * 4 + 1024 : max_bytes);
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
    throw DataError(name, 0, "", "zlib inflateInit2 failed");
  std::size_t in_pos = 0, out_pos = 0;
  bool member_done = false;
  auto fail = [&](const std::string& why) {
    inflateEnd(&zs);
    throw DataError(name, 0, "", why);
  };
  while (true) {
    if (member_done) {
      // Another member may follow; trailing zero padding is tolerated (gzip does the same).
      std::size_t p = in_pos;
      while (p < size && data[p] == 0) ++p;
      if (p == size) break;
      if (size - in_pos < 2 || static_cast<unsigned char>(data[in_pos]) != 0x1f ||
          static_cast<unsigned char>(data[in_pos + 1]) != 0x8b)
        fail("corrupt gzip file: " + std::to_string(size - in_pos) +
             " bytes of trailing data after the gzip stream");
      if (inflateReset(&zs) != Z_OK) fail("zlib inflateReset failed");
      member_done = false;
    }
    if (out_pos == out.size()) {
      if (out.size() >= max_bytes)
        fail("gzip stream inflates to more than " + std::to_string(max_bytes) + " bytes");
      out.resize(out.size() > max_bytes / 2 ? max_bytes : out.size() * 2);
    }
    const std::size_t in_chunk = size - in_pos < (1u << 30) ? size - in_pos : (1u << 30);
    const std::size_t out_chunk = out.size() - out_pos < (1u << 30) ? out.size() - out_pos : (1u << 30);
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data + in_pos));
    zs.avail_in = static_cast<uInt>(in_chunk);
    zs.next_out = reinterpret_cast<Bytef*>(&out[out_pos]);
    zs.avail_out = static_cast<uInt>(out_chunk);
    const int rc = inflate(&zs, Z_NO_FLUSH);
    in_pos += in_chunk - zs.avail_in;
    out_pos += out_chunk - zs.avail_out;
    if (rc == Z_STREAM_END) {
      member_done = true;
      continue;
    }
    if (rc == Z_OK) continue;
    if (rc == Z_BUF_ERROR) {
      // No progress possible: either the output is full (grow and go on) or the input ran out
      // before the end of the stream.
      if (zs.avail_out == 0) continue;
      fail("truncated gzip file: the stream ends after " + std::to_string(size) +
           " compressed bytes without its end marker");
    }
    fail(std::string("corrupt gzip file: ") + (zs.msg ? zs.msg : "zlib error " + std::to_string(rc)));
  }
  inflateEnd(&zs);
  out.resize(out_pos);
  return out;
}

// gzip-compresses `text` (one member; level 0-9 as zlib's).
inline std::string deflate_gzip(std::string_view text, const std::string& name, int level = kGzipLevel) {
  z_stream zs{};
  if (deflateInit2(&zs, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw DataError(name, 0, "", "zlib deflateInit2 failed");
  std::string out(deflateBound(&zs, static_cast<uLong>(text.size())) + 64, '\0');
  std::size_t in_pos = 0, out_pos = 0;
  while (true) {
    const std::size_t in_chunk = text.size() - in_pos < (1u << 30) ? text.size() - in_pos : (1u << 30);
    if (out_pos == out.size()) out.resize(out.size() * 2);
    const std::size_t out_chunk = out.size() - out_pos < (1u << 30) ? out.size() - out_pos : (1u << 30);
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data() + in_pos));
    zs.avail_in = static_cast<uInt>(in_chunk);
    zs.next_out = reinterpret_cast<Bytef*>(&out[out_pos]);
    zs.avail_out = static_cast<uInt>(out_chunk);
    const bool last = in_pos + in_chunk == text.size();
    const int rc = deflate(&zs, last ? Z_FINISH : Z_NO_FLUSH);
    in_pos += in_chunk - zs.avail_in;
    out_pos += out_chunk - zs.avail_out;
    if (rc == Z_STREAM_END) break;
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      deflateEnd(&zs);
      throw DataError(name, 0, "", "zlib deflate failed (" + std::to_string(rc) + ")");
    }
  }
  deflateEnd(&zs);
  out.resize(out_pos);
  return out;
}

// The whole file as bytes, in one read.
inline std::string read_file_bytes(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw DataError(path, 0, "", "cannot open file: " + detail::errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw DataError(path, 0, "", "not a regular file");
  }
  std::string bytes(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t done = 0;
  while (true) {
    if (done == bytes.size()) bytes.resize(bytes.size() + 65536);  // the file may have grown
    const ssize_t r = ::read(fd, &bytes[done], bytes.size() - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      const std::string why = detail::errno_text();
      ::close(fd);
      throw DataError(path, 0, "", "read failed: " + why);
    }
    if (r == 0) break;
    done += static_cast<std::size_t>(r);
  }
  ::close(fd);
  bytes.resize(done);
  return bytes;
}

// The text of a CSV file: read in one pass, inflated when the name ends in .gz.
inline std::string read_text_file(const std::string& path) {
  std::string bytes = read_file_bytes(path);
  if (!is_gzip_path(path)) return bytes;
  return inflate_gzip(bytes.data(), bytes.size(), path);
}

// Replaces `path` atomically: a temporary file beside it, fsync, rename, fsync of the directory.
// A crash at any point leaves the old file or the new one, never half a file.
inline void write_file_atomically(const std::string& path, std::string_view bytes) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  auto fail = [&](const std::string& what) {
    const std::string why = detail::errno_text();
    ::unlink(tmp.c_str());
    throw DataError(path, 0, "", what + " failed: " + why);
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("creating " + tmp);
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      fail("writing");
    }
    done += static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    fail("fsync");
  }
  if (::close(fd) != 0) fail("close");
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename");
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// Writes CSV text to `path`, gzip-compressed when the name ends in .gz, atomically.
inline void write_text_file(const std::string& path, std::string_view text, int gzip_level = kGzipLevel) {
  if (is_gzip_path(path)) {
    write_file_atomically(path, deflate_gzip(text, path, gzip_level));
  } else {
    write_file_atomically(path, text);
  }
}

// Reads a CSV text row by row. Usage:
//   CsvReader r(text, "hits.csv");
//   const int c_x = r.require("x");
//   while (r.next()) xs.push_back(r.get_float(c_x));
// The text must outlive the reader (fields are views into it).
class CsvReader {
 public:
  CsvReader(std::string_view text, std::string name) : text_(text), name_(std::move(name)) {
    // A UTF-8 byte order mark is tolerated.
    if (text_.size() >= 3 && text_.compare(0, 3, "\xEF\xBB\xBF") == 0) pos_ = 3;
    // The header is the first non-blank line.
    std::string_view line;
    while (true) {
      if (!next_line(line)) throw DataError(name_, 0, "", "empty file, expected a header line");
      if (!is_blank(line)) break;
    }
    header_line_ = line_;
    split(line, header_);
    for (std::size_t i = 0; i < header_.size(); ++i) {
      if (header_[i].empty())
        throw DataError(name_, line_, "", "empty column name at position " + std::to_string(i + 1) +
                                              " of the header " + detail::quote_text(line));
      for (std::size_t j = 0; j < i; ++j)
        if (header_[j] == header_[i])
          throw DataError(name_, line_, std::string(header_[i]), "column name appears twice in the header");
    }
    fields_.reserve(header_.size() + 1);
  }

  const std::string& name() const { return name_; }
  const std::vector<std::string_view>& header() const { return header_; }
  // The header names joined with ',' (for messages).
  std::string header_text() const {
    std::string s;
    for (std::size_t i = 0; i < header_.size(); ++i) {
      if (i) s += ',';
      s += header_[i];
    }
    return s;
  }

  // Index of a column, or -1 when the header has no such name.
  int find(std::string_view column) const {
    for (std::size_t i = 0; i < header_.size(); ++i)
      if (header_[i] == column) return static_cast<int>(i);
    return -1;
  }
  // Index of a column the file must have.
  int require(std::string_view column) const {
    const int i = find(column);
    if (i < 0)
      throw DataError(name_, header_line_, std::string(column),
                      "required column missing; the header is \"" + header_text() + "\"");
    return i;
  }

  // An upper bound on the number of rows left (line ends counted), to reserve vectors.
  std::size_t estimate_rows() const {
    std::size_t n = 1;
    const char* p = text_.data() + pos_;
    const char* end = text_.data() + text_.size();
    while (p < end) {
      const void* q = std::memchr(p, '\n', static_cast<std::size_t>(end - p));
      if (!q) break;
      ++n;
      p = static_cast<const char*>(q) + 1;
    }
    return n;
  }

  // Moves to the next non-blank row; false at the end. A row with fewer or more fields than the
  // header throws.
  bool next() {
    std::string_view line;
    while (true) {
      if (!next_line(line)) return false;
      if (!is_blank(line)) break;
    }
    split(line, fields_);
    if (fields_.size() != header_.size())
      throw DataError(name_, line_, "",
                      (fields_.size() < header_.size() ? "too few fields: expected " : "too many fields: expected ") +
                          std::to_string(header_.size()) + " (as in the header \"" + header_text() +
                          "\"), got " + std::to_string(fields_.size()) + " in " + detail::quote_text(line));
    return true;
  }

  int64_t line() const { return line_; }
  std::string_view field(int column) const { return fields_[static_cast<std::size_t>(column)]; }

  // An integer of type T in [lo, hi].
  template <class T>
  T get_int(int column, T lo = std::numeric_limits<T>::min(), T hi = std::numeric_limits<T>::max()) const {
    static_assert(std::is_integral_v<T>);
    std::string_view f = field(column);
    if (f.empty()) fail(column, "empty field, expected an integer");
    const char* b = f.data();
    const char* e = b + f.size();
    if (*b == '+' && e - b > 1 && b[1] != '-') ++b;
    T v{};
    const auto [ptr, ec] = std::from_chars(b, e, v, 10);
    if (ec == std::errc::result_out_of_range) {
      fail(column, std::string("integer out of range [") + std::to_string(lo) + ", " + std::to_string(hi) +
                       "], got " + detail::quote_text(f));
    }
    if (ec != std::errc() || ptr != e) {
      if (std::is_unsigned_v<T> && *b == '-' && ptr == b)
        fail(column, "expected a non-negative integer, got " + detail::quote_text(f));
      fail(column, "expected an integer, got " + detail::quote_text(f));
    }
    if (v < lo || v > hi)
      fail(column, std::string("integer out of range [") + std::to_string(lo) + ", " + std::to_string(hi) +
                       "], got " + detail::quote_text(f));
    return v;
  }
  int32_t get_i32(int column, int32_t lo = std::numeric_limits<int32_t>::min()) const {
    return get_int<int32_t>(column, lo);
  }
  uint64_t get_u64(int column) const { return get_int<uint64_t>(column); }
  int64_t get_i64(int column, int64_t lo = std::numeric_limits<int64_t>::min()) const {
    return get_int<int64_t>(column, lo);
  }

  // A finite float32, correctly rounded from the decimal text.
  float get_float(int column) const { return get_real<float>(column); }
  // A finite float64, correctly rounded from the decimal text.
  double get_double(int column) const { return get_real<double>(column); }

  [[noreturn]] void fail(int column, const std::string& problem) const {
    throw DataError(name_, line_, column >= 0 ? std::string(header_[static_cast<std::size_t>(column)]) : "",
                    problem);
  }

 private:
  template <class T>
  T get_real(int column) const {
    std::string_view f = field(column);
    if (f.empty()) fail(column, "empty field, expected a number");
    const char* b = f.data();
    const char* e = b + f.size();
    if (*b == '+' && e - b > 1 && b[1] != '-') ++b;
    T v{};
    const auto [ptr, ec] = std::from_chars(b, e, v, std::chars_format::general);
    if (ec == std::errc::result_out_of_range)
      fail(column, std::string("number out of ") + (sizeof(T) == 4 ? "float32" : "float64") +
                       " range (overflow or underflow), got " + detail::quote_text(f));
    if (ec != std::errc() || ptr != e) fail(column, "expected a number, got " + detail::quote_text(f));
    if (!std::isfinite(v)) fail(column, "expected a finite number, got " + detail::quote_text(f));
    return v;
  }

  static bool is_blank(std::string_view line) {
    for (char c : line)
      if (c != ' ' && c != '\t') return false;
    return true;
  }

  // The next line without its LF (and CR); false at the end of the text.
  bool next_line(std::string_view& line) {
    if (pos_ >= text_.size()) return false;
    const char* b = text_.data() + pos_;
    const std::size_t left = text_.size() - pos_;
    const void* nl = std::memchr(b, '\n', left);
    std::size_t len = nl ? static_cast<std::size_t>(static_cast<const char*>(nl) - b) : left;
    pos_ += nl ? len + 1 : len;
    ++line_;
    if (len > 0 && b[len - 1] == '\r') --len;
    line = std::string_view(b, len);
    return true;
  }

  // Splits a line at ',' into fields with spaces and tabs around each trimmed.
  static void split(std::string_view line, std::vector<std::string_view>& out) {
    out.clear();
    const char* p = line.data();
    const char* end = p + line.size();
    while (true) {
      const char* start = p;
      while (p < end && *p != ',') ++p;
      const char* fb = start;
      const char* fe = p;
      while (fb < fe && (*fb == ' ' || *fb == '\t')) ++fb;
      while (fe > fb && (fe[-1] == ' ' || fe[-1] == '\t')) --fe;
      out.emplace_back(fb, static_cast<std::size_t>(fe - fb));
      if (p == end) break;
      ++p;  // past ','
    }
  }

  std::string_view text_;
  std::string name_;
  std::size_t pos_ = 0;
  int64_t line_ = 0;
  int64_t header_line_ = 1;
  std::vector<std::string_view> header_;
  std::vector<std::string_view> fields_;
};

// Appends CSV fields to a string: integers plain, floats as the shortest text that reads back to
// the same value (std::to_chars), rows ended by LF.
class CsvWriter {
 public:
  explicit CsvWriter(std::string name, std::size_t reserve_bytes = 0) : name_(std::move(name)) {
    out_.reserve(reserve_bytes);
  }
  void header(std::string_view line) {
    out_.append(line);
    out_ += '\n';
  }
  template <class T>
  void field(T v, const char* column = "", std::size_t row = 0) {
    if (!first_) out_ += ',';
    first_ = false;
    char buf[64];
    if constexpr (std::is_floating_point_v<T>) {
      if (!std::isfinite(v))
        throw DataError(name_, 0, column,
                        "cannot write a non-finite value (row " + std::to_string(row) + ")");
    }
    const auto r = std::to_chars(buf, buf + sizeof(buf), v);
    out_.append(buf, static_cast<std::size_t>(r.ptr - buf));
  }
  void end_row() {
    out_ += '\n';
    first_ = true;
  }
  const std::string& text() const { return out_; }
  std::string& text() { return out_; }

 private:
  std::string name_;
  std::string out_;
  bool first_ = true;
};

}  // namespace mambatrack::data
