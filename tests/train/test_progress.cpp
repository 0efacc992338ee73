// Progress reporter, driven by a fake clock: plain mode prints one line per interval (at the
// first step past each boundary) and the final step; the ETA follows the exponential average of
// seconds per step; the bar is redrawn in place, throttled, and messages do not break it.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "mambatrack/core/philox.hpp"
#include "mambatrack/train/progress.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::train;

namespace {
struct Capture {
  double now = 0;
  std::vector<std::string> pieces;
  std::vector<double> times;  // the clock when each piece was written
  ProgressReporter::Writer writer() {
    return [this](const std::string& s) {
      pieces.push_back(s);
      times.push_back(now);
    };
  }
  ProgressClock clock() {
    return [this] { return now; };
  }
};
ProgressUpdate update_at(int64_t step) {
  ProgressUpdate u;
  u.step = step;
  u.loss = 2.5;
  u.accuracy = 0.375;
  u.lr = 3e-4;
  u.tokens_per_s = 12345.0;
  return u;
}
}  // namespace

TEST_CASE("progress: plain mode writes one exact line per interval", "[cpu][train]") {
  Capture cap;
  ProgressOptions opt;
  opt.total_steps = 100;
  opt.plain_interval_s = 10.0;
  ProgressReporter p(opt, cap.writer(), /*terminal=*/false, cap.clock());
  CHECK_FALSE(p.bar());
  for (int64_t s = 1; s <= 35; ++s) {  // one second per step
    cap.now = static_cast<double>(s);
    p.update(update_at(s));
  }
  REQUIRE(cap.pieces.size() == 3);  // at 10 s, 20 s and 30 s
  CHECK(cap.pieces[0] ==
        "[train] step 10/100 (10.0%) | loss 2.5000 | acc 0.3750 | lr 3.00e-04 | 12.3k tok/s | elapsed 0:10 | eta 1:30\n");
  CHECK(cap.pieces[2] ==
        "[train] step 30/100 (30.0%) | loss 2.5000 | acc 0.3750 | lr 3.00e-04 | 12.3k tok/s | elapsed 0:30 | eta 1:10\n");
  REQUIRE(p.eta_seconds().has_value());
  CHECK(*p.eta_seconds() == Approx(65.0).epsilon(1e-12));  // 65 steps left at exactly 1 s each
  // finish() prints the last state once, and only once.
  cap.now = 35.5;
  p.finish();
  p.finish();
  REQUIRE(cap.pieces.size() == 4);
  CHECK(cap.pieces[3].rfind("[train] step 35/100 (35.0%)", 0) == 0);
}

TEST_CASE("progress: plain lines at the first step past each boundary, and at the last step", "[cpu][train]") {
  const uint64_t seed = test::test_seed(555);
  INFO("seed " << seed);
  Philox rng(seed);
  Capture cap;
  ProgressOptions opt;
  opt.total_steps = 150;
  opt.plain_interval_s = 5.0;
  opt.start_step = 30;  // resumed: the rate counts only the steps of this run
  ProgressReporter p(opt, cap.writer(), false, cap.clock());
  std::vector<double> step_times;
  for (int64_t s = 31; s <= 150; ++s) {
    cap.now += rng.uniform(0.2, 0.9);
    step_times.push_back(cap.now);
    p.update(update_at(s));
  }
  // Expected: for each boundary k*5 s, the first step time >= it; plus the final step.
  std::vector<double> want;
  for (double boundary = 5.0; boundary <= step_times.back(); boundary += 5.0)
    for (double t : step_times)
      if (t >= boundary) {
        want.push_back(t);
        break;
      }
  if (want.back() != step_times.back()) want.push_back(step_times.back());
  CHECK(cap.times == want);
  CHECK(cap.pieces.back().rfind("[train] step 150/150 (100.0%)", 0) == 0);
  CHECK(cap.pieces.back().find("eta 0:00") != std::string::npos);
  p.finish();  // the last step was printed already
  CHECK(cap.times.size() == want.size());
}

