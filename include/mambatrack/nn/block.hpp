// nn::Block<Backend, Mixer>: the reference's pre-norm residual block ("Add -> Norm -> Mixer"):
//   residual = hidden + residual (residual = hidden at layer 0);  h = norm(residual);
//   hidden = dropout(mixer(h))                          causal
//   hidden = dropout(mixer(h) + R(mixer_rev(R(h))))     bidirectional, R = reverse_within_sequences
// With checkpointing the block keeps only its outputs; its internals live in a scratch shared by
// all checkpointed blocks and are recomputed in backward.
//
// The Mixer interface (Mamba, Mamba2 and test mixers implement it), on packed (tokens, d_model):
//   using Backend = ...;  struct Context { std::size_t bytes() const; };   // saved activations + workspace
//   void register_params(typename Backend::Store&, const std::string& prefix); // prefix ends in "mixer."
//   void init(ParameterStore&, uint64_t seed, int n_layer) const;            // nn/init.hpp recipes
//   (V<U> = View<U, Backend::Device>: host or device memory, as the backend's)
//   V<const T> forward(Context&, V<const T> x, V<const int64_t> cu_seqlens);  // -> (tokens, d_model)
//   V<const T> backward(Context&, V<const T> dy);  // -> dx (overwritten); param grads accumulated
// forward may keep the view x (and cu_seqlens) until backward; the returned views stay valid
// until the next forward/backward on the same Context. A Mixer is copyable before registration.
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include "mambatrack/nn/workspace.hpp"
#include "mambatrack/nn/dropout.hpp"
#include "mambatrack/nn/norm.hpp"

namespace mambatrack::nn {

// Compile-time check of the Mixer interface above, with a message naming the missing piece.
template <class Backend, class Mixer>
struct MixerInterfaceCheck {
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  using Ctx = typename Mixer::Context;
  static_assert(std::is_copy_constructible_v<Mixer>, "Mixer: must be copyable (a block copies its prototype)");
  static_assert(std::is_default_constructible_v<Ctx> && std::is_move_constructible_v<Ctx> && std::is_move_assignable_v<Ctx>,
                "Mixer::Context: must be default-constructible and movable");
  static_assert(std::is_same_v<decltype(std::declval<const Ctx&>().bytes()), std::size_t>,
                "Mixer::Context: needs std::size_t bytes() const");
  static_assert(std::is_same_v<decltype(std::declval<Mixer&>().register_params(
                                   std::declval<typename Backend::Store&>(), std::declval<const std::string&>())),
                               void>,
                "Mixer: needs void register_params(Backend::Store&, const std::string& prefix)");
  static_assert(std::is_same_v<decltype(std::declval<Mixer&>().forward(std::declval<Ctx&>(), std::declval<View<const T, Device>>(),
                                                                       std::declval<View<const int64_t, Device>>())),
                               View<const T, Device>>,
                "Mixer: needs View<const T, Device> forward(Context&, View<const T, Device> x, View<const int64_t, Device> cu_seqlens)");
  static_assert(std::is_same_v<decltype(std::declval<Mixer&>().backward(std::declval<Ctx&>(), std::declval<View<const T, Device>>())),
                               View<const T, Device>>,
                "Mixer: needs View<const T, Device> backward(Context&, View<const T, Device> dy)");
  static constexpr bool value = true;
};

template <class Backend, class Mixer>
class Block {
  static_assert(MixerInterfaceCheck<Backend, Mixer>::value);

 public:
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  using Store = typename Backend::Store;

  // What backward needs besides the block's inputs and outputs; recomputable from them.
  struct Internals {
    Tensor<T, Device> normed, reversed_in, reversed_out, sum, dnormed, dmix_rev, dtmp;
    typename Mixer::Context mixer, mixer_rev;
    typename Dropout<Backend>::Context dropout;
    std::size_t bytes() const {
      return normed.bytes() + reversed_in.bytes() + reversed_out.bytes() + sum.bytes() + dnormed.bytes() +
             dmix_rev.bytes() + dtmp.bytes() + mixer.bytes() + mixer_rev.bytes() + dropout.bytes();
    }
  };
  struct Context {
    View<const T, Device> hidden_in, residual_in;
    View<const int64_t, Device> cu_seqlens;
    Tensor<T, Device> residual, hidden, dsum;  // outputs and the input gradient
    Internals own;
    Internals* scratch = nullptr;      // set: checkpointed, internals shared and recomputed
    Internals& internals() { return scratch ? *scratch : own; }
    const Internals& internals_const() const { return scratch ? *scratch : own; }
    // Bytes this block holds between forward and backward (a shared scratch is counted once by its owner).
    std::size_t bytes() const { return residual.bytes() + hidden.bytes() + dsum.bytes() + own.bytes(); }
  };

