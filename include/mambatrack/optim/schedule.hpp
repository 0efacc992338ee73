// Learning-rate schedules, as a function of the step (optimizer steps taken) or the epoch:
//   warmup_cosine: t < W: min + (max − min)·t/W;  W ≤ t < T: min + (max − min)·(1 + cos(π(t−W)/(T−W)))/2;
//     t ≥ T: min  (katsura-jp CosineAnnealingWarmupRestarts with one cycle, as FM4NPP uses it)
//   cosine_annealing: eta_min + (base − eta_min)·(1 + cos(π·e/T_max))/2  (torch CosineAnnealingLR,
//     closed form; MAMBA-PT steps it once per epoch with T_max = num_epochs and no warmup)
//   constant: lr.
#pragma once

#include <cmath>
#include <cstdint>

#include "mambatrack/core/error.hpp"

namespace mambatrack::optim {

enum class ScheduleKind { kConstant, kWarmupCosine, kCosineAnnealing };
// What the schedule's time counts: optimizer steps (FM4NPP pretraining) or epochs (MAMBA-PT,
// FM4NPP's head training).
enum class ScheduleUnit { kStep, kEpoch };

struct Schedule {
  ScheduleKind kind = ScheduleKind::kConstant;
  ScheduleUnit unit = ScheduleUnit::kStep;
  double max_lr = 1e-3;  // the peak (warmup_cosine), base lr (cosine_annealing) or the constant
  double min_lr = 0.0;   // the floor (warmup_cosine) or eta_min (cosine_annealing)
  int64_t warmup = 0;    // warmup length in units (warmup_cosine)
  int64_t total = 1;     // cycle length T (warmup_cosine) or T_max (cosine_annealing), in units

  static Schedule constant(double lr) { return {ScheduleKind::kConstant, ScheduleUnit::kStep, lr, lr, 0, 1}; }
  static Schedule warmup_cosine(double max_lr, double min_lr, int64_t warmup, int64_t total,
                                ScheduleUnit unit = ScheduleUnit::kStep) {
    return {ScheduleKind::kWarmupCosine, unit, max_lr, min_lr, warmup, total};
  }
  // MAMBA-PT: cosine_annealing(learning_rate, min_lr, num_epochs) with the default epoch unit.
  static Schedule cosine_annealing(double base_lr, double eta_min, int64_t t_max,
                                   ScheduleUnit unit = ScheduleUnit::kEpoch) {
    return {ScheduleKind::kCosineAnnealing, unit, base_lr, eta_min, 0, t_max};
  }

  void check() const {
    MAMBATRACK_CHECK(max_lr >= 0 && min_lr >= 0, ConfigError, "schedule: learning rates must be >= 0, got max ",
                     max_lr, " and min ", min_lr);
    if (kind == ScheduleKind::kWarmupCosine)
      MAMBATRACK_CHECK(warmup >= 0 && total > warmup, ConfigError, "schedule: warmup_cosine needs 0 <= warmup < total, got warmup ",
                       warmup, " and total ", total);
    if (kind == ScheduleKind::kCosineAnnealing)
      MAMBATRACK_CHECK(total >= 1, ConfigError, "schedule: cosine annealing needs T_max >= 1, got ", total);
  }

  // The learning rate at time t (0-based) in this schedule's unit.
  double lr_at(int64_t t) const {
    check();
    MAMBATRACK_CHECK(t >= 0, ConfigError, "schedule: time must be >= 0, got ", t);
    const double pi = 3.14159265358979323846;
    switch (kind) {
      case ScheduleKind::kConstant:
        return max_lr;
      case ScheduleKind::kWarmupCosine:
        if (t < warmup) return min_lr + (max_lr - min_lr) * static_cast<double>(t) / static_cast<double>(warmup);
        if (t >= total) return min_lr;
        return min_lr + (max_lr - min_lr) *
                            (1.0 + std::cos(pi * static_cast<double>(t - warmup) / static_cast<double>(total - warmup))) / 2.0;
      case ScheduleKind::kCosineAnnealing:
        return min_lr + (max_lr - min_lr) * (1.0 + std::cos(pi * static_cast<double>(t) / static_cast<double>(total))) / 2.0;
    }
    return max_lr;
  }
  // The learning rate for an optimizer step taken at `step` during `epoch` (both 0-based).
  double lr(int64_t step, int64_t epoch) const { return lr_at(unit == ScheduleUnit::kStep ? step : epoch); }
};

}  // namespace mambatrack::optim
