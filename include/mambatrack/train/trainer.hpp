// The training loop shared by every task (DESIGN.md §11): gradient accumulation over
// micro-batches, global-norm and by-value clipping, AdamW over the flat parameter buffer with the
// learning rate from a schedule, non-finite steps skipped, periodic evaluation with best-model
// tracking, checkpoints every N steps (last K kept) and at the end, and an exact resume: a run
// stopped at step k and resumed gives the same losses, bit for bit, as one that never stopped,
// because the checkpoint holds everything the next step depends on (weights, AdamW moments, the
// step, the task's data cursor and RNG positions). SIGINT/SIGTERM finish the current step, write
// a checkpoint and return.
#pragma once

#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/logging.hpp"
#include "mambatrack/nn/checkpoint.hpp"
#include "mambatrack/nn/parameter_store.hpp"
#include "mambatrack/optim/adamw.hpp"
#include "mambatrack/optim/clip.hpp"
#include "mambatrack/optim/schedule.hpp"
#include "mambatrack/train/checkpoint_rotation.hpp"
#include "mambatrack/train/flat_optimizer.hpp"
#include "mambatrack/train/metric_sinks.hpp"
#include "mambatrack/train/nonfinite_guard.hpp"
#include "mambatrack/train/progress.hpp"
#include "mambatrack/train/signals.hpp"
#include "mambatrack/train/tensorboard.hpp"

namespace mambatrack::train {

// What one micro-batch reports. `loss` is what the gradient was taken of; each metric is averaged
// over the micro-batches of the step that report it (tasks that alternate, like MDM and NTP,
// report each metric on their own micro-batches only).
struct MicroBatchResult {
  double loss = 0.0;
  std::map<std::string, double> metrics;
  int64_t tokens = 0;
  bool pending = false;  // loss and metrics still on the device (TrainTask::defers_results)
};

// A model, its data and its loss, driven by the Trainer.
class TrainTask {
 public:
  virtual ~TrainTask() = default;
  // The host parameter store: names, layout, checkpoints (and, for a host task, the live weights).
  virtual nn::ParameterStore& store() = 0;
  // Forward and backward of the next training micro-batch, ADDING grad_scale · ∂loss/∂θ into
  // the gradient buffer that make_optimizer()'s optimizer reads. `step` is the 0-based optimizer
  // step the micro-batch belongs to.
  virtual MicroBatchResult train_micro_batch(int64_t step, double grad_scale) = 0;
  // Metrics on held-out data (must not change the training stream's state).
  virtual std::map<std::string, double> evaluate() = 0;
  // The epoch the training stream is in (per-epoch schedules and curricula).
  virtual int64_t epoch() const = 0;
  // Stored in model.safetensors' metadata.
  virtual nlohmann::json model_config() const = 0;
  // Data cursor and RNG positions, into / from train_state.safetensors' integers.
  virtual void save_state(nn::TrainState& state) const = 0;
  virtual void load_state(const nn::TrainState& state) = 0;
  // Where the flat buffers are updated: on the host store by default; a GPU task returns its
  // device optimizer (train/cuda_optimizer.cuh).
  virtual std::unique_ptr<FlatOptimizer> make_optimizer() { return std::make_unique<HostFlatOptimizer>(store()); }

  // Deferred results (device tasks): the step runs with no read-back until its end. begin_step()
  // comes before the step's micro-batches; train_micro_batch() then only queues its work and
  // returns `pending` results, whose losses and metrics wait on the device in device_stats()
  // (doubles that are all finite in a healthy step: the optimizer skips the update on the device
  // when one of them or the gradient norm is not). finish_step() reads them back into the
  // results (one synchronisation).
  virtual bool defers_results() const { return false; }
  virtual void begin_step(int64_t /*micro_batches*/) {}
  virtual DeviceStats device_stats() { return {}; }
  virtual void finish_step(std::vector<MicroBatchResult>& /*results*/) {}
};

struct TrainerOptions {
  std::string run_dir = "run";
  int64_t max_steps = 1000;
  int64_t accumulation_steps = 1;
  optim::Schedule schedule = optim::Schedule::constant(1e-3);
  optim::AdamWConfig adamw;  // lr is taken from the schedule at every step
  double clip_norm = 0.0;    // global gradient-norm limit; 0: off
  double clip_value = 0.0;   // per-element limit; 0: off
  int64_t checkpoint_every = 0;  // steps; 0: only at the end
  int64_t keep_last = 3;
  int64_t eval_every = 0;        // steps; 0: only at the end
  std::string best_metric = "loss";  // a key of evaluate()'s result, lower is better
  int64_t log_every = 10;        // a train record in metrics.jsonl/csv every N steps
  int64_t max_nonfinite = 10;
  bool resume = false;           // continue from the latest checkpoint in run_dir
  int64_t stop_at_step = 0;      // > 0: stop there as a SIGTERM would (checkpoint, return)
  bool tensorboard = true;
  ProgressOptions progress;
  std::FILE* progress_out = stderr;
};

struct TrainSummary {
  int64_t start_step = 0;
  int64_t steps = 0;               // the step reached
  int64_t skipped = 0;             // non-finite steps skipped in this run
  bool stopped_by_signal = false;
  std::map<std::string, double> last_eval;
  std::vector<double> losses;      // per step of this run, for tests and summaries
};

class Trainer {
 public:
  Trainer(TrainerOptions options, TrainTask& task) : opt_(std::move(options)), task_(task) {
    MAMBATRACK_CHECK(opt_.accumulation_steps >= 1, ConfigError, "accumulation_steps must be >= 1, got ",
                     opt_.accumulation_steps);
    MAMBATRACK_CHECK(opt_.max_steps >= 0, ConfigError, "max_steps must be >= 0, got ", opt_.max_steps);
    MAMBATRACK_CHECK(opt_.keep_last >= 1, ConfigError, "keep_last_n_checkpoints must be >= 1, got ", opt_.keep_last);
    opt_.schedule.check();
  }

