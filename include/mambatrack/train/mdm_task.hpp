// MAMBA-PT pretraining as a TrainTask: a token Backbone with the MDM head (masked detector
// module: predict the module of each masked hit, cross-entropy with MAMBA-PT's label smoothing
// over the masked positions) and the NTP head (next track prediction: is |p| of track 1 larger
// than |p| of track 2, for in-batch permutation pairs, on the unmasked sequences). Micro-batches
// alternate MDM / NTP as the seed does, or carry both losses (weighted) every time.
// Everything random (batch order, masks, pairs, dropout) is a pure function of the seed and
// the data cursor, so a resumed run continues exactly. predict_mdm / predict_ntp give the
// per-token and per-pair predictions on any track set for evaluation (train/mdm_metrics.hpp).
// The Backend picks the device: masks, pairs and packing are built on the host, the model, the
// row gathers, the loss and the argmax run where the Backend runs (CpuBackend or CudaBackend).
// On a CUDA backend the training results stay on the device until the step ends (deferred
// results, train/trainer.hpp), and in graph mode each full micro-batch (backbone, head, loss and
// backward) is one CUDA graph.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "mambatrack/data/batching.hpp"
#include "mambatrack/data/mdm_masking.hpp"
#include "mambatrack/data/ntp_pairs.hpp"
#include "mambatrack/data/track_sequences.hpp"
#include "mambatrack/nn/backbone.hpp"
#include "mambatrack/nn/heads.hpp"
#include "mambatrack/ops/losses.hpp"
#include "mambatrack/train/flat_optimizer.hpp"
#include "mambatrack/train/graph_mode.hpp"
#include "mambatrack/train/mdm_metrics.hpp"
#include "mambatrack/train/trainer.hpp"

namespace mambatrack::train {

struct MdmTaskOptions {
  nn::BackboneConfig backbone;  // input = tokens; vocab = the tokenizer's size
  int64_t mdm_hidden = 256;
  int64_t ntp_hidden = 128;
  double ntp_dropout = 0.1;
  int64_t batch_size = 128;
  uint64_t seed = 42;
  data::MaskOptions mask;        // rate is taken from the schedule
  data::MaskSchedule schedule;
  double label_smoothing = 0.1;
  double mdm_weight = 1.0;
  double ntp_weight = 0.5;
  bool alternate = true;         // MAMBA-PT: even micro-batches MDM, odd NTP; false: both, weighted
  // CUDA backends: full training batches are padded to batch_size × (longest track) tokens and
  // each micro-batch's device work (backbone, head, loss, count of correct predictions, backward)
  // replays a CUDA graph (train/graph_mode.hpp), one for MDM and one for NTP micro-batches; the
  // MDM head then classifies every row, the unmasked ones with an ignored label. Evaluation stays
  // eager. Ignored on host backends.
  bool cuda_graphs = false;
  nlohmann::json model_config;   // written into model.safetensors
};

// The device-independent face of an MdmTask (what the program needs to set up a run).
class MdmTaskBase : public TrainTask {
 public:
  virtual int64_t steps_per_epoch(int64_t accumulation) const = 0;
  virtual int64_t num_train_tracks() const = 0;
  virtual int64_t num_val_tracks() const = 0;
};

template <class Backend, class Mixer>
class MdmTask final : public MdmTaskBase {
 public:
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  using Store = typename Backend::Store;

  MdmTask(MdmTaskOptions o, const Mixer& mixer, data::TrackSequences train, data::TrackSequences val)
      : o_(std::move(o)),
        train_(std::move(train)),
        val_(std::move(val)),
        backbone_(o_.backbone, mixer),
        mdm_head_(o_.backbone.d_model, o_.mdm_hidden, o_.backbone.vocab),
        ntp_head_(o_.backbone.d_model, o_.ntp_hidden, o_.ntp_dropout),
        sampler_(train_.size(), sampler_options(o_)) {
    MAMBATRACK_CHECK(train_.size() > 0, ConfigError, "pretrain-mdm: no training tracks (check the volumes, ",
                     "track_length_range and the data directory)");
    check_sequences(train_, "training");
    check_sequences(val_, "validation");
    backbone_.register_params(store_);
    mdm_head_.register_params(store_);
    ntp_head_.register_params(store_);
    store_.finalize();
    nn::ParameterStore& host = host_of(store_);
    backbone_.init(host, o_.seed);
    mdm_head_.init(host, o_.seed);
    ntp_head_.init(host, o_.seed);
    if constexpr (HasGraphs<Backend>::value) {
      if (o_.cuda_graphs) {
        int64_t longest = 0;
        for (int64_t i = 0; i < train_.size(); ++i) longest = std::max(longest, train_.length(i));
        graph_.budget = graph_budget(o_.batch_size, longest);
        Backend::use_capture_stream();  // before the parameters reach the device
        Backend::set_check_ids(false);  // check_sequences validated every token above
      }
    }
    upload_params(store_);
  }

