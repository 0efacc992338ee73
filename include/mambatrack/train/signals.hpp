// SIGINT/SIGTERM for the trainer: the handler only stores the signal number in a lock-free
// atomic (async-signal-safe) and puts both signals back to their default action, so the trainer
// checkpoints and exits cleanly at the next step while a second Ctrl-C or kill ends it at once.
// RAII: the handlers that were installed before are restored on destruction.
#pragma once

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <string>

#include <signal.h>

#include "mambatrack/core/error.hpp"

namespace mambatrack::train {

namespace detail {
static_assert(std::atomic<int>::is_always_lock_free, "the stop flag must be lock-free to be set in a signal handler");
inline std::atomic<int> g_stop_signal{0};      // 0: no stop requested; else the signal number
inline std::atomic<bool> g_stop_installed{false};

extern "C" inline void mambatrack_stop_signal_handler(int sig) {
  g_stop_signal.store(sig, std::memory_order_relaxed);
  // Only async-signal-safe calls here: sigaction is one.
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGINT, &dfl, nullptr);
  ::sigaction(SIGTERM, &dfl, nullptr);
}
}  // namespace detail

// One at a time per process. Typical use:
//   StopSignals stop;
//   for (...) { train_step(); if (stop.stop_requested()) { save_checkpoint(...); break; } }
class StopSignals {
 public:
  StopSignals() {
    bool expected = false;
    MAMBATRACK_CHECK(detail::g_stop_installed.compare_exchange_strong(expected, true), Error,
                     "StopSignals: the SIGINT/SIGTERM handlers are already installed (one StopSignals at a time)");
    detail::g_stop_signal.store(0);
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_handler = detail::mambatrack_stop_signal_handler;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);  // the handler runs with both blocked: it is never interleaved
    sigaddset(&sa.sa_mask, SIGTERM);
    sa.sa_flags = SA_RESTART;        // a blocking read or write is not cut short by the first signal
    const bool int_ok = ::sigaction(SIGINT, &sa, &old_int_) == 0;
    if (!int_ok || ::sigaction(SIGTERM, &sa, &old_term_) != 0) {
      const int err = errno;
      if (int_ok) ::sigaction(SIGINT, &old_int_, nullptr);
      detail::g_stop_installed.store(false);
      throw Error(std::string("StopSignals: installing the SIGINT/SIGTERM handlers failed (") + std::strerror(err) + ")");
    }
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  ~StopSignals() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
    detail::g_stop_signal.store(0);
    detail::g_stop_installed.store(false);
  }

  bool stop_requested() const { return detail::g_stop_signal.load(std::memory_order_relaxed) != 0; }
  // The signal that asked to stop (SIGINT, SIGTERM), or 0.
  int signal_number() const { return detail::g_stop_signal.load(std::memory_order_relaxed); }
  // A stop asked for by the program itself (a time limit), seen like a signal: signal_number() gives `sig`.
  void request_stop(int sig = SIGTERM) { detail::g_stop_signal.store(sig); }

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

}  // namespace mambatrack::train
