// The Mamba (v1) mixer of mamba_ssm.modules.mamba_simple.Mamba on packed (tokens, d_model) input:
//   [x, z] = h·in_projᵀ;  u = silu(causal_conv1d(x) + b);  [dt, B, C] = u·x_projᵀ;  δ = dt·dt_projᵀ;
//   y = selective_scan(u, δ, A = −exp(A_log), B, C, D, z, delta_bias = dt_proj.bias, softplus);
//   out = y·out_projᵀ,  d_inner = expand·d_model, dt_rank = ceil(d_model / 16).
// MambaMixer<Backend> holds the run-time sizes (the ops dispatch on d_state/d_conv themselves);
// Mamba<DState, DConv, Expand, Backend> names one compiled configuration (DESIGN.md §5).
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/supported.hpp"
#include "mambatrack/core/tensor.hpp"
#include "mambatrack/nn/init.hpp"
#include "mambatrack/nn/parameter_store.hpp"
#include "mambatrack/ops/args.hpp"
#include "mambatrack/ops/causal_conv1d.hpp"
#include "mambatrack/ops/linear.hpp"
#include "mambatrack/ops/selective_scan.hpp"

namespace mambatrack::nn {

// The reference module's keyword arguments that are not template parameters.
struct MambaOptions {
  double dt_min = 1e-3, dt_max = 0.1, dt_init_floor = 1e-4, dt_scale = 1.0;
  // Tokens between the scan's saved states (memory/recompute only); 0: the backend's choice
  // (Backend::kScanChunk where it names one — the CUDA backends' tiled backward wants <= 16 — else 64).
  int64_t scan_chunk = 0;
};

namespace mamba_detail {
// Resizes a workspace only when its shape changes (no allocation in the steady state).
template <class T, class Device>
View<T, Device> ensure(Tensor<T, Device>& t, const Shape& shape) {
  if (!(t.shape() == shape)) t = Tensor<T, Device>(shape);
  return t.view();
}
inline double softplus(double x) { return x <= 20.0 ? std::log1p(std::exp(x)) : x; }
inline double silu(double x) { return x / (1.0 + std::exp(-x)); }
}  // namespace mamba_detail

// The scan chunk a backend prefers (MambaOptions::scan_chunk = 0).
template <class B, class = void>
struct BackendScanChunk {
  static constexpr int64_t value = 64;
};
template <class B>
struct BackendScanChunk<B, std::void_t<decltype(B::kScanChunk)>> {
  static constexpr int64_t value = B::kScanChunk;
};
template <class B>
constexpr int64_t backend_scan_chunk() {
  return BackendScanChunk<B>::value;
}

// Backend: Scalar, Device, Store (add/param/grad), linear_fwd/bwd, accumulate, fill,
// causal_conv1d_fwd/bwd, selective_scan_fwd/bwd, neg_exp, mul_accumulate (nn/ssm_backend.hpp).
template <class Backend_>
class MambaMixer {
 public:
  using Backend = Backend_;
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  using Store = typename Backend::Store;

  // The backward's internal workspaces: nothing in them outlives one backward call, so all the
  // mixers of a backbone may use one set (nn::share_backward_workspace): a deep model then holds
  // one layer's worth instead of one per layer.
  struct BackwardWorkspace {
    Tensor<T, Device> dy, du, ddt_low, dB, dC, ddelta, dz, dxin, dA, tmp_inner, tmp_model;
    std::size_t bytes() const {
      std::size_t n = 0;
      for (const auto* t : {&dy, &du, &ddt_low, &dB, &dC, &ddelta, &dz, &dxin, &dA, &tmp_inner, &tmp_model})
        n += t->bytes();
      return n;
    }
  };
  // Saved activations of one forward (all (tokens, ·)), the returned input gradient and the
  // backward workspace (own, or shared); reused.
  struct Context {
    View<const T, Device> x;  // the forward input, owned by the caller
    SelectiveScanInputs<T, Device> scan;
    Tensor<T, Device> xin, z, u, dt_low, B, C, delta, A, y, out;
    Tensor<scan_state_t<T>, Device> saved_states;  // fp32 under bfloat16 storage
    Tensor<T, Device> dx;
    std::shared_ptr<BackwardWorkspace> backward_workspace = std::make_shared<BackwardWorkspace>();
    std::size_t bytes() const {
      std::size_t n = backward_workspace->bytes() + saved_states.bytes();
      for (const auto* t : {&xin, &z, &u, &dt_low, &B, &C, &delta, &A, &y, &out, &dx}) n += t->bytes();
      return n;
    }
  };

