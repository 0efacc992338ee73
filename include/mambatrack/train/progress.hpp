// Training progress for a person watching: on a terminal a one-line bar redrawn in place
// ("\r" ... "\x1b[K"), elsewhere (a batch job's log) one plain line every N seconds. The ETA is
// remaining_steps * s, where s is an exponential moving average of seconds per step:
// s <- a * dt/dsteps + (1 - a) * s. The clock is injectable so tests drive time by hand.
#pragma once

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <utility>

#include "mambatrack/core/error.hpp"

namespace mambatrack::train {

// What the trainer knows after an optimizer step.
struct ProgressUpdate {
  int64_t step = 0;  // optimizer steps done so far (counting those before a resume)
  std::optional<double> loss;
  std::optional<double> accuracy;
  std::optional<double> lr;
  std::optional<double> tokens_per_s;
};

enum class ProgressMode {
  kAuto,   // a bar when the output is a terminal, plain lines otherwise
  kBar,
  kPlain,
};

struct ProgressOptions {
  int64_t total_steps = 0;        // 0: unknown (no bar fill, no ETA)
  int64_t start_step = 0;         // the step a resumed run starts from
  ProgressMode mode = ProgressMode::kAuto;
  double plain_interval_s = 30.0; // one plain line per interval
  double bar_interval_s = 0.1;    // the bar is redrawn at most this often
  double smoothing = 0.1;         // weight a of the newest seconds-per-step in the average
  int bar_width = 24;             // characters between the brackets
  int columns = 0;                // terminal width to fit the bar into; 0: ask the terminal
  std::string label = "train";
};

// Monotonic seconds (an arbitrary origin).
using ProgressClock = std::function<double()>;
inline double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// "0:07", "12:34", "1:02:03"; "?" for unknown.
inline std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  char buf[48];
  if (s >= 3600)
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof(buf), "%lld:%02lld", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  return buf;
}

// "950", "12.3k", "4.56M".
inline std::string format_rate(double v) {
  char buf[48];
  if (!std::isfinite(v)) return "?";
  if (std::fabs(v) >= 1e9) std::snprintf(buf, sizeof(buf), "%.3gG", v / 1e9);
  else if (std::fabs(v) >= 1e6) std::snprintf(buf, sizeof(buf), "%.3gM", v / 1e6);
  else if (std::fabs(v) >= 1e3) std::snprintf(buf, sizeof(buf), "%.3gk", v / 1e3);
  else std::snprintf(buf, sizeof(buf), "%.3g", v);
  return buf;
}

class ProgressReporter {
 public:
  using Writer = std::function<void(const std::string&)>;

  // Writes to OUT (stderr by default); the bar is used when OUT is a terminal (mode kAuto).
  explicit ProgressReporter(ProgressOptions options, std::FILE* out = stderr, ProgressClock clock = steady_seconds)
      : ProgressReporter(std::move(options),
                         [out](const std::string& text) {
                           std::fputs(text.c_str(), out);
                           std::fflush(out);
                         },
                         out && ::isatty(::fileno(out)) == 1, std::move(clock), out ? ::fileno(out) : -1) {}

  // Hands every piece of text to WRITE; `terminal` stands in for isatty under mode kAuto.
  ProgressReporter(ProgressOptions options, Writer write, bool terminal, ProgressClock clock = steady_seconds)
      : ProgressReporter(std::move(options), std::move(write), terminal, std::move(clock), -1) {}

  void update(const ProgressUpdate& u) {
    const double now = clock_();
    if (u.step > last_step_) {
      const double per_step = (now - last_time_) / static_cast<double>(u.step - last_step_);
      seconds_per_step_ = have_rate_ ? opt_.smoothing * per_step + (1.0 - opt_.smoothing) * seconds_per_step_ : per_step;
      have_rate_ = true;
      last_step_ = u.step;
      last_time_ = now;
    }
    latest_ = u;
    const bool final_step = opt_.total_steps > 0 && u.step >= opt_.total_steps;
    if (bar_) {
      if (!drawn_ || final_step || now - last_draw_ >= opt_.bar_interval_s) draw_bar(now);
    } else if (now >= next_plain_ || (final_step && plain_step_ != u.step)) {
      emit_plain(now);
      while (next_plain_ <= now) next_plain_ += opt_.plain_interval_s;
    }
  }

  // A line of its own (an evaluation result) that does not break the bar.
  void message(const std::string& line) {
    if (bar_ && drawn_) {
      write_("\r\x1b[K" + line + "\n");
      write_(bar_text_);
    } else {
      write_(line + "\n");
    }
  }

  // The end of the run: the bar gets its final state and a newline; plain mode prints the
  // last step if it has not been printed yet.
  void finish() {
    if (finished_) return;
    finished_ = true;
    const double now = clock_();
    if (bar_) {
      if (latest_ && drawn_step_ != latest_->step) draw_bar(now);
      if (drawn_) write_("\n");
    } else if (latest_ && plain_step_ != latest_->step) {
      emit_plain(now);
    }
  }

