// Task heads on the backbone's (tokens, d_model) output:
//   LmHead    logits = x·Eᵀ, E tied to backbone.embedding.weight or its own lm_head.weight (no bias)
//   MdmHead   MAMBA-PT: Linear(d→h) → GELU → LayerNorm(h) → Linear(h→V)   (mdm_head.{dense,norm,decoder}.*)
//   NtpHead   MAMBA-PT: e_k = mean over sequence k's tokens; concat(e1, e2) → Linear(2d→h) → GELU →
//             Dropout → Linear(h→h/2) → GELU → Linear(h/2→2)                (ntp_head.{fc1,fc2,fc3}.*)
//   KnnHead   FM4NPP: Linear(d → 3·k) with bias                             (knn_head.*)
#pragma once

#include <string>

#include "mambatrack/nn/activation.hpp"
#include "mambatrack/nn/dropout.hpp"
#include "mambatrack/nn/linear.hpp"
#include "mambatrack/nn/norm.hpp"

namespace mambatrack::nn {

template <class Backend>
class LmHead {
 public:
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  using Store = typename Backend::Store;
  using Context = typename Linear<Backend>::Context;

  LmHead() = default;
  LmHead(int64_t d_model, int64_t vocab) : d_(d_model), vocab_(vocab) {}

  // tied: tied_weight is the (vocab, d_model) embedding; its gradient receives the head's too.
  void register_params(Store& s, const std::string& name = "lm_head.weight", ParamHandle tied_weight = {}) {
    store_ = &s;
    w_ = tied_weight.valid() ? tied_weight : s.add(name, Shape{vocab_, d_}, false);
    tied_ = tied_weight.valid();
  }
  void init(ParameterStore& s, uint64_t seed) const {
    if (tied_) return;
    Philox rng = param_rng(seed, s.info(w_).name);
    init_fan_in_uniform(s.param(w_), d_, rng);
  }
  View<const T, Device> forward(Context& ctx, View<const T, Device> x) {
    ctx.x = x;
    View<T, Device> y = ensure(ctx.y, Shape{x.dim(0), vocab_});
    Backend::linear_fwd({x, store_->param(w_), View<const T, Device>(), y});
    return y;
  }
  View<const T, Device> backward(Context& ctx, View<const T, Device> dy) {
    View<T, Device> dx = ensure(ctx.dx, ctx.x.shape);
    Backend::linear_bwd({ctx.x, store_->param(w_), dy, dx, store_->grad(w_), View<T, Device>()});
    return dx;
  }
  bool tied() const { return tied_; }

 private:
  int64_t d_ = 0, vocab_ = 0;
  bool tied_ = false;
  Store* store_ = nullptr;
  ParamHandle w_;
};

template <class Backend>
class MdmHead {
 public:
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  using Store = typename Backend::Store;
  struct Context {
    typename Linear<Backend>::Context dense, decoder;
    typename Gelu<Backend>::Context gelu;
    typename Norm<Backend>::Context norm;
    std::size_t bytes() const { return dense.bytes() + decoder.bytes() + gelu.bytes() + norm.bytes(); }
  };
  MdmHead() = default;
  MdmHead(int64_t d_model, int64_t hidden, int64_t vocab, double norm_eps = 1e-5)
      : dense_(d_model, hidden, true), norm_(hidden, NormKind::kLayer, norm_eps), decoder_(hidden, vocab, true) {}

  void register_params(Store& s, const std::string& prefix = "mdm_head.") {
    dense_.register_params(s, prefix + "dense.");
    norm_.register_params(s, prefix + "norm.");
    decoder_.register_params(s, prefix + "decoder.");
  }
  void init(ParameterStore& s, uint64_t seed) const {
    dense_.init(s, seed);
    norm_.init(s, seed);
    decoder_.init(s, seed);
  }
  // x: the rows to classify (e.g. the masked positions), (rows, d_model) -> (rows, vocab).
  View<const T, Device> forward(Context& ctx, View<const T, Device> x) {
    return decoder_.forward(ctx.decoder, norm_.forward(ctx.norm, gelu_.forward(ctx.gelu, dense_.forward(ctx.dense, x))));
  }
  View<const T, Device> backward(Context& ctx, View<const T, Device> dy) {
    return dense_.backward(ctx.dense, gelu_.backward(ctx.gelu, norm_.backward(ctx.norm, decoder_.backward(ctx.decoder, dy))));
  }