  nn::ParameterStore& store() override { return host_of(store_); }
  std::unique_ptr<FlatOptimizer> make_optimizer() override { return make_flat_optimizer(store_); }
  int64_t epoch() const override { return cursor_.epoch; }
  nlohmann::json model_config() const override { return o_.model_config; }
  int64_t steps_per_epoch(int64_t accumulation) const override {
    return std::max<int64_t>(1, sampler_.batches_per_epoch() / std::max<int64_t>(1, accumulation));
  }
  int64_t num_train_tracks() const override { return train_.size(); }
  int64_t num_val_tracks() const override { return val_.size(); }

  void save_state(nn::TrainState& s) const override {
    s.integers["data.cursor"] = {cursor_.epoch, cursor_.batch};
    s.integers["task.micro_batches"] = {micro_};
  }
  void load_state(const nn::TrainState& s) override {
    const auto& c = s.integers.at("data.cursor");
    MAMBATRACK_CHECK(c.size() == 2, CheckpointError, "train state: data.cursor must hold (epoch, batch)");
    cursor_ = {c[0], c[1]};
    micro_ = s.integers.at("task.micro_batches").at(0);
  }

  MicroBatchResult train_micro_batch(int64_t step, double grad_scale) override {
    const std::vector<int64_t> ids = sampler_.batch(cursor_.epoch, cursor_.batch);
    const int64_t epoch = cursor_.epoch;
    if (++cursor_.batch >= sampler_.batches_per_epoch()) {
      cursor_.batch = 0;
      ++cursor_.epoch;
    }
    const int64_t micro = micro_++;
    const data::PackedBatch batch = data::pack_batch(train_, ids);
    // Graph mode (inside a deferred step only): the layers draw step 0's dropout masks plus a
    // device-side step offset.
    graph_micro_ = in_step_ && graph_.budget.tokens > 0 && batch.size() == o_.batch_size ? micro : -1;
    const auto drop_step = static_cast<uint64_t>(graph_micro_ >= 0 ? 0 : micro);
    backbone_.set_mode(true, o_.seed, drop_step);
    ntp_head_.set_mode(true, o_.seed, drop_step);
    MicroBatchResult r;
    r.tokens = batch.num_tokens();
    const bool do_mdm = !o_.alternate || micro % 2 == 0;
    const bool do_ntp = !o_.alternate || micro % 2 == 1;
    // Deferred results: this micro-batch's {loss, count, correct} of MDM and of NTP on the device.
    View<double, Device> slot;
    if (in_step_) {
      const auto k = static_cast<int64_t>(pending_.size());
      MAMBATRACK_CHECK(k < stats_d_.dim(0), ShapeError, "pretrain-mdm: micro-batch ", k + 1, " of a step begun for ",
                       stats_d_.dim(0), " (begin_step)");
      slot = View<double, Device>(stats_d_.data() + k * kStats, Shape{kStats});
      pending_.push_back(Pending{do_mdm, do_ntp});
      r.pending = true;
    }
    auto part = [&](int64_t first) {
      return ops::present(slot) ? View<double, Device>(slot.data + first, Shape{3}) : View<double, Device>();
    };
    if (do_mdm) {
      const MdmOut m = mdm_step(batch, o_.schedule.rate(epoch), epoch, grad_scale * o_.mdm_weight, true, nullptr,
                                part(0));
      if (!r.pending) add_mdm(r, m.loss, m.count, m.correct);
    }
    if (do_ntp) {
      const NtpOut n = ntp_step(train_, batch, Philox(o_.seed ^ 0x4e5450ull, static_cast<uint64_t>(micro)),
                                grad_scale * o_.ntp_weight, true, part(3));
      if (!r.pending) add_ntp(r, n.loss, n.count, n.correct);
    }
    fold_grads(store_);  // nn:: by argument-dependent lookup; fp32 accumulation under mixed precision
    (void)step;
    return r;
  }

