// Stop signals: raise(SIGTERM / SIGINT) in-process sets the flag and nothing else; both signals
// then have their default action (a second one force-quits, checked in a forked child); the
// handlers installed before are back after destruction.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

#include "mambatrack/train/signals.hpp"

using namespace mambatrack;
using namespace mambatrack::train;

namespace {
volatile std::sig_atomic_t g_previous_handler_calls = 0;
extern "C" void previous_handler(int) { g_previous_handler_calls = g_previous_handler_calls + 1; }

void (*current_handler(int sig))(int) {
  struct sigaction now {};
  ::sigaction(sig, nullptr, &now);
  return now.sa_handler;
}
}  // namespace

TEST_CASE("signals: raise(SIGTERM) sets the stop flag, and the previous handlers come back", "[cpu][train]") {
  struct sigaction mine {}, saved_int {}, saved_term {};
  mine.sa_handler = previous_handler;
  sigemptyset(&mine.sa_mask);
  ::sigaction(SIGINT, &mine, &saved_int);
  ::sigaction(SIGTERM, &mine, &saved_term);
  g_previous_handler_calls = 0;
  {
    StopSignals stop;
    CHECK_FALSE(stop.stop_requested());
    CHECK(stop.signal_number() == 0);
    CHECK(current_handler(SIGTERM) == &train::detail::mambatrack_stop_signal_handler);
    CHECK_THROWS_WITH(StopSignals(), Catch::Contains("already installed"));
    REQUIRE(std::raise(SIGTERM) == 0);  // delivered synchronously to this thread before raise returns
    CHECK(stop.stop_requested());
    CHECK(stop.signal_number() == SIGTERM);
    CHECK(g_previous_handler_calls == 0);  // ours ran, not the one before
    // The first signal put both back to the default action: a second one force-quits.
    CHECK(current_handler(SIGTERM) == SIG_DFL);
    CHECK(current_handler(SIGINT) == SIG_DFL);
  }
  CHECK(current_handler(SIGINT) == &previous_handler);
  CHECK(current_handler(SIGTERM) == &previous_handler);
  REQUIRE(std::raise(SIGINT) == 0);
  CHECK(g_previous_handler_calls == 1);
  // A new instance starts clear, and SIGINT (Ctrl-C) is seen as well.
  {
    StopSignals stop;
    CHECK_FALSE(stop.stop_requested());
    REQUIRE(std::raise(SIGINT) == 0);
    CHECK(stop.signal_number() == SIGINT);
  }
  {
    StopSignals stop;
    stop.request_stop();
    CHECK(stop.signal_number() == SIGTERM);
  }
  ::sigaction(SIGINT, &saved_int, nullptr);
  ::sigaction(SIGTERM, &saved_term, nullptr);
}

TEST_CASE("signals: a second SIGTERM ends the process at once", "[cpu][train]") {
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    StopSignals stop;
    std::raise(SIGTERM);
    if (!stop.stop_requested()) ::_exit(3);  // the first signal must only set the flag
    std::raise(SIGTERM);
    ::_exit(4);  // not reached: the second signal has the default action
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  INFO("exit status " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1));
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGTERM);
}