 private:
  Linear<Backend> dense_;
  Gelu<Backend> gelu_;
  Norm<Backend> norm_;
  Linear<Backend> decoder_;
};

template <class Backend>
class NtpHead {
 public:
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  using Store = typename Backend::Store;
  struct Context {
    View<const int64_t, Device> cu1, cu2;
    int64_t tokens1 = 0, tokens2 = 0;
    Tensor<T, Device> pooled1, pooled2, pair, dpooled1, dpooled2, dx1, dx2;
    typename Linear<Backend>::Context fc1, fc2, fc3;
    typename Gelu<Backend>::Context g1, g2;
    typename Dropout<Backend>::Context drop;
    std::size_t bytes() const {
      return pooled1.bytes() + pooled2.bytes() + pair.bytes() + dpooled1.bytes() + dpooled2.bytes() + dx1.bytes() +
             dx2.bytes() + fc1.bytes() + fc2.bytes() + fc3.bytes() + g1.bytes() + g2.bytes() + drop.bytes();
    }
  };
  NtpHead() = default;
  NtpHead(int64_t d_model, int64_t hidden, double dropout = 0.1, uint64_t dropout_id = 1000)
      : d_(d_model), fc1_(2 * d_model, hidden, true), fc2_(hidden, hidden / 2, true), fc3_(hidden / 2, 2, true),
        drop_(dropout, dropout_id) {}

  void register_params(Store& s, const std::string& prefix = "ntp_head.") {
    fc1_.register_params(s, prefix + "fc1.");
    fc2_.register_params(s, prefix + "fc2.");
    fc3_.register_params(s, prefix + "fc3.");
  }
  void init(ParameterStore& s, uint64_t seed) const {
    fc1_.init(s, seed);
    fc2_.init(s, seed);
    fc3_.init(s, seed);
  }
  void set_mode(bool training, uint64_t seed, uint64_t step) { drop_.set_mode(training, seed, step); }

  // x1, x2: backbone outputs of the two tracks of each pair, packed with cu1, cu2 (same batch).
  // Returns (batch, 2) logits.
  View<const T, Device> forward(Context& ctx, View<const T, Device> x1, View<const int64_t, Device> cu1, View<const T, Device> x2,
                        View<const int64_t, Device> cu2) {
    const int64_t b = cu1.numel() - 1;
    MAMBATRACK_CHECK_SHAPE(cu2.numel() - 1 == b, "ntp head: ", b, " first tracks but ", cu2.numel() - 1, " second tracks");
    ctx.cu1 = cu1;
    ctx.cu2 = cu2;
    ctx.tokens1 = x1.dim(0);
    ctx.tokens2 = x2.dim(0);
    View<T, Device> p1 = ensure(ctx.pooled1, Shape{b, d_}), p2 = ensure(ctx.pooled2, Shape{b, d_});
    Backend::mean_pool(x1, cu1, p1);
    Backend::mean_pool(x2, cu2, p2);
    View<T, Device> pair = ensure(ctx.pair, Shape{b, 2 * d_});
    Backend::copy_columns(View<const T, Device>(p1), pair, 0);
    Backend::copy_columns(View<const T, Device>(p2), pair, d_);
    View<const T, Device> h = g1_.forward(ctx.g1, fc1_.forward(ctx.fc1, pair));
    h = g2_.forward(ctx.g2, fc2_.forward(ctx.fc2, drop_.forward(ctx.drop, h)));
    return fc3_.forward(ctx.fc3, h);
  }
  // Returns the gradients of x1 and x2.
  std::pair<View<const T, Device>, View<const T, Device>> backward(Context& ctx, View<const T, Device> dlogits) {
    View<const T, Device> d = fc2_.backward(ctx.fc2, g2_.backward(ctx.g2, fc3_.backward(ctx.fc3, dlogits)));
    View<const T, Device> dpair = fc1_.backward(ctx.fc1, g1_.backward(ctx.g1, drop_.backward(ctx.drop, d)));
    const int64_t b = dpair.dim(0);
    View<T, Device> dp1 = ensure(ctx.dpooled1, Shape{b, d_}), dp2 = ensure(ctx.dpooled2, Shape{b, d_});
    Backend::take_columns(dpair, dp1, 0);
    Backend::take_columns(dpair, dp2, d_);
    View<T, Device> dx1 = ensure(ctx.dx1, Shape{ctx.tokens1, d_}), dx2 = ensure(ctx.dx2, Shape{ctx.tokens2, d_});
    Backend::mean_pool_bwd(View<const T, Device>(dp1), ctx.cu1, dx1);
    Backend::mean_pool_bwd(View<const T, Device>(dp2), ctx.cu2, dx2);
    return {dx1, dx2};
  }

 private:
  int64_t d_ = 0;
  Linear<Backend> fc1_, fc2_, fc3_;
  Gelu<Backend> g1_, g2_;
  Dropout<Backend> drop_;
};

// FM4NPP's k-NNN regression head: Linear(d_model → 3·k), with bias.
template <class Backend>
class KnnHead : public Linear<Backend> {
 public:
  KnnHead() = default;
  KnnHead(int64_t d_model, int64_t k) : Linear<Backend>(d_model, 3 * k, true) {}
  void register_params(typename Backend::Store& s, const std::string& prefix = "knn_head.") {
    Linear<Backend>::register_params(s, prefix);
  }
};

}  // namespace mambatrack::nn