TEST_CASE("progress: the ETA follows the exponential average of seconds per step", "[cpu][train]") {
  const uint64_t seed = test::test_seed(9001);
  INFO("seed " << seed);
  Philox rng(seed);
  Capture cap;
  ProgressOptions opt;
  opt.total_steps = 1000;
  opt.smoothing = 0.25;
  ProgressReporter p(opt, cap.writer(), false, cap.clock());
  CHECK_FALSE(p.eta_seconds().has_value());  // no rate before the first step
  double ema = 0;
  int64_t step = 0;
  for (int i = 0; i < 40; ++i) {
    const int64_t steps = 1 + static_cast<int64_t>(rng.below(3));  // updates may cover several steps
    const double dt = (i < 20 ? 0.5 : 2.0) * static_cast<double>(steps) * rng.uniform(0.9, 1.1);
    cap.now += dt;
    step += steps;
    p.update(update_at(step));
    const double per_step = dt / static_cast<double>(steps);
    ema = i == 0 ? per_step : 0.25 * per_step + 0.75 * ema;
    // Same operations in the same order as the reporter; only the clock sums differ by rounding.
    REQUIRE(p.seconds_per_step() == Approx(ema).epsilon(1e-9));
    REQUIRE(*p.eta_seconds() == Approx(ema * static_cast<double>(1000 - step)).epsilon(1e-9));
  }
  // After 20 updates at 1.8-2.2 s/step the average has moved nearly all the way from ~0.5
  // (0.75^20 = 0.3% of the old rate is left).
  CHECK(p.seconds_per_step() > 1.75);
  // A repeated step (gradient accumulation) leaves the rate alone.
  const double before = p.seconds_per_step();
  cap.now += 100.0;
  p.update(update_at(step));
  CHECK(p.seconds_per_step() == before);
}

TEST_CASE("progress: the bar is redrawn in place, throttled, and messages keep it intact", "[cpu][train]") {
  Capture cap;
  ProgressOptions opt;
  opt.total_steps = 40;
  opt.bar_interval_s = 0.125;
  opt.bar_width = 10;
  opt.columns = 200;
  ProgressReporter p(opt, cap.writer(), /*terminal=*/true, cap.clock());
  CHECK(p.bar());
  for (int64_t s = 1; s <= 40; ++s) {
    cap.now = 0.03125 * static_cast<double>(s);  // 4 steps per redraw interval (binary-exact times)
    p.update(update_at(s));
    if (s == 20) p.message("val loss 2.125");
  }
  // Drawn at steps 1, 5, 9, ..., 37 (every 0.125 s) and at the final step 40; 2 pieces for the message.
  std::vector<std::string> bars;
  for (const auto& piece : cap.pieces)
    if (piece.front() == '\r' && piece.rfind("\x1b[K") == piece.size() - 3) bars.push_back(piece);
  CHECK(bars.size() == 10 + 1 + 1);  // 10 throttled draws, the final step, the redraw after the message
  CHECK(bars.front() == "\rtrain [>         ] 1/40 2% loss 2.5000 acc 0.3750 lr 3.00e-04 12.3k tok/s eta 0:01\x1b[K");
  CHECK(bars.back() == "\rtrain [==========] 40/40 100% loss 2.5000 acc 0.3750 lr 3.00e-04 12.3k tok/s eta 0:00\x1b[K");
  bool saw_message = false;
  for (std::size_t i = 0; i + 1 < cap.pieces.size(); ++i)
    if (cap.pieces[i] == "\r\x1b[Kval loss 2.125\n") {
      saw_message = true;
      CHECK(cap.pieces[i + 1] == cap.pieces[i - 1]);  // the bar comes back as it was
    }
  CHECK(saw_message);
  const std::size_t pieces_before = cap.pieces.size();
  p.finish();  // the final step is drawn already: only the newline follows
  CHECK(cap.pieces.size() == pieces_before + 1);
  CHECK(cap.pieces.back() == "\n");
  // A narrow terminal: the bar is cut to fit one line, so "\r" redraws all of it.
  Capture narrow;
  opt.columns = 30;
  ProgressReporter q(opt, narrow.writer(), true, narrow.clock());
  narrow.now = 1.0;
  q.update(update_at(3));
  CHECK(narrow.pieces.at(0).size() == 1 + 29 + 3);
}

TEST_CASE("progress: a FILE that is not a terminal gets plain lines", "[cpu][train]") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  double now = 0;
  ProgressOptions opt;
  opt.total_steps = 4;
  opt.plain_interval_s = 1.0;
  {
    ProgressReporter p(opt, f, [&now] { return now; });
    CHECK_FALSE(p.bar());
    for (int64_t s = 1; s <= 4; ++s) {
      now = 0.75 * static_cast<double>(s);
      p.update(update_at(s));
    }
  }
  std::rewind(f);
  char buf[512] = {};
  std::string text(buf, std::fread(buf, 1, sizeof(buf) - 1, f));
  std::fclose(f);
  // Lines at 1.5 s (step 2, first past 1 s), 2.25 s (step 3, first past 2 s), 3 s (step 4, past 3 s and final).
  CHECK(text.find("step 2/4 (50.0%)") != std::string::npos);
  CHECK(text.find("step 3/4 (75.0%)") != std::string::npos);
  CHECK(text.find("step 4/4 (100.0%)") != std::string::npos);
  CHECK(text.find("step 1/4") == std::string::npos);
  CHECK(text.find('\r') == std::string::npos);
  CHECK(std::count(text.begin(), text.end(), '\n') == 3);
  CHECK(format_duration(3723.4) == "1:02:03");
  CHECK(format_duration(59.6) == "1:00");
  CHECK(format_rate(4.56e6) == "4.56M");
}