  // Deferred results on CUDA backends (TrainTask): kStats doubles per micro-batch.
  bool defers_results() const override { return HasGraphs<Backend>::value; }
  void begin_step(int64_t micro_batches) override {
    if constexpr (HasGraphs<Backend>::value) {
      nn::ensure(stats_d_, Shape{micro_batches, kStats});
      Backend::fill_zero(stats_d_.view());
      pending_.clear();
      in_step_ = true;
    }
  }
  DeviceStats device_stats() override {  // empty before the first begin_step
    return stats_d_.data() ? DeviceStats{stats_d_.data(), stats_d_.numel()} : DeviceStats{};
  }
  void finish_step(std::vector<MicroBatchResult>& results) override {
    if constexpr (HasGraphs<Backend>::value) {
      MAMBATRACK_CHECK(results.size() == pending_.size(), ShapeError, "pretrain-mdm: ", results.size(),
                       " results for ", pending_.size(), " queued micro-batches");
      stats_h_.resize(static_cast<std::size_t>(stats_d_.numel()));
      Backend::to_host(View<const double, Device>(stats_d_.view()), View<double>(stats_h_.data(), stats_d_.shape()));
      for (std::size_t k = 0; k < pending_.size(); ++k) {
        const double* v = stats_h_.data() + k * kStats;
        MicroBatchResult& r = results[k];
        if (pending_[k].mdm) add_mdm(r, v[0], static_cast<int64_t>(v[1]), static_cast<int64_t>(v[2]));
        if (pending_[k].ntp) add_ntp(r, v[3], static_cast<int64_t>(v[4]), static_cast<int64_t>(v[5]));
        r.pending = false;
      }
      pending_.clear();
      in_step_ = false;
    } else {
      (void)results;
    }
  }

  // Validation: MDM at the schedule's validation rate (seed's 0.5) and NTP, over all held-out
  // tracks in order; masks and pairs depend only on the seed. "loss" is the MDM loss (the seed's
  // best-model criterion).
  std::map<std::string, double> evaluate() override { return evaluate_at(o_.schedule.validation_rate); }

  std::map<std::string, double> evaluate_at(double mask_rate) {
    backbone_.set_mode(false);
    ntp_head_.set_mode(false, 0, 0);
    double mdm_loss = 0, ntp_loss = 0;
    int64_t mdm_count = 0, mdm_correct = 0;
    NtpOut ntp_total;
    for (int64_t begin = 0; begin < val_.size(); begin += o_.batch_size) {
      std::vector<int64_t> ids;
      for (int64_t i = begin; i < std::min(val_.size(), begin + o_.batch_size); ++i) ids.push_back(i);
      const data::PackedBatch batch = data::pack_batch(val_, ids);
      const MdmOut m = mdm_step(batch, mask_rate, 0, 0.0, false);
      mdm_loss += m.loss * static_cast<double>(m.count);
      mdm_count += m.count;
      mdm_correct += m.correct;
      const NtpOut n = ntp_step(val_, batch, Philox(o_.seed ^ 0x56414cull, static_cast<uint64_t>(begin)), 0.0, false);
      ntp_loss += n.loss * static_cast<double>(n.count);
      ntp_total.add(n);
    }
    std::map<std::string, double> out;
    if (mdm_count > 0) {
      out["mdm_loss"] = mdm_loss / static_cast<double>(mdm_count);
      out["mdm_accuracy"] = static_cast<double>(mdm_correct) / static_cast<double>(mdm_count);
      out["loss"] = out["mdm_loss"];
    }
    if (ntp_total.count > 0) {
      out["ntp_loss"] = ntp_loss / static_cast<double>(ntp_total.count);
      out["ntp_accuracy"] = ntp_total.accuracy();
      out["ntp_precision"] = ntp_total.precision();
      out["ntp_recall"] = ntp_total.recall();
      out["ntp_f1"] = ntp_total.f1();
    }
    return out;
  }

  // MDM predictions (argmax over the whole vocabulary) for tracks `ids` of `src` at `mask_rate`,
  // in evaluation mode (no dropout). Masks are those of validation: data::mask_packed with the
  // task's seed, epoch `mask_epoch` and sample id = the track's index in `src`, so they do not
  // depend on how the tracks are batched. Tracks too short to mask at this rate have no tokens.
  MdmPredictions predict_mdm(const data::TrackSequences& src, const std::vector<int64_t>& ids, double mask_rate,
                             int64_t mask_epoch = 0) {
    backbone_.set_mode(false);
    MdmPredictions r;
    r.sample_ids = ids;
    for (int64_t id : ids) {
      MAMBATRACK_CHECK(id >= 0 && id < src.size(), ShapeError, "predict_mdm: track ", id, " of ", src.size());
      r.hits.push_back(src.length(id) - 2);
    }
    if (ids.empty()) return r;
    check_sequences(src, "evaluated");
    const data::PackedBatch batch = data::pack_batch(src, ids);
    const MdmOut m = mdm_step(batch, mask_rate, mask_epoch, 0.0, false, &r);
    r.loss_sum = m.loss * static_cast<double>(m.count);
    return r;
  }