  // Recurrent state of `batch` sequences (mamba_ssm's inference cache): conv (batch, d_inner,
  // d_conv) holds the last d_conv pre-conv inputs, oldest first; ssm (batch, d_inner, d_state).
  struct State {
    Tensor<T> conv, ssm;
    Tensor<T> xin, z, u, dt_low, B, C, delta, y;  // step workspaces
    int64_t batch() const { return ssm.dim(0); }
  };

  MambaMixer() = default;
  MambaMixer(int64_t d_model, int d_state, int d_conv, int expand, MambaOptions opt = {})
      : d_model_(d_model), d_state_(d_state), d_conv_(d_conv), expand_(expand), opt_(opt) {
    MAMBATRACK_CHECK(d_model >= 1, ConfigError, "Mamba: d_model must be >= 1, got ", d_model);
    MAMBATRACK_CHECK(SupportedDState::contains(d_state), ConfigError, "Mamba: d_state = ", d_state,
                     " is not compiled; supported: ", SupportedDState::str());
    MAMBATRACK_CHECK(SupportedDConv::contains(d_conv), ConfigError, "Mamba: d_conv = ", d_conv,
                     " is not compiled; supported: ", SupportedDConv::str());
    MAMBATRACK_CHECK(SupportedExpand::contains(expand), ConfigError, "Mamba: expand = ", expand,
                     " is not compiled; supported: ", SupportedExpand::str());
    MAMBATRACK_CHECK(opt.dt_min > 0 && opt.dt_max >= opt.dt_min && opt.dt_init_floor >= 0, ConfigError,
                     "Mamba: need 0 < dt_min <= dt_max and dt_init_floor >= 0, got dt_min ", opt.dt_min,
                     ", dt_max ", opt.dt_max, ", dt_init_floor ", opt.dt_init_floor);
    d_inner_ = static_cast<int64_t>(expand) * d_model;
    dt_rank_ = (d_model + 15) / 16;
  }
  virtual ~MambaMixer() = default;
  MambaMixer(const MambaMixer&) = default;
  MambaMixer& operator=(const MambaMixer&) = default;

  // Names under `prefix` (e.g. "backbone.layers.0.mixer."), the reference's state-dict names and
  // shapes; conv1d.weight is (d_inner, d_conv) in memory and (d_inner, 1, d_conv) on disk.
  void register_params(Store& s, const std::string& prefix) {
    store_ = &s;
    const int64_t Di = d_inner_, N = d_state_, R = dt_rank_;
    in_proj_ = s.add(prefix + "in_proj.weight", Shape{2 * Di, d_model_});
    conv_w_ = s.add(prefix + "conv1d.weight", Shape{Di, d_conv_}, false, {Di, 1, d_conv_});
    conv_b_ = s.add(prefix + "conv1d.bias", Shape{Di}, true);
    x_proj_ = s.add(prefix + "x_proj.weight", Shape{R + 2 * N, Di});
    dt_w_ = s.add(prefix + "dt_proj.weight", Shape{Di, R});
    dt_b_ = s.add(prefix + "dt_proj.bias", Shape{Di}, true);
    a_log_ = s.add(prefix + "A_log", Shape{Di, N}, true);
    d_ = s.add(prefix + "D", Shape{Di}, true);
    out_proj_ = s.add(prefix + "out_proj.weight", Shape{d_model_, Di});
  }

