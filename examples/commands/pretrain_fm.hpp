// `mambatrack pretrain-fm`: FM4NPP pretraining (k next-nearest-neighbour regression with the
// masked MSE on voxel-serialised point clouds, Mamba or Mamba2 backbone) from the seed's
// mamba_pretrain.yaml and a section (mamba_5m, mamba2_5m, mamba_small), on TrackML events, a
// TPCpp-10M npz folder, or, without data, events it simulates into the run directory first.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "commands/args.hpp"
#include "commands/fm_setup.hpp"
#include "mambatrack/core/parallel.hpp"
#include "mambatrack/train/trainer.hpp"

namespace mambatrack::cli {

inline int run_pretrain_fm(int argc, char** argv) {
  Args a("pretrain-fm",
         "FM4NPP pretraining: k next-nearest-neighbour regression (masked MSE) with a Mamba or Mamba2 backbone.\n"
         "Without --data (and data_root), small events are simulated into RUN_DIR/data first.");
  a.option("config", "", "FM4NPP YAML config (e.g. the seed's mamba_pretrain.yaml); defaults: mamba_5m-like")
      .option("config-section", "", "section of the config to use: mamba_5m, mamba2_5m, mamba_small, ...")
      .option("data", "", "TrackML directory or TPCpp-10M npz folder (spacepoints*.npz); overrides data_root")
      .option("run-dir", "runs/pretrain-fm", "where checkpoints, metrics and the resolved config go")
      .option("set", "", "override a config key, e.g. --set embed_dim=64 (repeatable)", true)
      .option("threads", "0", "CPU threads (0: all cores); the same seed and thread count give identical runs")
      .option("device", "cpu", "cpu, cuda, or auto (the GPU when there is one)")
      .option("precision", "auto",
              "GPU arithmetic: bf16 (mixed precision), fp32, tf32 (fp32, tf32 GEMMs), or auto (fp32: FM4NPP has no AMP)")
      .option("cuda-graphs", "off",
              "on: the GPU replays full micro-batches from CUDA graphs (no faster here: FM4NPP's steps are "
              "compute-bound, and the padding and second context cost memory); off: eager")
      .flag("resume", "continue from the latest checkpoint in RUN_DIR");
  if (!a.parse(argc, argv)) return 0;
  check_precision_arg(a.str("precision"));  // before any data is simulated
  const std::string graphs = a.str("cuda-graphs");
  if (graphs != "on" && graphs != "off") throw ConfigError("--cuda-graphs must be on or off, got '" + graphs + "'");
  const std::string device = resolve_device(a.str("device"), "pretrain-fm");
  set_num_threads(static_cast<int>(a.integer("threads")));

  FmRun run = setup_fm_run(a.str("config"), a.str("config-section"), a.all("set"), a.str("data"), a.str("run-dir"),
                           a.flag_set("resume"), device, a.str("precision"), graphs == "on");
  std::fprintf(stderr,
               "pretrain-fm: %s data in %s: %lld training events (%lld points) / %lld validation events (%lld points)"
               "%s; %s backbone, %lld trainable parameters; %lld steps of %lld event(s) (accumulation %lld) on %s\n",
               run.data_kind.c_str(), run.data_dir.c_str(), static_cast<long long>(run.train_events),
               static_cast<long long>(run.train_points), static_cast<long long>(run.val_events),
               static_cast<long long>(run.val_points),
               run.dropped ? (", " + std::to_string(run.dropped) + " dropped by max_points").c_str() : "",
               run.mixer.c_str(), static_cast<long long>(run.params), static_cast<long long>(run.trainer.max_steps),
               static_cast<long long>(run.config.get<int64_t>("batch_size")),
               static_cast<long long>(run.trainer.accumulation_steps),
               device == "cuda" ? "the GPU" : (std::to_string(num_threads()) + " thread(s)").c_str());
  train::Trainer trainer(run.trainer, *run.task);
  const train::TrainSummary s = trainer.run();

  std::printf("pretrain-fm: %s at step %lld%s\n", s.stopped_by_signal ? "stopped" : "finished",
              static_cast<long long>(s.steps), s.skipped ? " (some non-finite steps were skipped)" : "");
  for (const auto& [k, v] : s.last_eval) std::printf("  validation %-14s %.5f\n", k.c_str(), v);
  auto it = s.last_eval.find("knn_mse"), base = s.last_eval.find("baseline_mse");
  if (it != s.last_eval.end() && base != s.last_eval.end() && base->second > 0)
    std::printf("  k-NNN MSE is %.3f of the predict-the-mean baseline\n", it->second / base->second);
  std::printf("  checkpoints: %s/checkpoints (latest step_%09lld)\n", run.trainer.run_dir.c_str(),
              static_cast<long long>(s.steps));
  std::printf("  metrics:     %s/metrics.jsonl, metrics.csv, tensorboard/\n", run.trainer.run_dir.c_str());
  if (device == "cuda")
    std::printf("  peak GPU memory: %.1f MiB\n", static_cast<double>(cuda_peak_memory_bytes()) / (1 << 20));
  return 0;
}

}  // namespace mambatrack::cli