  // NTP predictions for explicit pairs (first[k], second[k]) of tracks of `src`, in evaluation
  // mode; label = 1 when |p| of the first track is strictly larger (data/ntp_pairs.hpp).
  NtpPredictions predict_ntp(const data::TrackSequences& src, const std::vector<int64_t>& first,
                             const std::vector<int64_t>& second) {
    MAMBATRACK_CHECK(first.size() == second.size(), ShapeError, "predict_ntp: ", first.size(), " first tracks, ",
                     second.size(), " second tracks");
    for (const auto* v : {&first, &second})
      for (int64_t id : *v)
        MAMBATRACK_CHECK(id >= 0 && id < src.size(), ShapeError, "predict_ntp: track ", id, " of ", src.size());
    NtpPredictions r;
    const auto b = static_cast<int64_t>(first.size());
    if (b == 0) return r;
    check_sequences(src, "evaluated");
    backbone_.set_mode(false);
    ntp_head_.set_mode(false, 0, 0);
    const int64_t d = o_.backbone.d_model;
    const data::PackedBatch b1 = data::pack_batch(src, first), b2 = data::pack_batch(src, second);
    hint_max_seqlen(b1.cu_seqlens, b2.cu_seqlens);
    View<const int64_t, Device> cu1 = upload(b1.cu_seqlens, cu_d_), cu2 = upload(b2.cu_seqlens, cu2_d_);
    View<const T, Device> y1 = backbone_.forward_tokens(bctx_, upload(b1.tokens, ids_d_), cu1);
    View<T, Device> kept = nn::ensure(gathered_d_, Shape{b1.num_tokens(), d});  // the next forward reuses the context
    Backend::copy(y1, kept);
    View<const T, Device> y2 = backbone_.forward_tokens(bctx_, upload(b2.tokens, ids_d_), cu2);
    View<const T, Device> logits = ntp_head_.forward(nctx_, View<const T, Device>(kept), cu1, y2, cu2);
    ntp_labels_.resize(static_cast<std::size_t>(b));
    for (int64_t k = 0; k < b; ++k) ntp_labels_[k] = src.p[first[k]] > src.p[second[k]] ? 1 : 0;
    CrossEntropyArgs<T, Device> ce;
    ce.logits = logits;
    ce.labels = upload(ntp_labels_, ntp_labels_d_);
    ce.grad_scale = 0.0;
    const LossResult lr = Backend::cross_entropy(ce);
    r.loss_sum = lr.loss * static_cast<double>(lr.count);
    const std::vector<T>& lg = download(logits, logits_h_);
    for (int64_t k = 0; k < b; ++k) {
      r.label.push_back(static_cast<int32_t>(ntp_labels_[k]));
      r.predicted.push_back(value(lg[2 * k + 1]) > value(lg[2 * k]) ? 1 : 0);
    }
    return r;
  }

 private:
  struct MdmOut {
    double loss = 0;
    int64_t count = 0, correct = 0;
  };
  struct NtpOut {
    double loss = 0;
    int64_t count = 0, correct = 0, tp = 0, fp = 0, fn = 0;
    void add(const NtpOut& o) {
      count += o.count;
      correct += o.correct;
      tp += o.tp;
      fp += o.fp;
      fn += o.fn;
    }
    double accuracy() const { return count ? static_cast<double>(correct) / static_cast<double>(count) : 0.0; }
    double precision() const { return tp + fp ? static_cast<double>(tp) / static_cast<double>(tp + fp) : 0.0; }
    double recall() const { return tp + fn ? static_cast<double>(tp) / static_cast<double>(tp + fn) : 0.0; }
    double f1() const {
      const double p = precision(), r = recall();
      return p + r > 0 ? 2 * p * r / (p + r) : 0.0;
    }
  };

  // A micro-batch's MDM and NTP results into its MicroBatchResult (eager or read back).
  void add_mdm(MicroBatchResult& r, double loss, int64_t count, int64_t correct) const {
    r.loss += o_.mdm_weight * loss;
    if (count > 0) {
      r.metrics["mdm_loss"] = loss;
      r.metrics["mdm_accuracy"] = static_cast<double>(correct) / static_cast<double>(count);
    }
  }
  void add_ntp(MicroBatchResult& r, double loss, int64_t count, int64_t correct) const {
    r.loss += o_.ntp_weight * loss;
    r.metrics["ntp_loss"] = loss;
    r.metrics["ntp_accuracy"] = count ? static_cast<double>(correct) / static_cast<double>(count) : 0.0;
  }

  static data::SamplerOptions sampler_options(const MdmTaskOptions& o) {
    data::SamplerOptions s;
    s.batch_size = o.batch_size;
    s.seed = o.seed;
    s.shuffle = true;
    return s;
  }

