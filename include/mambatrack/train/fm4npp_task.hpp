// FM4NPP pretraining as a TrainTask: events prepared once (normalised (E, η, φ, r), r-sorted,
// k-NNN targets (n, 3k) padded −100, serialised by the voxel raster scan; data/fm4npp_points.hpp),
// packed back to back (cu_seqlens), embedded by the frozen NeRF/energy projections
// (nn/point_embedding.hpp), a causal Backbone (Mamba or Mamba2 mixers), KnnHead Linear(d → 3k),
// and the masked MSE over the valid target elements (FM4NPP: mean over all elements ≠ −100 of
// the batch). Batch order and dropout are pure functions of (seed, data cursor): resume is exact.
// On a CUDA backend the training loss stays on the device until the step ends (deferred results,
// train/trainer.hpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "mambatrack/data/batching.hpp"
#include "mambatrack/data/fm4npp_points.hpp"
#include "mambatrack/nn/backbone.hpp"
#include "mambatrack/nn/heads.hpp"
#include "mambatrack/nn/point_embedding.hpp"
#include "mambatrack/ops/losses.hpp"
#include "mambatrack/train/flat_optimizer.hpp"
#include "mambatrack/train/graph_mode.hpp"
#include "mambatrack/train/trainer.hpp"

namespace mambatrack::train {

struct Fm4nppTaskOptions {
  nn::BackboneConfig backbone;  // input is set to kEmbedded; causal (FM4NPP has no bidirectional variant)
  int64_t k = data::kDefaultKnn;
  nn::PointEmbedMethod embed = nn::PointEmbedMethod::kAdd;
  int64_t batch_size = 16;       // events per micro-batch (the seed's local_batch_size)
  int64_t eval_batch_size = 4;   // events per validation forward
  uint64_t seed = 42;
  // CUDA backends: full training micro-batches are padded (one extra sequence of zero points) to
  // the largest first-epoch micro-batch rounded up to 256 tokens, and each one (embedding,
  // backbone, head, loss and backward) replays one CUDA graph (train/graph_mode.hpp); a larger
  // micro-batch of a later epoch runs eagerly. Ignored on host backends.
  bool cuda_graphs = false;
  nlohmann::json model_config;   // written into model.safetensors
};

// The per-event pipeline over many events: voxel edges from the training events (FM4NPP's
// Voxelizer.compute_bins on the pretraining split), then prepare_fm4npp_event for each set.
// `r_splits` are the normalised r section boundaries (FM4NPP: 40 and 57 cm on the TPC).
inline data::VoxelEdges fm4npp_edges(const std::vector<data::PointSet>& train_points,
                                     const std::vector<double>& r_splits = {}) {
  MAMBATRACK_CHECK(!train_points.empty(), ConfigError, "FM4NPP: no training events to compute the voxel bins from");
  return data::compute_voxel_edges(train_points, 8, 8, 6, r_splits);
}

inline std::vector<data::Fm4nppEvent> prepare_fm4npp_events(std::vector<data::PointSet> points,
                                                            const data::Fm4nppOptions& opt) {
  std::vector<data::Fm4nppEvent> out;
  out.reserve(points.size());
  for (auto& p : points) out.push_back(data::prepare_fm4npp_event(std::move(p), opt));
  return out;
}

template <class Backend, class Mixer>
class Fm4nppTask final : public TrainTask {
 public:
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  using Store = typename Backend::Store;

  Fm4nppTask(Fm4nppTaskOptions o, const Mixer& mixer, std::vector<data::Fm4nppEvent> train,
             std::vector<data::Fm4nppEvent> val)
      : o_(std::move(o)),
        train_(std::move(train)),
        val_(std::move(val)),
        embedder_(data::nerf_dim(3), o_.backbone.d_model, o_.embed),
        backbone_(embedded_config(o_.backbone), mixer),
        head_(o_.backbone.d_model, o_.k),
        sampler_(static_cast<int64_t>(train_.size()), sampler_options(o_)) {
    MAMBATRACK_CHECK(!train_.empty(), ConfigError, "pretrain-fm: no training events (check the data directory and ",
                     "the point limits)");
    MAMBATRACK_CHECK(o_.k > 0, ConfigError, "pretrain-fm: klen must be > 0, got ", o_.k);
    for (const auto* set : {&train_, &val_})
      for (const auto& e : *set)
        MAMBATRACK_CHECK(e.k == o_.k, ConfigError, "pretrain-fm: an event was prepared with k = ", e.k,
                         " but the head predicts k = ", o_.k);
    embedder_.register_params(store_);
    backbone_.register_params(store_);
    head_.register_params(store_);
    store_.finalize();
    nn::ParameterStore& host = host_of(store_);  // nn:: functions by argument-dependent lookup
    embedder_.init(host, o_.seed);
    backbone_.init(host, o_.seed);
    head_.init(host, o_.seed);
    if constexpr (HasGraphs<Backend>::value) {
      if (o_.cuda_graphs) {
        int64_t most = 0;  // the largest full micro-batch of the first epoch
        for (int64_t b = 0; b < sampler_.batches_per_epoch(); ++b) {
          const std::vector<int64_t> ids = sampler_.batch(0, b);
          if (static_cast<int64_t>(ids.size()) != o_.batch_size) continue;
          int64_t n = 0;
          for (int64_t i : ids) n += train_[static_cast<std::size_t>(i)].size();
          most = std::max(most, n);
        }
        if (most > 0) {
          const int64_t budget = (most + 255) / 256 * 256;
          graph_.budget = GraphBudget{budget, budget, 1};
          Backend::use_capture_stream();  // before the parameters reach the device
        }
      }
    }
    upload_params(store_);
    baseline_mean_ = target_means(train_, o_.k);
  }

