// nn::Backbone<Backend, Mixer>: the reference MixerModel on packed sequences:
//   h0 = embedding(ids) [+ position_embedding(pos)]  |  input_proj(features)  |  given embeddings
//   (hidden, residual) = Block_i(hidden, residual) for i < n_layer;  y = norm_f(hidden + residual)
// causal or bidirectional blocks, optional dropout on each mixer output, optional activation
// checkpointing per block. Parameter names: backbone.embedding.weight,
// backbone.position_embedding.weight, backbone.input_proj.{weight,bias}, backbone.layers.{i}.norm.weight
// (.bias for LayerNorm), backbone.layers.{i}.mixer.*, backbone.layers.{i}.mixer_rev.*, backbone.norm_f.weight.
#pragma once

#include <string>
#include <type_traits>
#include <vector>

#include "mambatrack/nn/block.hpp"
#include "mambatrack/nn/embedding.hpp"
#include "mambatrack/nn/linear.hpp"
#include "mambatrack/nn/host_kernels.hpp"

namespace mambatrack::nn {

enum class BackboneInput {
  kTokens,    // token ids -> embedding (vocab, d_model)
  kFeatures,  // continuous features (tokens, in_features) -> input_proj Linear
  kEmbedded,  // the caller passes (tokens, d_model) embeddings (e.g. FrozenPointEmbedding)
};

struct BackboneConfig {
  int64_t d_model = 0;
  int n_layer = 0;
  BackboneInput input = BackboneInput::kTokens;
  int64_t vocab = 0;                   // kTokens
  int64_t padding_idx = kNoPadding;    // kTokens
  bool embedding_no_decay = false;     // kTokens
  int64_t max_positions = 0;           // > 0: learned absolute position embedding (kTokens)
  int64_t in_features = 0;             // kFeatures
  bool input_bias = true;              // kFeatures
  NormKind norm = NormKind::kRms;
  double norm_eps = 1e-5;
  bool bidirectional = false;
  double dropout = 0.0;                // on each mixer output
  bool checkpointing = false;          // recompute each block's internals in backward
};

template <class Backend, class Mixer>
class Backbone {
 public:
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  using Store = typename Backend::Store;
  using BlockT = Block<Backend, Mixer>;

  struct Context {
    View<const int64_t, Device> cu_seqlens;
    typename Embedding<Backend>::Context embedding;
    typename PositionEmbedding<Backend>::Context position;
    typename Linear<Backend>::Context input_proj;
    Tensor<T, Device> h0, residual_f, y, dsum_f;
    std::vector<typename BlockT::Context> blocks;
    typename BlockT::Internals scratch;  // shared by checkpointed blocks
    View<const T, Device> input;                 // the block-0 input
    std::size_t bytes() const {
      std::size_t n = embedding.bytes() + position.bytes() + input_proj.bytes() + h0.bytes() + residual_f.bytes() +
                      y.bytes() + dsum_f.bytes() + scratch.bytes();
      for (const auto& b : blocks) n += b.bytes();
      return n;
    }
  };

  Backbone() = default;
  Backbone(const BackboneConfig& c, const Mixer& mixer) : c_(c) {
    MAMBATRACK_CHECK(c.d_model > 0 && c.n_layer > 0, ConfigError, "backbone: d_model (", c.d_model, ") and n_layer (",
                     c.n_layer, ") must be positive");
    if (c.input == BackboneInput::kTokens) {
      MAMBATRACK_CHECK(c.vocab > 0, ConfigError, "backbone: token input needs vocab > 0");
      embedding_ = Embedding<Backend>(c.vocab, c.d_model, c.padding_idx, c.embedding_no_decay);
      if (c.max_positions > 0) position_ = PositionEmbedding<Backend>(c.max_positions, c.d_model);
    } else if (c.input == BackboneInput::kFeatures) {
      MAMBATRACK_CHECK(c.in_features > 0, ConfigError, "backbone: feature input needs in_features > 0");
      input_proj_ = Linear<Backend>(c.in_features, c.d_model, c.input_bias);
    }
    for (int i = 0; i < c.n_layer; ++i)
      blocks_.emplace_back(c.d_model, c.norm, c.norm_eps, mixer, c.bidirectional, c.dropout, static_cast<uint64_t>(i));
    norm_f_ = Norm<Backend>(c.d_model, c.norm, c.norm_eps);
  }

  void register_params(Store& s, const std::string& prefix = "backbone.") {
    if (c_.input == BackboneInput::kTokens) {
      embedding_.register_params(s, prefix + "embedding.");
      if (c_.max_positions > 0) position_.register_params(s, prefix + "position_embedding.");
    } else if (c_.input == BackboneInput::kFeatures) {
      input_proj_.register_params(s, prefix + "input_proj.");
    }
    for (int i = 0; i < c_.n_layer; ++i) blocks_[i].register_params(s, prefix + "layers." + std::to_string(i) + ".");
    norm_f_.register_params(s, prefix + "norm_f.");
  }
  void init(ParameterStore& s, uint64_t seed) const {
    if (c_.input == BackboneInput::kTokens) {
      embedding_.init(s, seed);
      if (c_.max_positions > 0) position_.init(s, seed);
    } else if (c_.input == BackboneInput::kFeatures) {
      input_proj_.init(s, seed);
    }
    for (const auto& b : blocks_) b.init(s, seed, c_.n_layer);
    norm_f_.init(s, seed);
  }
  // Dropout masks depend on (seed, step, layer); eval mode turns dropout off.
  void set_mode(bool training, uint64_t seed = 0, uint64_t step = 0) {
    for (auto& b : blocks_) b.set_mode(training, seed, step);
  }
  void set_checkpointing(bool on) { c_.checkpointing = on; }

