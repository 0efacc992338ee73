// Non-finite guard: finite steps pass; non-finite loss or gradient norm steps are skipped and
// counted; the N-th in a row throws a NonFiniteError naming the step; a finite step resets the
// consecutive count.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "mambatrack/core/philox.hpp"
#include "mambatrack/train/nonfinite_guard.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::train;

TEST_CASE("nonfinite guard: skips, counts, resets on a finite step, throws after N in a row", "[cpu][train]") {
  const uint64_t seed = test::test_seed(1234);
  INFO("seed " << seed);
  Philox rng(seed);
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  auto silence = set_log_sink([](LogLevel, const std::string&) {});
  NonFiniteGuard guard(3);
  int64_t step = 0;
  CHECK(guard.check(++step, rng.uniform(0.5, 3.0), rng.uniform(0.1, 2.0)));
  CHECK_FALSE(guard.check(++step, nan, rng.uniform(0.1, 2.0)));
  CHECK_FALSE(guard.check(++step, rng.uniform(0.5, 3.0), inf));
  CHECK(guard.consecutive() == 2);
  CHECK(guard.check(++step, rng.uniform(0.5, 3.0), rng.uniform(0.1, 2.0)));  // resets the run
  CHECK(guard.consecutive() == 0);
  CHECK(guard.skipped_total() == 2);
  CHECK_FALSE(guard.check(++step, -inf, nan));
  CHECK_FALSE(guard.check(++step, nan, nan));
  try {
    guard.check(++step, rng.uniform(0.5, 3.0), -inf);
    FAIL("no error after 3 non-finite steps in a row");
  } catch (const NonFiniteError& e) {
    const std::string m = e.what();
    CHECK_THAT(m, Catch::Contains("step 7: 3 steps in a row with a non-finite loss or gradient"));
    CHECK_THAT(m, Catch::Contains("the last finite step was 4"));
    CHECK_THAT(m, Catch::Contains("5 skipped in this run"));
  }
  set_log_sink(silence);
  // Each skipped step is logged as a warning.
  std::vector<std::string> logged;
  auto previous = set_log_sink([&](LogLevel level, const std::string& m) {
    if (level == LogLevel::Warning) logged.push_back(m);
  });
  NonFiniteGuard one(1);
  CHECK_THROWS_AS(one.check(9, nan, 1.5), NonFiniteError);
  NonFiniteGuard two(2);
  CHECK_FALSE(two.check(11, 2.5, nan));
  set_log_sink(previous);
  REQUIRE(logged.size() == 1);
  CHECK_THAT(logged[0], Catch::Contains("step 11: non-finite gradient norm"));
  CHECK_THROWS_AS(NonFiniteGuard(0), ConfigError);
}