  // MDM on one batch: mask, encode, head on the masked positions only, smoothed CE. With
  // `backward`, adds grad_scale · ∂loss/∂θ into the store's gradients. With `stats` (deferred
  // training results, 3 doubles: loss, count, correct) nothing is read back and the returned
  // MdmOut is empty; otherwise the results are read back. With `record`, appends each masked
  // token's track, position, label and prediction to it.
  MdmOut mdm_step(const data::PackedBatch& batch, double rate, int64_t epoch, double grad_scale, bool backward,
                  MdmPredictions* record = nullptr, View<double, Device> stats = {}) {
    data::MaskOptions mo = o_.mask;
    mo.rate = rate;
    mo.vocab_size = o_.backbone.vocab;
    const data::MaskedTokens masked =
        data::mask_packed(batch.tokens, batch.cu_seqlens, batch.sample_ids, mo, o_.seed, epoch);
    MdmOut out;
    const auto m = static_cast<int64_t>(masked.masked_positions.size());
    if (m == 0) return out;  // too short to mask at this rate (the seed skips such batches too)
    const int64_t n = batch.num_tokens(), d = o_.backbone.d_model, vocab = o_.backbone.vocab;
    const bool deferred = ops::present(stats);
    if constexpr (HasGraphs<Backend>::value) {
      if (backward && graph_micro_ >= 0) {  // graph mode: the head on every row, unmasked rows ignored
        MAMBATRACK_CHECK(deferred, ShapeError, "pretrain-mdm: graph mode needs deferred results");
        graph_.labels_h.assign(static_cast<std::size_t>(graph_.budget.tokens), kIgnoreIndex);
        for (int64_t p : masked.masked_positions) graph_.labels_h[p] = masked.labels[p];
        const GraphInputs in = graph_inputs(masked.input, batch.cu_seqlens);
        View<const int64_t, Device> labels = upload(graph_.labels_h, graph_.labels_d);
        View<double, Device> result(graph_.result_d.data(), Shape{3});
        run_graph(graph_.mdm, graph_.mdm_warm, graph_.mdm_scale, grad_scale, [&] {
          View<const T, Device> y = backbone_.forward_tokens(gctx_, in.ids, in.cu);
          View<const T, Device> logits = mdm_head_.forward(gmctx_, y);
          CrossEntropyArgs<T, Device> ce;
          ce.logits = logits;
          ce.labels = labels;
          ce.dlogits = nn::ensure(graph_.dlogits_d, Shape{graph_.budget.tokens, vocab});
          ce.label_smoothing = o_.label_smoothing;
          ce.form = SmoothingForm::kMambaPt;
          ce.grad_scale = grad_scale;
          loss_to_device(ce, result);
          backbone_.backward(gctx_, mdm_head_.backward(gmctx_, View<const T, Device>(graph_.dlogits_d.view())));
        });
        Backend::copy(View<const double, Device>(result), stats);
        return out;
      }
    }
    View<const T, Device> y = encode(masked.input, batch.cu_seqlens).first;
    positions_.assign(masked.masked_positions.begin(), masked.masked_positions.end());
    labels_.resize(static_cast<std::size_t>(m));
    for (int64_t i = 0; i < m; ++i) labels_[i] = masked.labels[positions_[i]];
    View<const int64_t, Device> pos = upload(positions_, positions_d_);
    View<T, Device> gathered = nn::ensure(gathered_d_, Shape{m, d});
    Backend::gather_rows(y, pos, gathered);
    View<const T, Device> logits = mdm_head_.forward(mctx_, View<const T, Device>(gathered));
    CrossEntropyArgs<T, Device> ce;
    ce.logits = logits;
    ce.labels = upload(labels_, labels_d_);
    ce.dlogits = nn::ensure(dlogits_d_, Shape{m, vocab});
    ce.label_smoothing = o_.label_smoothing;
    ce.form = SmoothingForm::kMambaPt;
    ce.grad_scale = grad_scale;
    ce.host_count = m;  // every label is a real token (check_sequences): no device count and sync
    if (deferred) {
      loss_to_device(ce, stats);
    } else {
      const LossResult lr = Backend::cross_entropy(ce);
      out.loss = lr.loss;
      out.count = lr.count;
      View<int64_t, Device> pred_d = nn::ensure(predicted_d_, Shape{m});
      Backend::argmax_rows(logits, pred_d);
      predicted_.resize(static_cast<std::size_t>(m));
      Backend::to_host(View<const int64_t, Device>(pred_d), View<int64_t>(predicted_.data(), Shape{m}));
      for (int64_t i = 0; i < m; ++i) {
        const int64_t predicted = predicted_[i];
        out.correct += predicted == labels_[i];
        if (record) {
          const int64_t p = positions_[i];
          const int64_t s = std::upper_bound(batch.cu_seqlens.begin(), batch.cu_seqlens.end(), p) -
                            batch.cu_seqlens.begin() - 1;
          record->track.push_back(s);
          record->position.push_back(p - batch.cu_seqlens[s]);
          record->label.push_back(static_cast<int32_t>(labels_[i]));
          record->predicted.push_back(static_cast<int32_t>(predicted));
        }
      }
    }
    if (backward) {
      View<const T, Device> dx = mdm_head_.backward(mctx_, View<const T, Device>(dlogits_d_.view()));
      View<T, Device> dy = nn::ensure(dy_d_, Shape{n, d});
      Backend::fill(dy, T(0));
      Backend::scatter_add_rows(dx, pos, dy);
      backbone_.backward(bctx_, View<const T, Device>(dy_d_.view()));
    }
    return out;
  }