  TrainSummary run() {
    make_dirs(opt_.run_dir);
    RunCheckpoints checkpoints(opt_.run_dir);
    checkpoints.prepare();
    nn::ParameterStore& store = task_.store();
    std::unique_ptr<FlatOptimizer> optimizer = task_.make_optimizer();
    NonFiniteGuard guard(opt_.max_nonfinite);

    TrainSummary summary;
    int64_t step = 0;
    std::optional<int64_t> resume_step;
    if (opt_.resume) {
      if (auto latest = checkpoints.latest()) {
        const nn::TrainState state = nn::load_checkpoint(latest->path, store);
        step = state.step;
        optimizer->load(state);
        auto it = state.integers.find("trainer.skipped_total");
        if (it != state.integers.end() && !it->second.empty()) guard.set_skipped_total(it->second[0]);
        task_.load_state(state);
        resume_step = step;
        log(LogLevel::Info, "resumed from ", latest->path, " at step ", step);
      } else {
        log(LogLevel::Warning, "--resume: no checkpoint in ", opt_.run_dir, "/checkpoints; starting from step 0");
      }
    }
    summary.start_step = step;

    MultiSink sinks;
    sinks.emplace<JsonlSink>(opt_.run_dir + "/metrics.jsonl", resume_step);
    sinks.emplace<CsvSink>(opt_.run_dir + "/metrics.csv", resume_step);
    if (opt_.tensorboard) sinks.emplace<TensorBoardSink>(opt_.run_dir + "/tensorboard", resume_step);

    ProgressOptions popt = opt_.progress;
    popt.total_steps = opt_.max_steps;
    popt.start_step = step;
    ProgressReporter progress(popt, opt_.progress_out);
    StopSignals signals;

    std::map<std::string, double> window;  // metric sums since the last train record
    std::map<std::string, int64_t> window_counts;  // steps that reported each metric
    int64_t window_steps = 0;
    double window_tokens = 0;
    auto window_start = std::chrono::steady_clock::now();
    int64_t last_saved = -1;

    auto save = [&](int64_t at) {
      if (at == last_saved) return;
      nn::TrainState state;
      state.step = at;
      optimizer->save(state);
      state.integers["trainer.skipped_total"] = {guard.skipped_total()};
      task_.save_state(state);
      nn::save_checkpoint(checkpoints.path_for(at), store, task_.model_config(), state);
      checkpoints.keep_last(opt_.keep_last);
      last_saved = at;
    };
    auto evaluate = [&](int64_t at) {
      summary.last_eval = task_.evaluate();
      MetricRecord r;
      r.step = at;
      r.split = "val";
      r.values = summary.last_eval;
      sinks.write(r);
      std::string line = "step " + std::to_string(at) + " validation:";
      for (const auto& [k, v] : summary.last_eval) line += " " + k + " " + format_metric(v);
      progress.message(line);
      auto it = summary.last_eval.find(opt_.best_metric);
      if (it != summary.last_eval.end()) {
        save(at);  // the best copy links a saved checkpoint
        checkpoints.update_best(at, "val/" + opt_.best_metric, it->second, BestMode::kMin);
      }
    };

    // Device tasks with a device optimizer keep the whole step on the GPU (one read-back at its end).
    const bool deferred = task_.defers_results() && optimizer->supports_deferred();
    std::vector<MicroBatchResult> results;
    while (step < opt_.max_steps && !signals.stop_requested()) {
      optimizer->zero_grad();
      const double scale = 1.0 / static_cast<double>(opt_.accumulation_steps);
      if (deferred) task_.begin_step(opt_.accumulation_steps);
      results.clear();
      for (int64_t m = 0; m < opt_.accumulation_steps; ++m) results.push_back(task_.train_micro_batch(step, scale));
      const double lr = opt_.schedule.lr(step, task_.epoch());
      optim::AdamWConfig c = opt_.adamw;
      c.lr = lr;
      const int64_t adam_step = step + 1 - guard.skipped_total();  // if this step is applied
      double gnorm = 0;
      bool device_applied = true;  // deferred: what the device did, which the guard must confirm
      if (deferred) {
        // Norm, clipping, the finiteness check and AdamW on the device, then the one read-back.
        optimizer->step_deferred(adam_step, c, opt_.clip_norm, opt_.clip_value, task_.device_stats());
        task_.finish_step(results);
        for (const MicroBatchResult& r : results)
          MAMBATRACK_CHECK(!r.pending, Error, "step ", step, ": the task left a micro-batch's results on the device "
                           "after finish_step");
        const DeferredOutcome out = optimizer->deferred_outcome();
        gnorm = out.grad_norm;
        device_applied = out.applied;
      } else {
        gnorm = optimizer->grad_norm(opt_.clip_norm);
      }
      double loss = 0;
      std::map<std::string, double> metrics;
      std::map<std::string, int> reported;
      int64_t tokens = 0;
      for (const MicroBatchResult& r : results) {
        loss += r.loss * scale;
        for (const auto& [k, v] : r.metrics) {
          metrics[k] += v;
          ++reported[k];
        }
        tokens += r.tokens;
      }
      for (auto& [k, v] : metrics) v /= reported[k];
      if (guard.check(step, loss, gnorm)) {
        MAMBATRACK_CHECK(device_applied, DeviceError, "step ", step, ": the device skipped an update whose loss (",
                         loss, ") and gradient norm (", gnorm, ") are finite");
        if (!deferred) {
          if (opt_.clip_value > 0) optimizer->clip_value(opt_.clip_value);
          optimizer->step(adam_step, c);
        }
      } else {
        MAMBATRACK_CHECK(!deferred || !device_applied, DeviceError, "step ", step, ": the device applied an update whose loss (",
                         loss, ") or gradient norm (", gnorm, ") is not finite");
        ++summary.skipped;
      }
      ++step;
      summary.losses.push_back(loss);

      // Output: progress every step, a metrics record every log_every steps.
      metrics["loss"] = loss;
      for (const auto& [k, v] : metrics) {
        window[k] += v;
        ++window_counts[k];
      }
      ++window_steps;
      window_tokens += static_cast<double>(tokens);
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
      ProgressUpdate u;
      u.step = step;
      u.loss = loss;
      for (const char* acc : {"accuracy", "mdm_accuracy"})
        if (metrics.count(acc)) u.accuracy = metrics[acc];
      u.lr = lr;
      if (seconds > 0) u.tokens_per_s = window_tokens / seconds;
      progress.update(u);
      if (opt_.log_every > 0 && (step % opt_.log_every == 0 || step == opt_.max_steps)) {
        MetricRecord r;
        r.step = step;
        for (const auto& [k, v] : window) r.values[k] = v / static_cast<double>(window_counts[k]);
        r.lr = lr;
        r.grad_norm = gnorm;
        if (seconds > 0) r.tokens_per_s = window_tokens / seconds;
        sinks.write(r);
        window.clear();
        window_counts.clear();
        window_steps = 0;
        window_tokens = 0;
        window_start = std::chrono::steady_clock::now();
      }
      if (opt_.eval_every > 0 && step % opt_.eval_every == 0) evaluate(step);
      if (opt_.checkpoint_every > 0 && step % opt_.checkpoint_every == 0) save(step);
      if (opt_.stop_at_step > 0 && step == opt_.stop_at_step) signals.request_stop();
    }
    summary.stopped_by_signal = signals.stop_requested();
    if (summary.stopped_by_signal) {
      progress.message("stop requested (signal " + std::to_string(signals.signal_number()) +
                       "): writing a checkpoint at step " + std::to_string(step));
    } else if (opt_.eval_every == 0 || step % opt_.eval_every != 0) {
      if (step > summary.start_step) evaluate(step);
    }
    save(step);
    progress.finish();
    sinks.flush();
    summary.steps = step;
    return summary;
  }

 private:
  static void make_dirs(const std::string& path) {
    std::string partial;
    for (std::size_t i = 0; i <= path.size(); ++i) {
      if (i == path.size() || path[i] == '/') {
        if (!partial.empty() && ::mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST)
          throw ConfigError(partial + ": cannot create the run directory (" + std::strerror(errno) + ")");
      }
      if (i < path.size()) partial += path[i];
    }
  }

  static std::string format_metric(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4g", v);
    return buf;
  }

  TrainerOptions opt_;
  TrainTask& task_;
};

}  // namespace mambatrack::train