  nn::ParameterStore& store() override { return host_of(store_); }
  std::unique_ptr<FlatOptimizer> make_optimizer() override { return make_flat_optimizer(store_); }
  int64_t epoch() const override { return cursor_.epoch; }
  nlohmann::json model_config() const override { return o_.model_config; }
  int64_t steps_per_epoch(int64_t accumulation) const {
    return std::max<int64_t>(1, sampler_.batches_per_epoch() / std::max<int64_t>(1, accumulation));
  }
  int64_t num_train_events() const { return static_cast<int64_t>(train_.size()); }
  int64_t num_val_events() const { return static_cast<int64_t>(val_.size()); }
  static int64_t num_points(const std::vector<data::Fm4nppEvent>& events) {
    int64_t n = 0;
    for (const auto& e : events) n += e.size();
    return n;
  }
  int64_t num_train_points() const { return num_points(train_); }
  int64_t num_val_points() const { return num_points(val_); }
  // Mean of the training targets per output coordinate (3k), over the valid (≠ −100) entries.
  const std::vector<double>& baseline_mean() const { return baseline_mean_; }

  void save_state(nn::TrainState& s) const override {
    s.integers["data.cursor"] = {cursor_.epoch, cursor_.batch};
    s.integers["task.micro_batches"] = {micro_};
  }
  void load_state(const nn::TrainState& s) override {
    auto c = s.integers.find("data.cursor");
    auto m = s.integers.find("task.micro_batches");
    MAMBATRACK_CHECK(c != s.integers.end() && c->second.size() == 2 && m != s.integers.end() && !m->second.empty(),
                     CheckpointError, "train state: data.cursor (epoch, batch) and task.micro_batches are required");
    cursor_ = {c->second[0], c->second[1]};
    micro_ = m->second[0];
  }

  MicroBatchResult train_micro_batch(int64_t step, double grad_scale) override {
    (void)step;
    const std::vector<int64_t> ids = sampler_.batch(cursor_.epoch, cursor_.batch);
    if (++cursor_.batch >= sampler_.batches_per_epoch()) {
      cursor_.batch = 0;
      ++cursor_.epoch;
    }
    const int64_t micro = micro_++;
    int64_t points = 0;
    for (int64_t i : ids) points += train_[static_cast<std::size_t>(i)].size();
    // Graph mode (inside a deferred step only): the layers draw step 0's dropout masks plus a
    // device-side step offset.
    graph_micro_ = in_step_ && graph_.budget.tokens > 0 && static_cast<int64_t>(ids.size()) == o_.batch_size &&
                           points <= graph_.budget.tokens
                       ? micro
                       : -1;
    backbone_.set_mode(true, o_.seed, graph_micro_ >= 0 ? 0 : static_cast<uint64_t>(micro));
    View<double, Device> slot;  // deferred: this micro-batch's {loss, count} on the device
    if (in_step_) {
      const int64_t k = pending_;
      MAMBATRACK_CHECK(k < stats_d_.dim(0), ShapeError, "pretrain-fm: micro-batch ", k + 1, " of a step begun for ",
                       stats_d_.dim(0), " (begin_step)");
      slot = View<double, Device>(stats_d_.data() + 2 * k, Shape{2});
      ++pending_;
    }
    const Out r = run(train_, ids, grad_scale, true, slot);
    fold_grads(store_);  // nn:: by argument-dependent lookup; fp32 accumulation under mixed precision
    MicroBatchResult out;
    out.tokens = r.tokens;
    out.pending = in_step_;
    if (!out.pending) {
      out.loss = r.loss();
      out.metrics["knn_mse"] = out.loss;
    }
    return out;
  }