  // NTP on one batch: encode the unmasked tracks once, pair each with a permuted partner,
  // 2-class CE on |p1| > |p2|. `stats` as for mdm_step.
  NtpOut ntp_step(const data::TrackSequences& src, const data::PackedBatch& batch, Philox rng, double grad_scale,
                  bool backward, View<double, Device> stats = {}) {
    const int64_t n = batch.num_tokens(), d = o_.backbone.d_model, b = batch.size();
    std::vector<float> p(static_cast<std::size_t>(b));
    for (int64_t i = 0; i < b; ++i) p[i] = src.p[batch.sample_ids[i]];
    const data::NtpPairs pairs = data::permutation_pairs(p, rng);
    const std::vector<int64_t>& cu_h = batch.cu_seqlens;
    // The partners' rows, sequence by sequence in pair order (every row once: a permutation).
    cu2_.assign(1, 0);
    rows_.clear();
    for (int64_t k = 0; k < pairs.size(); ++k) {
      const int64_t s = pairs.second[k];
      for (int64_t t = cu_h[s]; t < cu_h[s + 1]; ++t) rows_.push_back(t);
      cu2_.push_back(cu2_.back() + cu_h[s + 1] - cu_h[s]);
    }
    ntp_labels_.assign(pairs.label.begin(), pairs.label.end());
    const bool deferred = ops::present(stats);
    if constexpr (HasGraphs<Backend>::value) {
      if (backward && graph_micro_ >= 0) {  // graph mode: every row of the padded batch, padding in place
        MAMBATRACK_CHECK(deferred, ShapeError, "pretrain-mdm: graph mode needs deferred results");
        for (int64_t t = n; t < graph_.budget.tokens; ++t) rows_.push_back(t);
        const GraphInputs in = graph_inputs(batch.tokens, cu_h);
        View<const int64_t, Device> rows = upload(rows_, graph_.rows_d);
        View<const int64_t, Device> cu2 = upload(cu2_, graph_.cu2_d);
        View<const int64_t, Device> labels = upload(ntp_labels_, graph_.ntp_labels_d);
        View<const int64_t, Device> cu1(in.cu.data, Shape{b + 1});  // the real sequences
        View<double, Device> result(graph_.result_d.data() + 3, Shape{3});
        run_graph(graph_.ntp, graph_.ntp_warm, graph_.ntp_scale, grad_scale, [&] {
          View<const T, Device> y = backbone_.forward_tokens(gctx_, in.ids, in.cu);
          View<T, Device> permuted = nn::ensure(graph_.permuted_d, Shape{graph_.budget.tokens, d});
          Backend::gather_rows(y, rows, permuted);
          View<const T, Device> logits = ntp_head_.forward(gnctx_, y, cu1, View<const T, Device>(permuted), cu2);
          CrossEntropyArgs<T, Device> ce;
          ce.logits = logits;
          ce.labels = labels;
          ce.dlogits = nn::ensure(graph_.ntp_dlogits_d, Shape{b, 2});
          ce.grad_scale = grad_scale;
          loss_to_device(ce, result);
          const auto [dx1, dx2] = ntp_head_.backward(gnctx_, View<const T, Device>(graph_.ntp_dlogits_d.view()));
          View<T, Device> dy = nn::ensure(graph_.dy_d, Shape{graph_.budget.tokens, d});
          Backend::copy(dx1, dy);  // rows outside the real sequences get 0 from the head
          Backend::scatter_add_rows(dx2, rows, dy);
          backbone_.backward(gctx_, View<const T, Device>(dy));
        });
        Backend::copy(View<const double, Device>(result), stats);
        return NtpOut{};
      }
    }
    const auto [y, cu] = encode(batch.tokens, cu_h);
    View<const int64_t, Device> rows = upload(rows_, rows_d_);
    View<T, Device> permuted = nn::ensure(permuted_d_, Shape{n, d});
    Backend::gather_rows(y, rows, permuted);
    View<const T, Device> logits =
        ntp_head_.forward(nctx_, y, cu, View<const T, Device>(permuted), upload(cu2_, cu2_d_));
    CrossEntropyArgs<T, Device> ce;
    ce.logits = logits;
    ce.labels = upload(ntp_labels_, ntp_labels_d_);
    ce.dlogits = nn::ensure(ntp_dlogits_d_, Shape{b, 2});
    ce.grad_scale = grad_scale;
    ce.host_count = b;  // labels 0 or 1, one per pair
    NtpOut out;
    if (deferred) {
      loss_to_device(ce, stats);
    } else {
      const LossResult lr = Backend::cross_entropy(ce);
      out.loss = lr.loss;
      out.count = lr.count;
      const std::vector<T>& lg = download(logits, logits_h_);
      for (int64_t k = 0; k < b; ++k) {
        const int pred = value(lg[2 * k + 1]) > value(lg[2 * k]) ? 1 : 0;
        const int label = pairs.label[k];
        out.correct += pred == label;
        out.tp += pred == 1 && label == 1;
        out.fp += pred == 1 && label == 0;
        out.fn += pred == 0 && label == 1;
      }
    }
    if (backward) {
      const auto [dx1, dx2] = ntp_head_.backward(nctx_, View<const T, Device>(ntp_dlogits_d_.view()));
      View<T, Device> dy = nn::ensure(dy_d_, Shape{n, d});
      Backend::copy(dx1, dy);
      Backend::scatter_add_rows(dx2, rows, dy);  // route the partners' gradients back
      backbone_.backward(bctx_, View<const T, Device>(dy_d_.view()));
    }
    return out;
  }

