// nn::Embedding: y[t] = table[ids[t]], table (vocab, dim) as torch.nn.Embedding, optional padding
// index (its row gets no gradient). Parameter "<prefix>weight"; init N(0, 0.02) for every row,
// the PAD row included, as the reference's _init_weights redraws it. Gradients accumulated.
#pragma once

#include <string>
#include <type_traits>

#include "mambatrack/nn/workspace.hpp"
#include "mambatrack/nn/parameter_store.hpp"
#include "mambatrack/ops/embedding.hpp"
#include "mambatrack/nn/init.hpp"

namespace mambatrack::nn {

template <class Backend>
class Embedding {
 public:
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  using Store = typename Backend::Store;
  struct Context {
    View<const int64_t, Device> ids;
    Tensor<T, Device> y;
    std::size_t bytes() const { return y.bytes(); }
  };

  Embedding() = default;
  Embedding(int64_t vocab, int64_t dim, int64_t padding_idx = kNoPadding, bool no_decay = false)
      : vocab_(vocab), dim_(dim), padding_idx_(padding_idx), no_decay_(no_decay) {}

  void register_params(Store& s, const std::string& prefix) {
    store_ = &s;
    w_ = s.add(prefix + "weight", Shape{vocab_, dim_}, no_decay_);
  }
  void init(ParameterStore& s, uint64_t seed, double std = 0.02) const {
    Philox rng = param_rng(seed, s.info(w_).name);
    init_normal(s.param(w_), 0.0, std, rng);
  }

  View<const T, Device> forward(Context& ctx, View<const int64_t, Device> ids) {
    ctx.ids = ids;
    View<T, Device> y = ensure(ctx.y, Shape{ids.numel(), dim_});
    Backend::embedding_fwd({ids, store_->param(w_), y, padding_idx_});
    return y;
  }
  void backward(Context& ctx, View<const T, Device> dy) {
    Backend::embedding_bwd({ctx.ids, dy, store_->grad(w_), padding_idx_});
  }

  ParamHandle weight() const { return w_; }
  int64_t vocab() const { return vocab_; }
  int64_t dim() const { return dim_; }

 private:
  int64_t vocab_ = 0, dim_ = 0, padding_idx_ = kNoPadding;
  bool no_decay_ = false;
  Store* store_ = nullptr;
  ParamHandle w_;
};

// Learned absolute position embedding (MAMBA-PT): row p of a (max_len, dim) table added for the
// token at position p within its own packed sequence (p = t − cu_seqlens[s]).
template <class Backend>
class PositionEmbedding {
 public:
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  using Store = typename Backend::Store;
  struct Context {
    Tensor<int64_t, Device> pos;
    typename Embedding<Backend>::Context table;
    std::size_t bytes() const { return pos.bytes() + table.bytes(); }
  };

  PositionEmbedding() = default;
  PositionEmbedding(int64_t max_len, int64_t dim) : table_(max_len, dim) {}

  void register_params(Store& s, const std::string& prefix) { table_.register_params(s, prefix); }
  void init(ParameterStore& s, uint64_t seed) const { table_.init(s, seed); }

  // Host backends: the token count and the table size are checked from the host cu_seqlens.
  View<const T, Device> forward(Context& ctx, View<const int64_t, Device> cu_seqlens) {
    static_assert(std::is_same_v<Device, Host>, "PositionEmbedding: on a device, pass the token count");
    for (int64_t s = 0; s + 1 < cu_seqlens.numel(); ++s)
      MAMBATRACK_CHECK_SHAPE(cu_seqlens[s + 1] - cu_seqlens[s] <= table_.vocab(), "position embedding: sequence ", s,
                             " has ", cu_seqlens[s + 1] - cu_seqlens[s], " tokens, more than the ", table_.vocab(),
                             " positions of the table (max_positions)");
    return forward(ctx, cu_seqlens, cu_seqlens[cu_seqlens.numel() - 1]);
  }
  // Any device: `tokens` = cu_seqlens[batch] (cu_seqlens is not read by the host). On a device a
  // sequence longer than max_positions is caught by the embedding op's id check instead.
  View<const T, Device> forward(Context& ctx, View<const int64_t, Device> cu_seqlens, int64_t tokens) {
    View<int64_t, Device> pos = ensure(ctx.pos, Shape{tokens});
    Backend::sequence_positions(cu_seqlens, pos);
    return table_.forward(ctx.table, View<const int64_t, Device>(pos));
  }
  void backward(Context& ctx, View<const T, Device> dy) { table_.backward(ctx.table, dy); }
  ParamHandle weight() const { return table_.weight(); }

 private:
  Embedding<Backend> table_;
};

}  // namespace mambatrack::nn
