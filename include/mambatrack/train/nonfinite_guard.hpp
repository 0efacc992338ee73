// Guard against non-finite training steps (DESIGN.md §9): a step whose loss or gradient norm is
// NaN or infinite is skipped (the caller drops its gradients) and logged; after
// `max_consecutive` such steps in a row the run stops with a NonFiniteError, since the model or
// the data is then broken rather than unlucky.
#pragma once

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/logging.hpp"

namespace mambatrack::train {

// Too many non-finite steps in a row.
class NonFiniteError : public Error {
 public:
  using Error::Error;
};

class NonFiniteGuard {
 public:
  // The `max_consecutive`-th non-finite step in a row throws (1: the first one does).
  explicit NonFiniteGuard(int64_t max_consecutive = 10) : max_consecutive_(max_consecutive) {
    MAMBATRACK_CHECK(max_consecutive >= 1, ConfigError, "max_nonfinite_steps must be >= 1, got ", max_consecutive);
  }

  // True when the step may be applied. False: skip it (a warning is logged). Throws
  // NonFiniteError when this makes `max_consecutive` non-finite steps in a row.
  bool check(int64_t step, double loss, double grad_norm) {
    if (std::isfinite(loss) && std::isfinite(grad_norm)) {
      consecutive_ = 0;
      last_good_step_ = step;
      return true;
    }
    ++consecutive_;
    ++skipped_total_;
    const bool bad_loss = !std::isfinite(loss), bad_grad = !std::isfinite(grad_norm);
    const char* what = bad_loss && bad_grad ? "loss and gradient norm" : bad_loss ? "loss" : "gradient norm";
    if (consecutive_ >= max_consecutive_) {
      std::ostringstream os;
      os << "step " << step << ": " << consecutive_ << " steps in a row with a non-finite loss or gradient (loss "
         << loss << ", gradient norm " << grad_norm << "; " << skipped_total_ << " skipped in this run, the last finite step was "
         << (last_good_step_ < 0 ? std::string("none") : std::to_string(last_good_step_))
         << "). Lower the learning rate, enable gradient clipping, check the input data for NaN/inf, or resume "
            "from an earlier checkpoint; max_nonfinite_steps is "
         << max_consecutive_;
      throw NonFiniteError(os.str());
    }
    log(LogLevel::Warning, "step ", step, ": non-finite ", what, " (loss ", loss, ", gradient norm ", grad_norm,
        "); step skipped (", consecutive_, " in a row, limit ", max_consecutive_, ")");
    return false;
  }

  int64_t consecutive() const { return consecutive_; }
  int64_t skipped_total() const { return skipped_total_; }
  int64_t max_consecutive() const { return max_consecutive_; }
  // For a resumed run: the total so far (kept in the train state).
  void set_skipped_total(int64_t n) { skipped_total_ = n; }

 private:
  int64_t max_consecutive_;
  int64_t consecutive_ = 0;
  int64_t skipped_total_ = 0;
  int64_t last_good_step_ = -1;
};

}  // namespace mambatrack::train