  // Deferred results: the loss, the count and the number of correct argmaxes of `ce` into `out`
  // (3 doubles), nothing read back. The device counts the labels, as inside a graph, so the eager
  // and the graph paths compute the same bits.
  static void loss_to_device(CrossEntropyArgs<T, Device> ce, View<double, Device> out) {
    ce.host_count = -1;
    ce.result = View<double, Device>(out.data, Shape{2});
    Backend::cross_entropy(ce);
    Backend::count_correct(ce.logits, ce.labels, ce.ignore_index, View<double, Device>(out.data + 2, Shape{1}));
  }

  // Every token inside the vocabulary and every track within the position table, checked once on
  // the host (a device backend may then skip its per-batch id check: nn::CudaBackend::set_check_ids).
  void check_sequences(const data::TrackSequences& src, const char* what) const {
    const int64_t vocab = o_.backbone.vocab, max_len = o_.backbone.max_positions;
    for (int64_t i = 0; i < src.size(); ++i) {
      MAMBATRACK_CHECK(max_len <= 0 || src.length(i) <= max_len, ConfigError, "pretrain-mdm: ", what, " track ", i,
                       " has ", src.length(i), " tokens but the position embedding holds ", max_len,
                       " (raise model.max_length or lower data.track_length_range)");
      for (int64_t t = src.offsets[i]; t < src.offsets[i + 1]; ++t)
        MAMBATRACK_CHECK(src.tokens[t] >= 0 && src.tokens[t] < vocab, DataError, "pretrain-mdm: ", what, " track ", i,
                         " has token ", src.tokens[t], ", outside the model's vocabulary of ", vocab,
                         " (the tokenizer and the model disagree)");
    }
  }

  // The eager backbone forward of one batch on bctx_: its output rows and the device cu_seqlens.
  template <class I>
  std::pair<View<const T, Device>, View<const int64_t, Device>> encode(const std::vector<I>& tokens,
                                                                      const std::vector<int64_t>& cu) {
    hint_max_seqlen(cu);
    View<const int64_t, Device> cu_d = upload(cu, cu_d_);
    return {backbone_.forward_tokens(bctx_, upload(tokens, ids_d_), cu_d), cu_d};
  }

  // Graph mode: a full batch padded to the budget and uploaded into the graphs' own buffers (the
  // uploads are queued ahead of the graph, outside it).
  struct GraphInputs {
    View<const int64_t, Device> ids, cu;
  };
  template <class I>
  GraphInputs graph_inputs(const std::vector<I>& tokens, const std::vector<int64_t>& cu) {
    pad_to_budget(tokens, cu, graph_.budget, o_.backbone.padding_idx, graph_.tokens_h, graph_.cu_h);
    backbone_.set_max_seqlen_hint(graph_.budget.max_len);
    return GraphInputs{upload(graph_.tokens_h, graph_.ids_d), upload(graph_.cu_h, graph_.cu_d)};
  }
  // Runs f (the device part of a full training micro-batch, on the graph contexts) with this
  // micro-batch's dropout offset: eagerly the first time (every buffer allocated), captured the
  // second, replayed from then on. The gradient scale is part of the captured work: a different
  // one (another accumulation) captures the graph again.
  template <class Graph, class F>
  void run_graph(Graph& g, bool& warm, double& captured_scale, double grad_scale, F&& f) {
    Backend::set_dropout_step_offset(static_cast<uint64_t>(graph_micro_));
    if (g.ready() && captured_scale != grad_scale) g = Graph();
    if (!warm) {
      f();
      warm = true;
    } else {
      if (!g.ready()) {
        Backend::capture(g, f);
        captured_scale = grad_scale;
      }
      Backend::launch(g);
    }
    Backend::set_dropout_step_offset(0);
  }