  // Deferred results on CUDA backends (TrainTask): {loss, count} per micro-batch.
  bool defers_results() const override { return HasGraphs<Backend>::value; }
  void begin_step(int64_t micro_batches) override {
    if constexpr (HasGraphs<Backend>::value) {
      nn::ensure(stats_d_, Shape{micro_batches, 2});
      Backend::fill_zero(stats_d_.view());
      pending_ = 0;
      in_step_ = true;
    }
  }
  DeviceStats device_stats() override {  // empty before the first begin_step
    return stats_d_.data() ? DeviceStats{stats_d_.data(), stats_d_.numel()} : DeviceStats{};
  }
  void finish_step(std::vector<MicroBatchResult>& results) override {
    if constexpr (HasGraphs<Backend>::value) {
      MAMBATRACK_CHECK(static_cast<int64_t>(results.size()) == pending_, ShapeError, "pretrain-fm: ", results.size(),
                       " results for ", pending_, " queued micro-batches");
      stats_h_.resize(static_cast<std::size_t>(stats_d_.numel()));
      Backend::to_host(View<const double, Device>(stats_d_.view()), View<double>(stats_h_.data(), stats_d_.shape()));
      for (std::size_t k = 0; k < results.size(); ++k) {
        results[k].loss = stats_h_[2 * k];
        results[k].metrics["knn_mse"] = results[k].loss;
        results[k].pending = false;
      }
      pending_ = 0;
      in_step_ = false;
    } else {
      (void)results;
    }
  }

  // Over all held-out events in order: "loss" = "knn_mse" = the masked MSE over every valid
  // target element of the split; "baseline_mse" = the same for the constant prediction
  // baseline_mean() (predict-the-mean); "mse_ratio" = knn_mse / baseline_mse.
  std::map<std::string, double> evaluate() override {
    backbone_.set_mode(false);
    Out total;
    double base_sum = 0;
    const int64_t n = num_val_events(), b = std::max<int64_t>(1, o_.eval_batch_size);
    for (int64_t begin = 0; begin < n; begin += b) {
      std::vector<int64_t> ids;
      for (int64_t i = begin; i < std::min(n, begin + b); ++i) ids.push_back(i);
      const Out r = run(val_, ids, 0.0, false);
      total.sum += r.sum;
      total.count += r.count;
      total.tokens += r.tokens;
    }
    const int64_t w = 3 * o_.k;
    for (const auto& e : val_)
      for (std::size_t i = 0; i < e.knn.size(); ++i) {
        if (e.knn[i] == data::kKnnPad) continue;
        const double d = static_cast<double>(e.knn[i]) - baseline_mean_[i % static_cast<std::size_t>(w)];
        base_sum += d * d;
      }
    std::map<std::string, double> out;
    if (total.count > 0) {
      out["loss"] = out["knn_mse"] = total.loss();
      out["baseline_mse"] = base_sum / static_cast<double>(total.count);
      if (out["baseline_mse"] > 0) out["mse_ratio"] = out["knn_mse"] / out["baseline_mse"];
    }
    return out;
  }

 private:
  struct Out {
    double sum = 0;  // Σ squared error over the valid elements
    int64_t count = 0, tokens = 0;
    double loss() const { return count > 0 ? sum / static_cast<double>(count) : 0.0; }
  };

  static nn::BackboneConfig embedded_config(nn::BackboneConfig c) {
    c.input = nn::BackboneInput::kEmbedded;
    return c;
  }
  static data::SamplerOptions sampler_options(const Fm4nppTaskOptions& o) {
    data::SamplerOptions s;
    s.batch_size = o.batch_size;
    s.seed = o.seed;
    s.shuffle = true;
    return s;
  }
  static std::vector<double> target_means(const std::vector<data::Fm4nppEvent>& events, int64_t k) {
    const auto w = static_cast<std::size_t>(3 * k);
    std::vector<double> sum(w, 0.0);
    std::vector<int64_t> count(w, 0);
    for (const auto& e : events)
      for (std::size_t i = 0; i < e.knn.size(); ++i)
        if (e.knn[i] != data::kKnnPad) {
          sum[i % w] += e.knn[i];
          ++count[i % w];
        }
    for (std::size_t c = 0; c < w; ++c) sum[c] = count[c] > 0 ? sum[c] / static_cast<double>(count[c]) : 0.0;
    return sum;
  }

