// `mambatrack pretrain-mdm`: MAMBA-PT pretraining (masked detector module + next track
// prediction) from a MAMBA-PT YAML config (the seed's own files work), on a TrackML directory or,
// without one, on events it simulates into the run directory first.
#pragma once

#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "commands/args.hpp"
#include "commands/mdm_setup.hpp"
#include "mambatrack/core/parallel.hpp"
#include "mambatrack/train/trainer.hpp"

namespace mambatrack::cli {

inline int run_pretrain_mdm(int argc, char** argv) {
  Args a("pretrain-mdm",
         "MAMBA-PT pretraining: masked detector module (MDM) + next track prediction (NTP).\n"
         "Without --data (and data.data_dir), events are simulated into RUN_DIR/data first.");
  a.option("config", "", "MAMBA-PT YAML config (e.g. the seed's base_config.yaml); defaults: base_config")
      .option("data", "", "TrackML directory (eventNNNNNNNNN-*.csv[.gz]); overrides data.data_dir")
      .option("run-dir", "runs/pretrain-mdm", "where checkpoints, metrics and the resolved config go")
      .option("set", "", "override a config key, e.g. --set model.d_model=32 (repeatable)", true)
      .option("threads", "0", "CPU threads (0: all cores); the same seed and thread count give identical runs")
      .option("device", "cpu", "cpu, cuda, or auto (the GPU when there is one)")
      .option("precision", "auto",
              "GPU arithmetic: bf16 (mixed precision), fp32, tf32 (fp32, tf32 GEMMs), or auto (training.amp_enabled)")
      .option("cuda-graphs", "on", "on: the GPU replays each full micro-batch (model, loss, backward) from a CUDA graph; off: eager")
      .option("stop-at-step", "0", "stop at this step as Ctrl-C would: checkpoint and exit (0: run to the end)")
      .flag("resume", "continue from the latest checkpoint in RUN_DIR");
  if (!a.parse(argc, argv)) return 0;
  check_precision_arg(a.str("precision"));  // before any data is simulated
  const std::string graphs = a.str("cuda-graphs");
  if (graphs != "on" && graphs != "off") throw ConfigError("--cuda-graphs must be on or off, got '" + graphs + "'");
  const std::string device = resolve_device(a.str("device"), "pretrain-mdm");
  set_num_threads(static_cast<int>(a.integer("threads")));

  MdmRun run =
      setup_mdm_run(a.str("config"), a.all("set"), a.str("data"), a.str("run-dir"), a.flag_set("resume"), device,
                    a.str("precision"), graphs == "on");
  std::fprintf(stderr, "pretrain-mdm: %lld training / %lld validation tracks, vocabulary %lld, %lld parameters, "
                       "%lld steps on %s\n",
               static_cast<long long>(run.task->num_train_tracks()), static_cast<long long>(run.task->num_val_tracks()),
               static_cast<long long>(run.vocab), static_cast<long long>(run.task->store().num_trainable()),
               static_cast<long long>(run.trainer.max_steps),
               device == "cuda" ? "the GPU" : (std::to_string(num_threads()) + " thread(s)").c_str());
  run.trainer.stop_at_step = a.integer("stop-at-step");
  train::Trainer trainer(run.trainer, *run.task);
  const train::TrainSummary s = trainer.run();

  std::printf("pretrain-mdm: %s at step %lld%s\n", s.stopped_by_signal ? "stopped" : "finished",
              static_cast<long long>(s.steps), s.skipped ? " (some non-finite steps were skipped)" : "");
  for (const auto& [k, v] : s.last_eval) std::printf("  validation %-14s %.4f\n", k.c_str(), v);
  std::printf("  checkpoints: %s/checkpoints (latest step_%09lld)\n", run.trainer.run_dir.c_str(),
              static_cast<long long>(s.steps));
  std::printf("  metrics:     %s/metrics.jsonl, metrics.csv, tensorboard/\n", run.trainer.run_dir.c_str());
  if (device == "cuda")
    std::printf("  peak GPU memory: %.1f MiB\n", static_cast<double>(cuda_peak_memory_bytes()) / (1 << 20));
  return 0;
}

}  // namespace mambatrack::cli
