// `mambatrack eval`: evaluates a MAMBA-PT checkpoint on the test (or validation, or every) event
// split of its run: MDM token / sequence / distance accuracy per mask rate and per track length,
// NTP accuracy / precision / recall / F1 on seeded pairs (definitions: train/mdm_metrics.hpp);
// an FM4NPP checkpoint: the masked k-NNN MSE, the predict-the-mean baseline MSE and their ratio
// (train/fm4npp_task.hpp) on the run's held-out events (FmEvents in commands/fm_setup.hpp).
// Prints a table and writes evaluation.json (RUN_DIR/evaluation.json or --out):
//   {"checkpoint", "run_dir", "step", "task": "mambapt", "data_dir", "split", "events", "tracks",
//    "seed", "distance_threshold_mm",
//    "mdm": [{"mask_rate", "loss", "tracks", "masked_tracks", "masked_tokens", "token_accuracy",
//             "sequence_accuracy", "distance_accuracy",
//             "by_hits": [{"hits", "tracks", "masked_tracks", "masked_tokens", "token_accuracy",
//                          "sequence_accuracy", "distance_accuracy"}, ...]}, ...],
//    "ntp": {"pairs", "positives", "loss", "accuracy", "precision", "recall", "f1", "tp", "fp", "tn", "fn"}}
// Ratios with nothing to count (e.g. no masked token at that rate and length) are null.
// FM4NPP checkpoints write instead (split: the events actually used, see FmEvents):
//   {"checkpoint", "run_dir", "step", "task": "fm4npp", "data_dir", "data", "split", "events", "points",
//    "seed", "fm4npp": {"k", "knn_mse", "baseline_mse", "mse_ratio"}}
#pragma once

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands/args.hpp"
#include "commands/fm_setup.hpp"
#include "commands/mdm_setup.hpp"
#include "mambatrack/core/parallel.hpp"
#include "mambatrack/core/philox.hpp"
#include "mambatrack/core/safetensors.hpp"
#include "mambatrack/data/ntp_pairs.hpp"
#include "mambatrack/nn/checkpoint.hpp"
#include "mambatrack/train/checkpoint_rotation.hpp"
#include "mambatrack/train/mdm_metrics.hpp"