  // Tells the backbone the longest sequence of the coming forward (a speed hint for the CUDA scan).
  void hint_max_seqlen(const std::vector<int64_t>& cu, const std::vector<int64_t>& more = {}) {
    int64_t n = 0;
    for (const auto* c : {&cu, &more})
      for (std::size_t s = 1; s < c->size(); ++s) n = std::max(n, (*c)[s] - (*c)[s - 1]);
    backbone_.set_max_seqlen_hint(n);
  }

  // Host vector -> device tensor (resized when its length changes); returns the device view.
  // Integer lists (tokens are int32 in the data pipeline) are widened to int64 on the host.
  template <class I>
  View<const int64_t, Device> upload(const std::vector<I>& h, Tensor<int64_t, Device>& d) {
    const std::vector<int64_t>* src = nullptr;
    if constexpr (std::is_same_v<I, int64_t>) {
      src = &h;
    } else {
      staging_.assign(h.begin(), h.end());
      src = &staging_;
    }
    View<int64_t, Device> v = nn::ensure(d, Shape{static_cast<int64_t>(h.size())});
    Backend::to_device(View<const int64_t>(src->data(), v.shape), v);
    return v;
  }
  // Device view -> host vector (synchronises on a GPU).
  // A downloaded logit as a double (bfloat16 converts through float).
  static double value(const T& v) {
    if constexpr (std::is_same_v<T, bfloat16>) return static_cast<float>(v);
    else return static_cast<double>(v);
  }
  const std::vector<T>& download(View<const T, Device> d, std::vector<T>& h) {
    h.resize(static_cast<std::size_t>(d.numel()));
    Backend::to_host(d, View<T>(h.data(), d.shape));
    return h;
  }

  MdmTaskOptions o_;
  data::TrackSequences train_, val_;
  Store store_;
  nn::Backbone<Backend, Mixer> backbone_;
  nn::MdmHead<Backend> mdm_head_;
  nn::NtpHead<Backend> ntp_head_;
  data::BatchSampler sampler_;
  data::DataCursor cursor_;
  int64_t micro_ = 0;
  // Contexts and buffers reused from step to step.
  typename nn::Backbone<Backend, Mixer>::Context bctx_;
  typename nn::MdmHead<Backend>::Context mctx_;
  typename nn::NtpHead<Backend>::Context nctx_;
  std::vector<int64_t> positions_, labels_, predicted_, rows_, cu2_, ntp_labels_, staging_;
  // Deferred results: kStats doubles per micro-batch of the step (MDM loss, count, correct, then
  // NTP's), what each micro-batch ran, and their host copy.
  static constexpr int64_t kStats = 6;
  struct Pending {
    bool mdm = false, ntp = false;
  };
  Tensor<double, Device> stats_d_;
  std::vector<Pending> pending_;
  std::vector<double> stats_h_;
  bool in_step_ = false;  // between begin_step and finish_step: micro-batches defer their results
  std::vector<T> logits_h_;
  Tensor<int64_t, Device> ids_d_, cu_d_, cu2_d_, positions_d_, labels_d_, ntp_labels_d_, predicted_d_, rows_d_;
  Tensor<T, Device> gathered_d_, dlogits_d_, dy_d_, permuted_d_, ntp_dlogits_d_;
  // Graph mode: the padded batch's own buffers and contexts (never reshaped: the graphs hold
  // their addresses), the MDM and NTP micro-batch graphs, and the results they write.
  struct GraphState {
    GraphBudget budget;  // tokens == 0: graph mode off
    bool mdm_warm = false, ntp_warm = false;  // the first full batch of each kind ran eagerly
    double mdm_scale = 0, ntp_scale = 0;      // the gradient scale each graph was captured with
    std::vector<int64_t> tokens_h, cu_h, labels_h;
    Tensor<int64_t, Device> ids_d, cu_d, labels_d, rows_d, cu2_d, ntp_labels_d;
    Tensor<T, Device> dy_d, dlogits_d, permuted_d, ntp_dlogits_d;
    Tensor<double, Device> result_d{Shape{kStats}};
    graph_t<Backend> mdm, ntp;
  };
  GraphState graph_;
  typename nn::Backbone<Backend, Mixer>::Context gctx_;
  typename nn::MdmHead<Backend>::Context gmctx_;
  typename nn::NtpHead<Backend>::Context gnctx_;
  int64_t graph_micro_ = -1;  // this training micro-batch's index in graph mode, else -1
};

}  // namespace mambatrack::train