  // mamba_ssm's initialisation (nn/init.hpp), each parameter from its own name's Philox stream.
  // n_layer > 0 rescales out_proj.weight by 1/sqrt(n_layer) (MambaLMHeadModel's _init_weights).
  void init(ParameterStore& s, uint64_t seed, int n_layer) const {
    auto rng = [&](ParamHandle h) { return param_rng(seed, s.info(h).name); };
    Philox r_in = rng(in_proj_), r_cw = rng(conv_w_), r_cb = rng(conv_b_), r_x = rng(x_proj_), r_dw = rng(dt_w_),
           r_db = rng(dt_b_), r_out = rng(out_proj_);
    init_fan_in_uniform(s.param(in_proj_), d_model_, r_in);
    init_fan_in_uniform(s.param(conv_w_), d_conv_, r_cw);  // Conv1d fan_in = in_channels/groups · d_conv
    init_fan_in_uniform(s.param(conv_b_), d_conv_, r_cb);
    init_fan_in_uniform(s.param(x_proj_), d_inner_, r_x);
    const double dt_std = std::pow(static_cast<double>(dt_rank_), -0.5) * opt_.dt_scale;
    init_uniform(s.param(dt_w_), -dt_std, dt_std, r_dw);
    init_dt_bias(s.param(dt_b_), opt_.dt_min, opt_.dt_max, opt_.dt_init_floor, r_db);
    init_s4d_real_A_log(s.param(a_log_));
    init_constant(s.param(d_), 1.0f);
    View<float> w_out = s.param(out_proj_);
    init_fan_in_uniform(w_out, d_inner_, r_out);
    if (n_layer > 0) {
      const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n_layer)));
      for (int64_t i = 0; i < w_out.numel(); ++i) w_out[i] *= scale;
    }
  }

  // x: (tokens, d_model), cu_seqlens: (batch + 1). Returns (tokens, d_model), valid until the next
  // forward on ctx. x and cu_seqlens must stay alive until backward.
  View<const T, Device> forward(Context& c, View<const T, Device> x, View<const int64_t, Device> cu_seqlens) {
    return forward_impl(c, x, cu_seqlens, View<scan_state_t<T>, Device>());
  }

  // The forward that also leaves in `s` (one slot per sequence of cu_seqlens) the recurrent state
  // after each sequence's last token, so step() continues every sequence (prompt prefill, as
  // mamba_ssm's forward with inference_params). Host backends only.
  View<const T> prefill(Context& c, State& s, View<const T> x, View<const int64_t> cu_seqlens) {
    static_assert(std::is_same_v<Device, Host>, "Mamba::prefill runs on the host");
    MAMBATRACK_CHECK_SHAPE(cu_seqlens.rank() == 1 && cu_seqlens.dim(0) == s.batch() + 1, "Mamba prefill: the state holds ",
                           s.batch(), " sequences but cu_seqlens ", cu_seqlens.shape, " describes another count");
    View<const T> out = forward_impl(c, x, cu_seqlens, s.ssm.view());
    const int64_t Di = d_inner_, K = d_conv_;
    for (int64_t b = 0; b < s.batch(); ++b)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t t = cu_seqlens[b + 1] - K + k;  // the last K inputs, zeros before the start
        for (int64_t d = 0; d < Di; ++d) s.conv.at(b, d, k) = t >= cu_seqlens[b] ? c.xin.at(t, d) : T(0);
      }
    return out;
  }


  // dout: (tokens, d_model). Returns dx (overwritten; valid until the next backward on ctx) and
  // accumulates every parameter gradient into the store.
  View<const T, Device> backward(Context& c, View<const T, Device> dout) {
    using mamba_detail::ensure;
    check_registered("backward");
    const int64_t tok = c.x.dim(0), Di = d_inner_, N = d_state_, R = dt_rank_;
    MAMBATRACK_CHECK_SHAPE(dout.rank() == 2 && dout.dim(0) == tok && dout.dim(1) == d_model_,
                           "Mamba backward: dout must be (", tok, ", ", d_model_, ") like the forward output, got ",
                           dout.shape);
    View<const T, Device> w_in = P(in_proj_), w_x = P(x_proj_);
    View<T, Device> g_in = G(in_proj_), g_x = G(x_proj_);
    BackwardWorkspace& w = *c.backward_workspace;

    Backend::linear_bwd({c.y.view(), P(out_proj_), dout, ensure(w.dy, Shape{tok, Di}), G(out_proj_), {}});

    View<T, Device> dA = ensure(w.dA, Shape{Di, N});
    Backend::fill(dA, T(0));
    SelectiveScanBwdArgs<T, Device> b;
    b.in = c.scan;
    b.saved_states = c.saved_states.view();
    b.dout = w.dy.view();
    b.du = ensure(w.du, Shape{tok, Di});
    b.ddelta = ensure(w.ddelta, Shape{tok, Di});
    b.dB = ensure(w.dB, Shape{tok, N}).reshape(Shape{tok, 1, N});
    b.dC = ensure(w.dC, Shape{tok, N}).reshape(Shape{tok, 1, N});
    b.dz = ensure(w.dz, Shape{tok, Di});
    b.dA = dA;
    b.dD = G(d_);
    b.ddelta_bias = G(dt_b_);
    Backend::selective_scan_bwd(b);
    Backend::mul_accumulate(w.dA.view(), c.A.view(), G(a_log_));  // A = −exp(A_log): ∂A/∂A_log = A

    Backend::linear_bwd({c.dt_low.view(), P(dt_w_), w.ddelta.view(), ensure(w.ddt_low, Shape{tok, R}), G(dt_w_), {}});
    // u feeds x_proj's three row blocks and the scan: du += Σ_blocks d(block)·W_block.
    View<T, Device> tmp = ensure(w.tmp_inner, Shape{tok, Di});
    Backend::linear_bwd({c.u.view(), w_x.rows(0, R), w.ddt_low.view(), tmp, g_x.rows(0, R), {}});
    Backend::accumulate(View<const T, Device>(tmp), w.du.view());
    Backend::linear_bwd({c.u.view(), w_x.rows(R, R + N), w.dB.view(), tmp, g_x.rows(R, R + N), {}});
    Backend::accumulate(View<const T, Device>(tmp), w.du.view());
    Backend::linear_bwd({c.u.view(), w_x.rows(R + N, R + 2 * N), w.dC.view(), tmp, g_x.rows(R + N, R + 2 * N), {}});
    Backend::accumulate(View<const T, Device>(tmp), w.du.view());

    CausalConv1dBwdArgs<T, Device> cb;
    cb.in = {c.xin.view(), P(conv_w_), P(conv_b_), c.scan.cu_seqlens, true};
    cb.dout = w.du.view();
    cb.dx = ensure(w.dxin, Shape{tok, Di});
    cb.dweight = G(conv_w_);
    cb.dbias = G(conv_b_);
    Backend::causal_conv1d_bwd(cb);

    View<T, Device> dx = ensure(c.dx, Shape{tok, d_model_});
    View<T, Device> tmp_m = ensure(w.tmp_model, Shape{tok, d_model_});
    Backend::linear_bwd({c.x, w_in.rows(0, Di), w.dxin.view(), dx, g_in.rows(0, Di), {}});
    Backend::linear_bwd({c.x, w_in.rows(Di, 2 * Di), w.dz.view(), tmp_m, g_in.rows(Di, 2 * Di), {}});
    Backend::accumulate(View<const T, Device>(tmp_m), dx);
    return dx;
  }

  // A zero state for `batch` sequences (the state before each sequence's first token).
  State make_state(int64_t batch) const {
    State s;
    s.conv = Tensor<T>(Shape{batch, d_inner_, d_conv_});
    s.ssm = Tensor<T>(Shape{batch, d_inner_, d_state_});
    reset_state(s);
    return s;
  }
  void reset_state(State& s) const {
    fill(s.conv.view(), T(0));
    fill(s.ssm.view(), T(0));
  }

  // One token per sequence: x (batch, d_model) -> out (batch, d_model), advancing the state
  // (mamba_ssm's Mamba.step: roll the conv window, then one scan update). Host backends only.
  void step(State& s, View<const T> x, View<T> out) const {
    static_assert(std::is_same_v<Device, Host>, "Mamba::step runs on the host");
    using mamba_detail::ensure;
    check_registered("step");
    const int64_t nb = s.batch(), Di = d_inner_, N = d_state_, R = dt_rank_, K = d_conv_;
    MAMBATRACK_CHECK_SHAPE(x.rank() == 2 && x.dim(0) == nb && x.dim(1) == d_model_ && out.shape == x.shape,
                           "Mamba step: x and out must be (batch = ", nb, ", d_model = ", d_model_, "), got ",
                           x.shape, " and ", out.shape);
    View<const T> w_in = P(in_proj_), w_x = P(x_proj_), cw = P(conv_w_), cbias = P(conv_b_), dtb = P(dt_b_),
                  a_log = P(a_log_), dskip = P(d_);
    Backend::linear_fwd({x, w_in.rows(0, Di), {}, ensure(s.xin, Shape{nb, Di})});
    Backend::linear_fwd({x, w_in.rows(Di, 2 * Di), {}, ensure(s.z, Shape{nb, Di})});
    View<T> u = ensure(s.u, Shape{nb, Di});
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t d = 0; d < Di; ++d) {
        T* win = &s.conv.at(b, d, 0);
        for (int64_t k = 0; k + 1 < K; ++k) win[k] = win[k + 1];
        win[K - 1] = s.xin.at(b, d);
        double acc = cbias[d];
        for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(cw.at(d, k)) * win[k];
        u.at(b, d) = static_cast<T>(mamba_detail::silu(acc));
      }
    Backend::linear_fwd({View<const T>(u), w_x.rows(0, R), {}, ensure(s.dt_low, Shape{nb, R})});
    Backend::linear_fwd({View<const T>(u), w_x.rows(R, R + N), {}, ensure(s.B, Shape{nb, N})});
    Backend::linear_fwd({View<const T>(u), w_x.rows(R + N, R + 2 * N), {}, ensure(s.C, Shape{nb, N})});
    Backend::linear_fwd({s.dt_low.view(), P(dt_w_), {}, ensure(s.delta, Shape{nb, Di})});
    View<T> y = ensure(s.y, Shape{nb, Di});
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t d = 0; d < Di; ++d) {
        const double dt = mamba_detail::softplus(static_cast<double>(s.delta.at(b, d)) + dtb[d]);
        const double ud = u.at(b, d);
        T* h = &s.ssm.at(b, d, 0);
        double acc = 0;
        for (int64_t n = 0; n < N; ++n) {
          const double a = -std::exp(static_cast<double>(a_log.at(d, n)));
          const double hn = std::exp(dt * a) * h[n] + dt * static_cast<double>(s.B.at(b, n)) * ud;
          h[n] = static_cast<T>(hn);
          acc += hn * static_cast<double>(s.C.at(b, n));
        }
        acc += static_cast<double>(dskip[d]) * ud;
        y.at(b, d) = static_cast<T>(acc * mamba_detail::silu(static_cast<double>(s.z.at(b, d))));
      }
    Backend::linear_fwd({View<const T>(y), P(out_proj_), {}, out});
  }

  int64_t d_model() const { return d_model_; }
  int64_t d_inner() const { return d_inner_; }
  int64_t dt_rank() const { return dt_rank_; }
  int d_state() const { return d_state_; }
  int d_conv() const { return d_conv_; }
  int expand() const { return expand_; }
  const MambaOptions& options() const { return opt_; }
  // Longest sequence of the next forwards (0: unknown): lets the CUDA scan take its one-kernel
  // path for short tracks. A speed hint only: correct for any value (the two paths may round
  // differently on sequences longer than a chunk).
  void set_max_seqlen_hint(int64_t n) { max_seqlen_hint_ = n; }

 private:
  View<const T, Device> forward_impl(Context& c, View<const T, Device> x, View<const int64_t, Device> cu_seqlens,
                                     View<scan_state_t<T>, Device> final_state) {
    using mamba_detail::ensure;
    check_registered("forward");
    MAMBATRACK_CHECK_SHAPE(x.rank() == 2 && x.dim(1) == d_model_, "Mamba forward: input must be (tokens, d_model = ",
                           d_model_, "), got ", x.shape);
    const int64_t tok = x.dim(0), Di = d_inner_, N = d_state_, R = dt_rank_;
    c.x = x;
    View<const T, Device> w_in = P(in_proj_), w_x = P(x_proj_);
    Backend::linear_fwd({x, w_in.rows(0, Di), {}, ensure(c.xin, Shape{tok, Di})});
    Backend::linear_fwd({x, w_in.rows(Di, 2 * Di), {}, ensure(c.z, Shape{tok, Di})});
    Backend::causal_conv1d_fwd({{c.xin.view(), P(conv_w_), P(conv_b_), cu_seqlens, true}, ensure(c.u, Shape{tok, Di})});
    Backend::linear_fwd({c.u.view(), w_x.rows(0, R), {}, ensure(c.dt_low, Shape{tok, R})});
    Backend::linear_fwd({c.u.view(), w_x.rows(R, R + N), {}, ensure(c.B, Shape{tok, N})});
    Backend::linear_fwd({c.u.view(), w_x.rows(R + N, R + 2 * N), {}, ensure(c.C, Shape{tok, N})});
    Backend::linear_fwd({c.dt_low.view(), P(dt_w_), {}, ensure(c.delta, Shape{tok, Di})});
    Backend::neg_exp(P(a_log_), ensure(c.A, Shape{Di, N}));

    SelectiveScanInputs<T, Device>& in = c.scan;
    in.u = c.u.view();
    in.delta = c.delta.view();
    in.A = c.A.view();
    in.B = c.B.view().reshape(Shape{tok, 1, N});
    in.C = c.C.view().reshape(Shape{tok, 1, N});
    in.D = P(d_);
    in.delta_bias = P(dt_b_);
    in.z = c.z.view();
    in.initial_state = {};
    in.cu_seqlens = cu_seqlens;
    in.delta_softplus = true;
    in.chunk = opt_.scan_chunk > 0 ? opt_.scan_chunk : backend_scan_chunk<Backend>();
    in.max_seqlen_hint = max_seqlen_hint_;
    SelectiveScanFwdArgs<T, Device> f;
    f.in = in;
    f.out = ensure(c.y, Shape{tok, Di});
    f.saved_states = ensure(c.saved_states, selective_scan_saved_shape(in));
    f.final_state = final_state;
    Backend::selective_scan_fwd(f);
    Backend::linear_fwd({c.y.view(), P(out_proj_), {}, ensure(c.out, Shape{tok, d_model_})});
    return c.out.view();
  }

  void check_registered(const char* what) const {
    MAMBATRACK_CHECK(store_ != nullptr, ConfigError, "Mamba ", what, " before register_params()");
  }
  View<T, Device> P(ParamHandle h) const { return store_->param(h); }
  View<T, Device> G(ParamHandle h) const { return store_->grad(h); }

  int64_t d_model_ = 0, d_inner_ = 0, dt_rank_ = 0;
  int d_state_ = 0, d_conv_ = 0, expand_ = 0;
  MambaOptions opt_;
  int64_t max_seqlen_hint_ = 0;
  Store* store_ = nullptr;
  ParamHandle in_proj_, conv_w_, conv_b_, x_proj_, dt_w_, dt_b_, a_log_, d_, out_proj_;
};

// One compiled configuration: the design parameters as template arguments, re-exported.
template <int DState, int DConv, int Expand, class Backend>
class Mamba : public MambaMixer<Backend> {
  static_assert(SupportedDState::contains(DState), "DState is not in SupportedDState (core/supported.hpp)");
  static_assert(SupportedDConv::contains(DConv), "DConv is not in SupportedDConv (core/supported.hpp)");
  static_assert(SupportedExpand::contains(Expand), "Expand is not in SupportedExpand (core/supported.hpp)");

 public:
  static constexpr int kDState = DState;
  static constexpr int kDConv = DConv;
  static constexpr int kExpand = Expand;
  explicit Mamba(int64_t d_model, MambaOptions opt = {}) : MambaMixer<Backend>(d_model, DState, DConv, Expand, opt) {}
};

}  // namespace mambatrack::nn