  // Forward (and with `backward`, backward adding grad_scale · ∂loss/∂θ) on the events `ids`.
  // With `stats` (deferred training results: loss, count) nothing is read back and the returned
  // Out holds only the tokens.
  Out run(const std::vector<data::Fm4nppEvent>& events, const std::vector<int64_t>& ids, double grad_scale,
          bool backward, View<double, Device> stats = {}) {
    std::vector<const data::Fm4nppEvent*> ptrs;
    ptrs.reserve(ids.size());
    for (int64_t i : ids) ptrs.push_back(&events[static_cast<std::size_t>(i)]);
    data::Fm4nppBatch batch = data::pack_fm4npp_batch(ptrs);
    const int64_t n = batch.cu_seqlens.back(), w = 3 * o_.k;
    Out out;
    out.tokens = n;
    if (n == 0) return out;
    // Inputs: NeRF of (η_n, φ_n, r_n) and E_n.
    coords_.resize(static_cast<std::size_t>(3 * n));
    energy_.resize(static_cast<std::size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      energy_[i] = static_cast<T>(static_cast<float>(batch.points[4 * i]));
      for (int c = 0; c < 3; ++c) coords_[3 * i + c] = batch.points[4 * i + 1 + c];
    }
    const std::vector<float> nerf = data::nerf_encode(coords_, 3);
    nerf_.resize(nerf.size());
    for (std::size_t i = 0; i < nerf.size(); ++i) nerf_[i] = static_cast<T>(nerf[i]);
    targets_.assign(batch.knn.begin(), batch.knn.end());
    cu_ = std::move(batch.cu_seqlens);
    const bool deferred = ops::present(stats);
    if constexpr (HasGraphs<Backend>::value) {
      if (backward && graph_micro_ >= 0) {
        MAMBATRACK_CHECK(deferred, ShapeError, "pretrain-fm: graph mode needs deferred results");
        run_graph_step(grad_scale, stats);
        return out;
      }
    }
    View<const T, Device> y = encode(n);
    View<const T, Device> pred = head_.forward(hctx_, y);
    MaskedMseArgs<T, Device> m;
    m.predictions = pred;
    m.targets = upload(targets_, Shape{n, w}, targets_d_);
    if (backward) m.dpredictions = nn::ensure(dpred_d_, Shape{n, w});
    m.grad_scale = grad_scale;
    m.result = stats;
    const LossResult lr = Backend::masked_mse(m);
    if (!deferred) {
      out.count = lr.count;
      out.sum = lr.loss * static_cast<double>(lr.count);
    }
    // Deferred, the count is not known here: a batch without targets then back-propagates zeros.
    if (backward && (deferred || lr.count > 0)) {
      View<const T, Device> dy = head_.backward(hctx_, View<const T, Device>(dpred_d_.view()));
      backbone_.backward(bctx_, dy);  // the embedding is frozen and sees data: nothing further
    }
    return out;
  }