  View<const T, Device> forward_tokens(Context& ctx, View<const int64_t, Device> ids, View<const int64_t, Device> cu_seqlens) {
    MAMBATRACK_CHECK(c_.input == BackboneInput::kTokens, ConfigError, "backbone: built for feature input, given token ids");
    check_cu(cu_seqlens, ids.numel());
    View<const T, Device> h = embedding_.forward(ctx.embedding, ids);
    if (c_.max_positions > 0) {
      View<const T, Device> p = position_forward(ctx, cu_seqlens, ids.numel());
      View<T, Device> sum = ensure(ctx.h0, h.shape);
      Backend::add(h, p, sum);
      h = sum;
    }
    return run_blocks(ctx, h, cu_seqlens);
  }
  View<const T, Device> forward_features(Context& ctx, View<const T, Device> x, View<const int64_t, Device> cu_seqlens) {
    MAMBATRACK_CHECK(c_.input == BackboneInput::kFeatures, ConfigError, "backbone: not built for feature input");
    check_cu(cu_seqlens, x.dim(0));
    return run_blocks(ctx, input_proj_.forward(ctx.input_proj, x), cu_seqlens);
  }
  View<const T, Device> forward_embedded(Context& ctx, View<const T, Device> h0, View<const int64_t, Device> cu_seqlens) {
    MAMBATRACK_CHECK_SHAPE(h0.rank() == 2 && h0.dim(1) == c_.d_model, "backbone: embedded input ", h0.shape,
                           ", expected (tokens, ", c_.d_model, ")");
    check_cu(cu_seqlens, h0.dim(0));
    return run_blocks(ctx, h0, cu_seqlens);
  }

  // dy: gradient of the final normalised output. Accumulates every parameter gradient; returns
  // the gradient of the block-0 input (the embeddings), valid until the next backward.
  View<const T, Device> backward(Context& ctx, View<const T, Device> dy) {
    const int n = c_.n_layer;
    View<T, Device> dsum = ensure(ctx.dsum_f, dy.shape);
    norm_f_.add_backward(ctx.residual_f.view(), dy, View<const T, Device>(), dsum);
    View<const T, Device> d = dsum;
    for (int i = n - 1; i >= 0; --i) d = blocks_[i].backward(ctx.blocks[i], d, d);
    if (c_.input == BackboneInput::kTokens) {
      embedding_.backward(ctx.embedding, d);
      if (c_.max_positions > 0) position_.backward(ctx.position, d);
    } else if (c_.input == BackboneInput::kFeatures) {
      input_proj_.backward(ctx.input_proj, d, false);
    }
    return d;
  }

  // Every layer's outputs after forward: the mixer branch (FM4NPP's z) and the residual stream.
  View<const T, Device> layer_output(const Context& ctx, int i) const { return ctx.blocks.at(i).hidden.view(); }
  View<const T, Device> layer_residual(const Context& ctx, int i) const { return ctx.blocks.at(i).residual.view(); }

  const BackboneConfig& config() const { return c_; }
  const Embedding<Backend>& embedding() const { return embedding_; }
  BlockT& block(int i) { return blocks_.at(i); }

 private:
  // cu_seqlens is validated on the host backends; a device backend cannot read it without a sync
  // (the caller validates it on the host before uploading, as the CUDA ops require).
  static void check_cu(View<const int64_t, Device> cu, int64_t tokens) {
    if constexpr (std::is_same_v<Device, Host>) host::check_cu_seqlens(cu, tokens, "backbone");
    (void)cu;
    (void)tokens;
  }
  View<const T, Device> position_forward(Context& ctx, View<const int64_t, Device> cu, int64_t tokens) {
    if constexpr (std::is_same_v<Device, Host>) return position_.forward(ctx.position, cu);
    else return position_.forward(ctx.position, cu, tokens);
  }
  View<const T, Device> run_blocks(Context& ctx, View<const T, Device> h, View<const int64_t, Device> cu) {
    ctx.cu_seqlens = cu;
    ctx.input = h;
    ctx.blocks.resize(c_.n_layer);
    View<const T, Device> hidden = h, residual;
    for (int i = 0; i < c_.n_layer; ++i) {
      auto& bc = ctx.blocks[i];
      bc.scratch = c_.checkpointing ? &ctx.scratch : nullptr;
      if (c_.checkpointing) bc.own = typename BlockT::Internals();  // release what a non-checkpointed step kept
      hidden = blocks_[i].forward(bc, hidden, residual, cu);
      residual = bc.residual.view();
    }
    View<T, Device> rf = ensure(ctx.residual_f, h.shape);
    View<T, Device> y = ensure(ctx.y, h.shape);
    norm_f_.add_forward(hidden, residual, rf, y);
    return y;
  }

  BackboneConfig c_;
  Embedding<Backend> embedding_;
  PositionEmbedding<Backend> position_;
  Linear<Backend> input_proj_;
  std::vector<BlockT> blocks_;
  Norm<Backend> norm_f_;
};

}  // namespace mambatrack::nn
