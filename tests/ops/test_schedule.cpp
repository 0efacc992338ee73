// Learning-rate schedules: warmup + cosine per step (FM4NPP), CosineAnnealingLR per epoch
// (MAMBA-PT), constant; values at the warmup end, the midpoint and the end, and errors.
#include <catch2/catch.hpp>

#include <cmath>

#include "mambatrack/optim/schedule.hpp"

using namespace mambatrack;
using optim::Schedule;
using optim::ScheduleUnit;

TEST_CASE("schedule: warmup + cosine per step (FM4NPP pretraining)", "[cpu][optim]") {
  // max 2e-4, min 2e-5, warmup 1000, first_cycle_steps 50000.
  const Schedule s = Schedule::warmup_cosine(2e-4, 2e-5, 1000, 50000);
  CHECK(s.lr_at(0) == Approx(2e-5).epsilon(1e-12));          // starts at min (katsura-jp sets base = min)
  CHECK(s.lr_at(500) == Approx(1.1e-4).epsilon(1e-12));      // halfway up the linear warmup
  CHECK(s.lr_at(1000) == Approx(2e-4).epsilon(1e-12));       // warmup end: the peak
  CHECK(s.lr_at(25500) == Approx(1.1e-4).epsilon(1e-12));    // cosine midpoint: (max + min)/2
  const double near_end = 2e-5 + 1.8e-4 * (1 + std::cos(M_PI * 48999.0 / 49000.0)) / 2;
  CHECK(s.lr_at(49999) == Approx(near_end).epsilon(1e-12));
  CHECK(s.lr_at(49999) > 2e-5);
  CHECK(s.lr_at(50000) == 2e-5);                             // the end and after: min
  CHECK(s.lr_at(90000) == 2e-5);
  CHECK(s.lr(1000, 7) == s.lr_at(1000));                     // per-step: the epoch is ignored
}

TEST_CASE("schedule: cosine annealing per epoch (MAMBA-PT base config)", "[cpu][optim]") {
  // learning_rate 1e-3, min_lr 1e-6, num_epochs 200; warmup_steps is unused by MAMBA-PT.
  const Schedule s = Schedule::cosine_annealing(1e-3, 1e-6, 200);
  CHECK(s.lr(12345, 0) == 1e-3);                                 // epoch 0: the base lr
  CHECK(s.lr(0, 100) == Approx((1e-3 + 1e-6) / 2).epsilon(1e-12));  // midpoint
  CHECK(s.lr(0, 50) == Approx(1e-6 + (1e-3 - 1e-6) * (1 + std::sqrt(0.5)) / 2).epsilon(1e-12));
  CHECK(s.lr(0, 200) == Approx(1e-6).epsilon(1e-12));            // the end: eta_min
  // The FM4NPP head: warmup + cosine over epochs (warmup 20, 200 epochs, 1e-4 -> 1e-5).
  const Schedule h = Schedule::warmup_cosine(1e-4, 1e-5, 20, 200, ScheduleUnit::kEpoch);
  CHECK(h.lr(999, 20) == Approx(1e-4).epsilon(1e-12));
  CHECK(h.lr(999, 110) == Approx(5.5e-5).epsilon(1e-12));
  CHECK(Schedule::constant(3e-4).lr(5, 5) == 3e-4);
}

TEST_CASE("schedule: impossible lengths are ConfigErrors naming them", "[cpu][optim]") {
  CHECK_THROWS_AS(Schedule::warmup_cosine(1e-3, 0, 100, 100).lr_at(0), ConfigError);
  CHECK_THROWS_WITH(Schedule::warmup_cosine(1e-3, 0, 100, 50).lr_at(0),
                    Catch::Matchers::Contains("got warmup 100 and total 50"));
  CHECK_THROWS_AS(Schedule::cosine_annealing(1e-3, 0, 0).lr_at(0), ConfigError);
  CHECK_THROWS_AS(Schedule::constant(1e-3).lr_at(-1), ConfigError);
}