  // Embedding + backbone forward of the n points staged in nerf_, energy_, cu_ (eager, bctx_).
  View<const T, Device> encode(int64_t n) {
    int64_t longest = 0;  // a speed hint for the CUDA scan's choice of path
    for (std::size_t i = 1; i < cu_.size(); ++i) longest = std::max(longest, cu_[i] - cu_[i - 1]);
    backbone_.set_max_seqlen_hint(longest);
    View<const int64_t, Device> cu = upload(cu_, cu_d_);
    View<const T, Device> h0 = embedder_.forward(ectx_, upload(nerf_, Shape{n, data::nerf_dim(3)}, nerf_d_),
                                                 upload(energy_, Shape{n, 1}, energy_d_));
    return backbone_.forward_embedded(bctx_, h0, cu);
  }
  // Graph mode: zero points appended up to the budget as one more sequence (their targets are the
  // padding value, so they get no loss), uploaded into the graph's own buffers; then embedding,
  // backbone, head, loss and backward over the whole budget on the graph's contexts, run eagerly
  // the first time (every buffer allocated), captured the second, replayed from then on.
  void run_graph_step(double grad_scale, View<double, Device> stats) {
    if constexpr (HasGraphs<Backend>::value) {
      const int64_t budget = graph_.budget.tokens, f = data::nerf_dim(3), w = 3 * o_.k;
      nerf_.resize(static_cast<std::size_t>(budget * f), T(0));
      energy_.resize(static_cast<std::size_t>(budget), T(0));
      targets_.resize(static_cast<std::size_t>(budget * w), static_cast<mse_target_t<T>>(kMsePadValue));
      cu_.push_back(budget);
      View<const T, Device> nerf = upload(nerf_, Shape{budget, f}, graph_.nerf_d);
      View<const T, Device> energy = upload(energy_, Shape{budget, 1}, graph_.energy_d);
      View<const mse_target_t<T>, Device> targets = upload(targets_, Shape{budget, w}, graph_.targets_d);
      View<const int64_t, Device> cu = upload(cu_, graph_.cu_d);
      backbone_.set_max_seqlen_hint(budget);
      View<double, Device> result(graph_.result_d.data(), Shape{2});
      auto step = [&] {
        View<const T, Device> y = backbone_.forward_embedded(gctx_, embedder_.forward(gectx_, nerf, energy), cu);
        MaskedMseArgs<T, Device> m;
        m.predictions = head_.forward(ghctx_, y);
        m.targets = targets;
        m.dpredictions = nn::ensure(graph_.dpred_d, Shape{budget, w});
        m.grad_scale = grad_scale;
        m.result = result;
        Backend::masked_mse(m);
        backbone_.backward(gctx_, head_.backward(ghctx_, View<const T, Device>(graph_.dpred_d.view())));
      };
      Backend::set_dropout_step_offset(static_cast<uint64_t>(graph_micro_));
      // The gradient scale is part of the captured work: a different one captures again.
      if (graph_.step.ready() && graph_.scale != grad_scale) graph_.step = graph_t<Backend>();
      if (!graph_.warm) {
        step();
        graph_.warm = true;
      } else {
        if (!graph_.step.ready()) {
          Backend::capture(graph_.step, step);
          graph_.scale = grad_scale;
        }
        Backend::launch(graph_.step);
      }
      Backend::set_dropout_step_offset(0);
      Backend::copy(View<const double, Device>(result), stats);
    } else {
      (void)grad_scale;
      (void)stats;
      throw Error("FM4NPP graph mode needs a CUDA backend");
    }
  }

  template <class U>
  View<const U, Device> upload(const std::vector<U>& h, Shape shape, Tensor<U, Device>& d) {
    View<U, Device> v = nn::ensure(d, shape);
    Backend::to_device(View<const U>(h.data(), shape), v);
    return v;
  }
  View<const int64_t, Device> upload(const std::vector<int64_t>& h, Tensor<int64_t, Device>& d) {
    return upload(h, Shape{static_cast<int64_t>(h.size())}, d);
  }

  Fm4nppTaskOptions o_;
  std::vector<data::Fm4nppEvent> train_, val_;
  Store store_;
  nn::FrozenPointEmbedding<Backend> embedder_;
  nn::Backbone<Backend, Mixer> backbone_;
  nn::KnnHead<Backend> head_;
  data::BatchSampler sampler_;
  data::DataCursor cursor_;
  int64_t micro_ = 0;
  std::vector<double> baseline_mean_;
  typename nn::FrozenPointEmbedding<Backend>::Context ectx_;
  typename nn::Backbone<Backend, Mixer>::Context bctx_;
  typename nn::KnnHead<Backend>::Context hctx_;
  std::vector<float> coords_;
  std::vector<int64_t> cu_;
  std::vector<T> energy_, nerf_;
  std::vector<mse_target_t<T>> targets_;  // float under bf16 activations: the loss is fp32
  Tensor<int64_t, Device> cu_d_;
  Tensor<T, Device> energy_d_, nerf_d_, dpred_d_;
  Tensor<mse_target_t<T>, Device> targets_d_;
  // Deferred results: {loss, count} per micro-batch of the step, and their host copy.
  Tensor<double, Device> stats_d_;
  std::vector<double> stats_h_;
  int64_t pending_ = 0;   // micro-batches queued in this step
  bool in_step_ = false;  // between begin_step and finish_step
  // Graph mode (see MdmTask): buffers and contexts the graph holds, never reshaped.
  struct GraphState {
    GraphBudget budget;  // tokens == 0: graph mode off
    bool warm = false;
    double scale = 0;  // the gradient scale the graph was captured with
    Tensor<int64_t, Device> cu_d;
    Tensor<T, Device> nerf_d, energy_d, dpred_d;
    Tensor<mse_target_t<T>, Device> targets_d;
    Tensor<double, Device> result_d{Shape{2}};
    graph_t<Backend> step;  // the whole micro-batch
  };
  GraphState graph_;
  typename nn::FrozenPointEmbedding<Backend>::Context gectx_;
  typename nn::Backbone<Backend, Mixer>::Context gctx_;
  typename nn::KnnHead<Backend>::Context ghctx_;
  int64_t graph_micro_ = -1;  // this training micro-batch's index in graph mode, else -1
};

}  // namespace mambatrack::train
