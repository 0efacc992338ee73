// Error types of mambatrack: every failure a user can cause is thrown as a mambatrack::Error
// subclass whose message says what was wrong, where, and what was expected. Library headers never
// exit, abort or assert.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace mambatrack {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A configuration value (file, option or template parameter) that cannot be honoured.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// Bad input data. Keeps the file, 1-based line (0: unknown) and column/field so callers can
// point at it; the message already contains all three.
class DataError : public Error {
 public:
  DataError(std::string file, int64_t line, std::string field, const std::string& problem)
      : Error(format(file, line, field, problem)),
        file_(std::move(file)), line_(line), field_(std::move(field)) {}
  explicit DataError(const std::string& what) : Error(what) {}

  const std::string& file() const noexcept { return file_; }
  int64_t line() const noexcept { return line_; }
  const std::string& field() const noexcept { return field_; }

 private:
  static std::string format(const std::string& file, int64_t line, const std::string& field,
                            const std::string& problem) {
    std::ostringstream os;
    os << (file.empty() ? "<input>" : file);
    if (line > 0) os << ':' << line;
    if (!field.empty()) os << ": column '" << field << '\'';
    os << ": " << problem;
    return os.str();
  }
  std::string file_;
  int64_t line_ = 0;
  std::string field_;
};

// A checkpoint or safetensors file that is unreadable, corrupt or does not match the model.
class CheckpointError : public Error {
 public:
  using Error::Error;
};

// A CUDA, cuBLAS or NCCL call that failed, or a device that is missing.
class DeviceError : public Error {
 public:
  using Error::Error;
};

// Tensor shapes or sizes that do not fit together.
class ShapeError : public Error {
 public:
  using Error::Error;
};

namespace detail {
// Builds "file:line: message" for the check macros.
template <class... Parts>
std::string located_message(const char* file, int line, const Parts&... parts) {
  std::ostringstream os;
  os << file << ':' << line << ": ";
  (os << ... << parts);
  return os.str();
}
}  // namespace detail

}  // namespace mambatrack

// MAMBATRACK_CHECK(cond, ErrorType, parts...): throws ErrorType("file:line: parts...") when cond
// is false. The parts are streamed, so sizes can be named: MAMBATRACK_CHECK(a == b, ShapeError,
// "rows ", a, " != ", b).
#define MAMBATRACK_CHECK(cond, ErrorType, ...)                                               \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      throw ::mambatrack::ErrorType(                                                          \
          ::mambatrack::detail::located_message(__FILE__, __LINE__, __VA_ARGS__));            \
    }                                                                                         \
  } while (0)

// Shape checks are the most common kind.
#define MAMBATRACK_CHECK_SHAPE(cond, ...) MAMBATRACK_CHECK(cond, ShapeError, __VA_ARGS__)