  Block() = default;
  Block(int64_t d_model, NormKind norm, double norm_eps, const Mixer& mixer, bool bidirectional, double dropout,
        uint64_t layer_id)
      : norm_(d_model, norm, norm_eps), mixer_(mixer), bidirectional_(bidirectional), dropout_(dropout, layer_id) {
    if (bidirectional_) mixer_rev_ = mixer;
  }

  // prefix "backbone.layers.{i}." -> norm.weight, mixer.*, mixer_rev.* (bidirectional).
  void register_params(Store& s, const std::string& prefix) {
    norm_.register_params(s, prefix + "norm.");
    mixer_.register_params(s, prefix + "mixer.");
    if (bidirectional_) mixer_rev_.register_params(s, prefix + "mixer_rev.");
  }
  void init(ParameterStore& s, uint64_t seed, int n_layer) const {
    norm_.init(s, seed);
    mixer_.init(s, seed, n_layer);
    if (bidirectional_) mixer_rev_.init(s, seed, n_layer);
  }
  void set_mode(bool training, uint64_t seed, uint64_t step) { dropout_.set_mode(training, seed, step); }

  // residual_in absent (null data) at layer 0. Returns the mixer branch output; ctx.residual holds
  // the new residual stream.
  View<const T, Device> forward(Context& ctx, View<const T, Device> hidden_in, View<const T, Device> residual_in,
                        View<const int64_t, Device> cu_seqlens) {
    ctx.hidden_in = hidden_in;
    ctx.residual_in = residual_in;
    ctx.cu_seqlens = cu_seqlens;
    View<T, Device> residual = ensure(ctx.residual, hidden_in.shape);
    Internals& in = ctx.internals();
    View<T, Device> normed = ensure(in.normed, hidden_in.shape);
    norm_.add_forward(hidden_in, residual_in, residual, normed);
    View<const T, Device> out = mix(in, cu_seqlens);
    View<T, Device> hidden = ensure(ctx.hidden, hidden_in.shape);
    Backend::copy(out, hidden);
    return hidden;
  }

  // dhidden: gradient on the block's mixer output; dresidual: on its residual output (absent when
  // unused). Returns the gradient of both hidden_in and residual_in (they enter as a sum).
  View<const T, Device> backward(Context& ctx, View<const T, Device> dhidden, View<const T, Device> dresidual) {
    Internals& in = ctx.internals();
    if (ctx.scratch) {  // recompute the internals from the saved residual
      View<T, Device> normed = ensure(in.normed, ctx.residual.shape());
      norm_.add_forward(ctx.hidden_in, ctx.residual_in, ensure(in.dtmp, ctx.residual.shape()), normed);
      mix(in, ctx.cu_seqlens);
    }
    View<const T, Device> dmix = dropout_.backward(in.dropout, dhidden);
    View<const T, Device> dnormed = mixer_.backward(in.mixer, dmix);
    if (bidirectional_) {
      View<T, Device> dsum_in = ensure(in.dnormed, dnormed.shape);
      Backend::copy(dnormed, dsum_in);
      View<T, Device> drev = ensure(in.dmix_rev, dmix.shape);
      Backend::reverse_within_sequences(dmix, ctx.cu_seqlens, drev);
      View<const T, Device> dx_rev = mixer_rev_.backward(in.mixer_rev, drev);
      View<T, Device> dtmp = ensure(in.dtmp, dmix.shape);
      Backend::reverse_within_sequences(dx_rev, ctx.cu_seqlens, dtmp);
      Backend::accumulate(View<const T, Device>(dtmp), dsum_in);
      dnormed = dsum_in;
    }
    View<T, Device> dsum = ensure(ctx.dsum, ctx.residual.shape());
    norm_.add_backward(ctx.residual.view(), dnormed, dresidual, dsum);
    return dsum;
  }

  bool bidirectional() const { return bidirectional_; }
  const Mixer& mixer() const { return mixer_; }

 private:
  View<const T, Device> mix(Internals& in, View<const int64_t, Device> cu) {
    View<const T, Device> normed = in.normed.view();
    View<const T, Device> out = mixer_.forward(in.mixer, normed, cu);
    if (bidirectional_) {
      View<T, Device> rin = ensure(in.reversed_in, normed.shape);
      Backend::reverse_within_sequences(normed, cu, rin);
      View<const T, Device> rout = mixer_rev_.forward(in.mixer_rev, View<const T, Device>(rin), cu);
      View<T, Device> back = ensure(in.reversed_out, normed.shape);
      Backend::reverse_within_sequences(rout, cu, back);
      View<T, Device> sum = ensure(in.sum, normed.shape);
      Backend::add(out, View<const T, Device>(back), sum);
      out = sum;
    }
    return dropout_.forward(in.dropout, out);
  }

  Norm<Backend> norm_;
  Mixer mixer_, mixer_rev_;
  bool bidirectional_ = false;
  Dropout<Backend> dropout_;
};

}  // namespace mambatrack::nn