namespace mambatrack::cli {

// A checkpoint directory (model.safetensors [+ train_state.safetensors]) and its run directory
// (config.yaml, tokenizer.txt).
struct EvalCheckpoint {
  std::string dir, run_dir;
};

// --checkpoint names a checkpoint directory (RUN/checkpoints/step_N or RUN/checkpoints/best) or a
// run directory (then its best checkpoint when there is one, else the latest).
inline EvalCheckpoint resolve_checkpoint(std::string arg) {
  while (arg.size() > 1 && arg.back() == '/') arg.pop_back();
  namespace fs = std::filesystem;
  EvalCheckpoint e;
  if (is_file(arg + "/" + train::RunCheckpoints::kModelFile)) {
    e.dir = arg;
    const fs::path parent = fs::absolute(fs::path(arg)).lexically_normal().parent_path();
    e.run_dir = parent.filename() == "checkpoints" ? parent.parent_path().string() : arg;
    return e;
  }
  if (is_dir(arg + "/checkpoints")) {
    const train::RunCheckpoints rc(arg);
    e.run_dir = arg;
    if (train::RunCheckpoints::is_complete(rc.best_path())) e.dir = rc.best_path();
    else if (const auto latest = rc.latest()) e.dir = latest->path;
    else throw CheckpointError(arg + "/checkpoints: no complete checkpoint (step_N/ with model.safetensors and "
                                     "train_state.safetensors)");
    return e;
  }
  throw ConfigError("--checkpoint " + arg + ": neither a checkpoint directory (with model.safetensors) nor a run "
                    "directory (with checkpoints/)");
}

// The "config" metadata of a model.safetensors (the model config JSON), or an empty object.
inline nlohmann::json checkpoint_model_config(const std::string& model_path) {
  const auto f = SafetensorsFile::open(model_path);
  const auto it = f.metadata().find("config");
  if (it == f.metadata().end()) return nlohmann::json::object();
  nlohmann::json j = nlohmann::json::parse(it->second, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw CheckpointError(model_path + ": metadata 'config' is not a JSON object");
  return j;
}

inline std::vector<double> parse_rates(const std::string& text) {
  std::vector<double> out;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const auto comma = text.find(',', pos);
    const std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    char* end = nullptr;
    const double x = std::strtod(item.c_str(), &end);
    if (item.empty() || *end || !(x > 0.0 && x <= 1.0))
      throw ConfigError("--mask-rates expects comma-separated rates in (0, 1], got \"" + text + "\"");
    out.push_back(x);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

inline nlohmann::json json_number(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); }

inline nlohmann::json counts_json(const train::MdmCounts& c) {
  return {{"tracks", c.tracks},
          {"masked_tracks", c.masked_tracks},
          {"masked_tokens", c.tokens},
          {"token_accuracy", json_number(c.token_accuracy())},
          {"sequence_accuracy", json_number(c.sequence_accuracy())},
          {"distance_accuracy", json_number(c.distance_accuracy())}};
}

inline std::string percent(double x) {
  if (!std::isfinite(x)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f%%", 100.0 * x);
  return buf;
}

inline void print_counts_row(const char* rate, const std::string& hits, const train::MdmCounts& c) {
  std::printf("  %-5s %-5s %7lld %7lld %7lld %10s %10s %10s\n", rate, hits.c_str(), static_cast<long long>(c.tracks),
              static_cast<long long>(c.masked_tracks), static_cast<long long>(c.tokens), percent(c.token_accuracy()).c_str(),
              percent(c.sequence_accuracy()).c_str(), percent(c.distance_accuracy()).c_str());
}

// MDM + NTP evaluation of a MAMBA-PT checkpoint.
inline int eval_mdm(const Args& a, const EvalCheckpoint& ck, const nlohmann::json& model_config) {
  const std::string config_path = ck.run_dir + "/config.yaml", tokenizer_path = ck.run_dir + "/tokenizer.txt";
  if (!is_file(config_path) || !is_file(tokenizer_path))
    throw ConfigError(ck.run_dir + ": the run directory of " + ck.dir +
                      " needs config.yaml and tokenizer.txt (written by pretrain-mdm)");
  train::Config c{train::mambapt_schema()};
  c.read_file(config_path);
  const data::Tokenizer tokenizer = data::Tokenizer::load(tokenizer_path);
  if (model_config.contains("vocab") && model_config["vocab"].get<int64_t>() != tokenizer.vocab_size())
    throw CheckpointError(ck.dir + ": the model's vocabulary (" + model_config["vocab"].dump() + ") differs from " +
                          tokenizer_path + " (" + std::to_string(tokenizer.vocab_size()) + " tokens)");

  // Data: --data, else the run's data.data_dir, else the events simulated into RUN_DIR/data.
  std::string data_dir = a.str("data");
  if (data_dir.empty()) data_dir = c.get<std::string>("data.data_dir");
  if (data_dir.empty()) data_dir = ck.run_dir + "/data";
  if (!is_dir(data_dir)) throw ConfigError(data_dir + ": no such data directory (give --data)");
  const auto files = data::list_events(data_dir);
  if (files.empty()) throw DataError(data_dir, 0, "", "no eventNNNNNNNNN-*.csv[.gz] files in this directory");
  const auto split = event_split(c, static_cast<int64_t>(files.size()));
  const std::string split_name = a.str("split");
  std::vector<data::Split> which;
  if (split_name == "test") which = {data::Split::kTest};
  else if (split_name == "val") which = {data::Split::kValidation};
  else if (split_name == "all") which = {data::Split::kTrain, data::Split::kValidation, data::Split::kTest};
  else throw ConfigError("--split must be test, val or all, got " + split_name);
  int64_t n_events = 0;
  for (auto s : split) n_events += std::find(which.begin(), which.end(), s) != which.end();
  data::TrackSequences seqs = read_track_sequences(files, split, which, tokenizer, sequence_options(c));
  if (seqs.size() == 0)
    throw ConfigError("eval: no tracks in the " + split_name + " split (" + std::to_string(n_events) + " of " +
                      std::to_string(files.size()) + " events, split by data.train_split / data.val_split and the "
                      "seed); try --split val or --split all");

  // Model: rebuilt from the run's config, weights from the checkpoint.
  train::MdmTaskOptions o = mdm_task_options(c, tokenizer.vocab_size());
  if (a.integer("batch-size") > 0) o.batch_size = a.integer("batch-size");
  const int64_t batch_size = o.batch_size;
  const uint64_t seed = o.seed;
  auto task = make_mdm_task(c, std::move(o), seqs, data::TrackSequences{});
  nn::load_model(ck.dir + "/" + train::RunCheckpoints::kModelFile, task->store());
  int64_t step = -1;
  if (is_file(ck.dir + "/" + train::RunCheckpoints::kStateFile))
    step = nn::load_train_state(ck.dir + "/" + train::RunCheckpoints::kStateFile, task->store()).step;

  const train::ModuleCentres centres(tokenizer, module_records(data_dir));
  const double threshold = c.get<double>("evaluation.distance_threshold");
  const std::vector<double> rates = parse_rates(a.str("mask-rates"));
  std::fprintf(stderr, "eval: %s (step %lld) on the %s split of %s: %lld events, %lld tracks, %d thread(s)\n",
               ck.dir.c_str(), static_cast<long long>(step), split_name.c_str(), data_dir.c_str(),
               static_cast<long long>(n_events), static_cast<long long>(seqs.size()), num_threads());

  std::vector<train::MdmEvaluation> mdm;
  for (double rate : rates) {
    train::MdmEvaluation ev;
    ev.mask_rate = rate;
    ev.threshold = threshold;
    for (int64_t begin = 0; begin < seqs.size(); begin += batch_size) {
      std::vector<int64_t> ids;
      for (int64_t i = begin; i < std::min(seqs.size(), begin + batch_size); ++i) ids.push_back(i);
      ev.add(task->predict_mdm(seqs, ids, rate), centres);
    }
    mdm.push_back(std::move(ev));
  }
  // NTP: track i against track perm(i) for one seeded permutation of the whole split (MAMBA-PT's
  // pair definition, but independent of the batch size).
  Philox rng(seed ^ 0x4e545045ull, 0);
  const data::NtpPairs pairs = data::permutation_pairs(seqs.p, rng);
  train::NtpCounts ntp;
  for (int64_t begin = 0; begin < pairs.size(); begin += batch_size) {
    const int64_t end = std::min(pairs.size(), begin + batch_size);
    const std::vector<int64_t> first(pairs.first.begin() + begin, pairs.first.begin() + end);
    const std::vector<int64_t> second(pairs.second.begin() + begin, pairs.second.begin() + end);
    ntp.add(task->predict_ntp(seqs, first, second));
  }

  // Table.
  std::printf("eval: %s (step %lld), %s split: %lld events, %lld tracks\n", ck.dir.c_str(), static_cast<long long>(step),
              split_name.c_str(), static_cast<long long>(n_events), static_cast<long long>(seqs.size()));
  std::printf("MDM (accuracy over masked tokens; seq = every masked token of a track right; dist = predicted module "
              "centre within %g mm)\n", threshold);
  std::printf("  %-5s %-5s %7s %7s %7s %10s %10s %10s\n", "rate", "hits", "tracks", "masked", "tokens", "token_acc",
              "seq_acc", "dist_acc");
  for (const auto& ev : mdm) {
    char rate[16];
    std::snprintf(rate, sizeof(rate), "%.2f", ev.mask_rate);
    print_counts_row(rate, "all", ev.total);
    for (const auto& [hits, counts] : ev.by_hits) print_counts_row("", std::to_string(hits), counts);
  }
  std::printf("NTP (%lld pairs, %lld with label 1): accuracy %s  precision %s  recall %s  F1 %s  loss %.4f\n",
              static_cast<long long>(ntp.count()), static_cast<long long>(ntp.tp + ntp.fn), percent(ntp.accuracy()).c_str(),
              percent(ntp.precision()).c_str(), percent(ntp.recall()).c_str(), percent(ntp.f1()).c_str(), ntp.loss());

  // evaluation.json.
  nlohmann::json j = {{"checkpoint", ck.dir},
                      {"run_dir", ck.run_dir},
                      {"step", step},
                      {"task", "mambapt"},
                      {"data_dir", data_dir},
                      {"split", split_name},
                      {"events", n_events},
                      {"tracks", seqs.size()},
                      {"seed", seed},
                      {"distance_threshold_mm", threshold}};
  j["mdm"] = nlohmann::json::array();
  for (const auto& ev : mdm) {
    nlohmann::json r = counts_json(ev.total);
    r["mask_rate"] = ev.mask_rate;
    r["loss"] = json_number(ev.total.loss());
    r["by_hits"] = nlohmann::json::array();
    for (const auto& [hits, counts] : ev.by_hits) {
      nlohmann::json b = counts_json(counts);
      b["hits"] = hits;
      r["by_hits"].push_back(b);
    }
    j["mdm"].push_back(r);
  }
  j["ntp"] = {{"pairs", ntp.count()},       {"positives", ntp.tp + ntp.fn},
              {"loss", json_number(ntp.loss())}, {"accuracy", json_number(ntp.accuracy())},
              {"precision", json_number(ntp.precision())}, {"recall", json_number(ntp.recall())},
              {"f1", json_number(ntp.f1())}, {"tp", ntp.tp}, {"fp", ntp.fp}, {"tn", ntp.tn}, {"fn", ntp.fn}};
  const std::string out = a.str("out").empty() ? ck.run_dir + "/evaluation.json" : a.str("out");
  std::ofstream f(out, std::ios::trunc);
  f << j.dump(2) << '\n';
  f.flush();
  if (!f) throw ConfigError(out + ": cannot write the evaluation file");
  std::printf("  written: %s\n", out.c_str());
  return 0;
}

// Masked k-NNN MSE of an FM4NPP checkpoint against the predict-the-mean baseline.
inline int eval_fm(const Args& a, const EvalCheckpoint& ck) {
  const std::string config_path = ck.run_dir + "/config.yaml";
  if (!is_file(config_path))
    throw ConfigError(ck.run_dir + ": the run directory of " + ck.dir + " needs config.yaml (written by pretrain-fm)");
  const std::string split_name = a.str("split");
  FmEvents events;
  if (split_name == "test") events = FmEvents::kTest;
  else if (split_name == "val") events = FmEvents::kVal;
  else if (split_name == "all") events = FmEvents::kAll;
  else throw ConfigError("--split must be test, val or all, got " + split_name);
  FmRun run;
  run.config.read_file(config_path);
  if (a.integer("batch-size") > 0) run.config.set("local_valid_batch_size=" + std::to_string(a.integer("batch-size")));
  setup_fm_task(run, a.str("data"), ck.run_dir, events);
  if (split_name != run.split)
    std::fprintf(stderr,
                 "eval: %s has no %s split (FM4NPP runs hold out validation events only); using the %s events\n",
                 run.data_dir.c_str(), split_name.c_str(), run.split.c_str());
  nn::load_model(ck.dir + "/" + train::RunCheckpoints::kModelFile, run.task->store());
  int64_t step = -1;
  if (is_file(ck.dir + "/" + train::RunCheckpoints::kStateFile))
    step = nn::load_train_state(ck.dir + "/" + train::RunCheckpoints::kStateFile, run.task->store()).step;
  std::fprintf(stderr, "eval: %s (step %lld) on the %s events of %s: %lld events, %lld points, %d thread(s)\n",
               ck.dir.c_str(), static_cast<long long>(step), run.split.c_str(), run.data_dir.c_str(),
               static_cast<long long>(run.val_events), static_cast<long long>(run.val_points), num_threads());
  const std::map<std::string, double> m = run.task->evaluate();
  auto get = [&](const char* key) {
    const auto it = m.find(key);
    return it == m.end() ? std::nan("") : it->second;
  };
  const double knn = get("knn_mse"), base = get("baseline_mse"), ratio = get("mse_ratio");
  const int64_t k = run.config.get<int64_t>("klen");

  std::printf("eval: %s (step %lld), %s split: %lld events, %lld points\n", ck.dir.c_str(),
              static_cast<long long>(step), run.split.c_str(), static_cast<long long>(run.val_events),
              static_cast<long long>(run.val_points));
  std::printf("FM4NPP k-NNN regression (k = %lld; masked MSE over the valid neighbour offsets)\n",
              static_cast<long long>(k));
  auto num = [](double x) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.6g", x);
    return std::isfinite(x) ? std::string(buf) : std::string("-");
  };
  std::printf("  %-14s %12s\n", "knn_mse", num(knn).c_str());
  std::printf("  %-14s %12s\n", "baseline_mse", num(base).c_str());
  std::printf("  %-14s %12s  (knn_mse / baseline_mse; < 1 beats predict-the-mean)\n", "mse_ratio", num(ratio).c_str());

  const nlohmann::json j = {{"checkpoint", ck.dir},
                            {"run_dir", ck.run_dir},
                            {"step", step},
                            {"task", "fm4npp"},
                            {"data_dir", run.data_dir},
                            {"data", run.data_kind},
                            {"split", run.split},
                            {"events", run.val_events},
                            {"points", run.val_points},
                            {"seed", run.config.get<int64_t>("seed")},
                            {"fm4npp", {{"k", k},
                                        {"knn_mse", json_number(knn)},
                                        {"baseline_mse", json_number(base)},
                                        {"mse_ratio", json_number(ratio)}}}};
  const std::string out = a.str("out").empty() ? ck.run_dir + "/evaluation.json" : a.str("out");
  std::ofstream f(out, std::ios::trunc);
  f << j.dump(2) << '\n';
  f.flush();
  if (!f) throw ConfigError(out + ": cannot write the evaluation file");
  std::printf("  written: %s\n", out.c_str());
  return 0;
}

inline int run_eval(int argc, char** argv) {
  Args a("eval",
         "Evaluates a MAMBA-PT checkpoint (MDM token, sequence and distance accuracy per mask rate and track\n"
         "length, NTP accuracy/precision/recall/F1) or an FM4NPP one (k-NNN MSE against the predict-the-mean\n"
         "baseline); writes evaluation.json into the run directory.");
  a.option("checkpoint", "", "checkpoint directory (RUN/checkpoints/step_N or best), or a run directory (its best "
                             "checkpoint, else the latest)")
      .option("data", "", "TrackML directory (FM4NPP: or npz folder); default: the run's data directory, "
                          "else RUN_DIR/data")
      .option("split", "test", "event split (the run's seed and split fractions): test, val or all")
      .option("mask-rates", "0.15,0.3,0.5", "MDM mask rates, comma-separated")
      .option("out", "", "where to write the JSON (default: RUN_DIR/evaluation.json)")
      .option("threads", "0", "CPU threads (0: all cores)")
      .option("batch-size", "0", "tracks (FM4NPP: events) per forward pass (0: the run's batch size); the masks "
                                 "and pairs do not depend on it");
  if (!a.parse(argc, argv)) return 0;
  if (a.str("checkpoint").empty()) throw ConfigError("--checkpoint is required (a checkpoint or run directory)");
  set_num_threads(static_cast<int>(a.integer("threads")));
  const EvalCheckpoint ck = resolve_checkpoint(a.str("checkpoint"));
  const std::string model_path = ck.dir + "/" + train::RunCheckpoints::kModelFile;
  const nlohmann::json model_config = checkpoint_model_config(model_path);
  const std::string task = model_config.value("task", std::string());
  if (task == "mambapt") return eval_mdm(a, ck, model_config);
  if (task == "fm4npp") return eval_fm(a, ck);
  throw ConfigError(model_path + ": model config task \"" + task +
                    "\" is not one mambatrack eval knows (mambapt: MAMBA-PT, fm4npp: FM4NPP)");
}

}  // namespace mambatrack::cli