  // Seconds left at the smoothed rate; empty before the first step or without a total.
  std::optional<double> eta_seconds() const {
    if (!have_rate_ || opt_.total_steps <= 0) return std::nullopt;
    return seconds_per_step_ * static_cast<double>(std::max<int64_t>(0, opt_.total_steps - last_step_));
  }
  double seconds_per_step() const { return have_rate_ ? seconds_per_step_ : NAN; }
  bool bar() const { return bar_; }

  // The text of the current state, as the plain line shows it (without the newline).
  std::string status_line(double now) const {
    std::string s = "[" + opt_.label + "] step " + step_text();
    if (opt_.total_steps > 0) {
      char pct[32];
      std::snprintf(pct, sizeof(pct), " (%.1f%%)", 100.0 * fraction());
      s += pct;
    }
    s += metrics_text(" | ");
    s += " | elapsed " + format_duration(now - start_time_);
    if (opt_.total_steps > 0) s += " | eta " + format_duration(eta_seconds().value_or(NAN));
    return s;
  }

 private:
  ProgressReporter(ProgressOptions options, Writer write, bool terminal, ProgressClock clock, int fd)
      : opt_(std::move(options)), write_(std::move(write)), clock_(std::move(clock)) {
    MAMBATRACK_CHECK(opt_.plain_interval_s > 0, ConfigError, "progress: plain_interval_s must be > 0, got ",
                     opt_.plain_interval_s);
    MAMBATRACK_CHECK(opt_.smoothing > 0 && opt_.smoothing <= 1, ConfigError,
                     "progress: smoothing must be in (0, 1], got ", opt_.smoothing);
    MAMBATRACK_CHECK(opt_.total_steps >= 0 && opt_.start_step >= 0, ConfigError, "progress: total_steps (",
                     opt_.total_steps, ") and start_step (", opt_.start_step, ") must be >= 0");
    bar_ = opt_.mode == ProgressMode::kBar || (opt_.mode == ProgressMode::kAuto && terminal);
    if (opt_.columns <= 0) {
      struct winsize ws {};
      opt_.columns = (fd >= 0 && ::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) ? ws.ws_col : 100;
    }
    start_time_ = last_time_ = clock_();
    last_step_ = opt_.start_step;
    next_plain_ = start_time_ + opt_.plain_interval_s;
  }

  double fraction() const {
    return opt_.total_steps > 0 ? std::min(1.0, static_cast<double>(last_step_) / static_cast<double>(opt_.total_steps))
                                : 0.0;
  }
  std::string step_text() const {
    const int64_t step = latest_ ? latest_->step : last_step_;
    return std::to_string(step) + (opt_.total_steps > 0 ? "/" + std::to_string(opt_.total_steps) : "");
  }
  std::string metrics_text(const std::string& sep) const {
    std::string s;
    if (!latest_) return s;
    char buf[64];
    if (latest_->loss) {
      std::snprintf(buf, sizeof(buf), "loss %.4f", *latest_->loss);
      s += sep + buf;
    }
    if (latest_->accuracy) {
      std::snprintf(buf, sizeof(buf), "acc %.4f", *latest_->accuracy);
      s += sep + buf;
    }
    if (latest_->lr) {
      std::snprintf(buf, sizeof(buf), "lr %.2e", *latest_->lr);
      s += sep + buf;
    }
    if (latest_->tokens_per_s) s += sep + format_rate(*latest_->tokens_per_s) + " tok/s";
    return s;
  }

  void emit_plain(double now) {
    write_(status_line(now) + "\n");
    plain_step_ = latest_ ? latest_->step : last_step_;
  }

  void draw_bar(double now) {
    std::string s = opt_.label + " [";
    const int width = std::max(1, opt_.bar_width);
    const int filled = static_cast<int>(fraction() * width);
    for (int i = 0; i < width; ++i) s += i < filled ? '=' : (i == filled && opt_.total_steps > 0 ? '>' : ' ');
    s += "] " + step_text();
    if (opt_.total_steps > 0) s += " " + std::to_string(static_cast<int>(100.0 * fraction())) + "%";
    s += metrics_text(" ");
    if (opt_.total_steps > 0) s += " eta " + format_duration(eta_seconds().value_or(NAN));
    // A line longer than the terminal wraps, and "\r" would then redraw only its last part.
    if (static_cast<int>(s.size()) > opt_.columns - 1) s.resize(static_cast<std::size_t>(std::max(0, opt_.columns - 1)));
    bar_text_ = "\r" + s + "\x1b[K";
    write_(bar_text_);
    drawn_ = true;
    drawn_step_ = latest_ ? latest_->step : last_step_;
    last_draw_ = now;
  }

  ProgressOptions opt_;
  Writer write_;
  ProgressClock clock_;
  bool bar_ = false;
  double start_time_ = 0, last_time_ = 0, next_plain_ = 0, last_draw_ = 0;
  int64_t last_step_ = 0;
  int64_t plain_step_ = -1;  // the step the last plain line showed
  int64_t drawn_step_ = -1;  // the step the bar shows
  double seconds_per_step_ = 0;
  bool have_rate_ = false;
  bool drawn_ = false;
  bool finished_ = false;
  std::optional<ProgressUpdate> latest_;
  std::string bar_text_;
};

}  // namespace mambatrack::train
