// The logging sink: library code reports progress and warnings through a callback that the
// program sets, and never prints by itself. The default sink drops everything below Warning and
// writes the rest to stderr; a program replaces it with set_log_sink.
#pragma once

#include <cstdio>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>

namespace mambatrack {

enum class LogLevel { Debug = 0, Info = 1, Warning = 2, Error = 3 };

inline const char* to_string(LogLevel level) {
  switch (level) {
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Warning: return "warning";
    case LogLevel::Error: return "error";
  }
  return "?";
}

using LogSink = std::function<void(LogLevel, const std::string&)>;

namespace detail {
struct LogState {
  std::mutex mutex;
  LogSink sink = [](LogLevel level, const std::string& message) {
    if (level >= LogLevel::Warning) {
      std::fprintf(stderr, "mambatrack %s: %s\n", to_string(level), message.c_str());
    }
  };
};
inline LogState& log_state() {
  static LogState state;
  return state;
}
}  // namespace detail

// Replaces the sink; returns the previous one (so a scope can restore it).
inline LogSink set_log_sink(LogSink sink) {
  auto& state = detail::log_state();
  std::lock_guard<std::mutex> lock(state.mutex);
  std::swap(state.sink, sink);
  return sink;
}

inline void log_message(LogLevel level, const std::string& message) {
  auto& state = detail::log_state();
  std::lock_guard<std::mutex> lock(state.mutex);
  if (state.sink) state.sink(level, message);
}

// log(LogLevel::Info, "read ", n, " hits from ", path)
template <class... Parts>
void log(LogLevel level, const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  log_message(level, os.str());
}

}  // namespace mambatrack
