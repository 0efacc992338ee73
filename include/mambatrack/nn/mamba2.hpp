// nn::Mamba2: the Mamba2 mixer of mamba_ssm.modules.mamba2 (rmsnorm, norm_before_gate = false) on
// packed (tokens, d_model):  [z, x, B, C, dt] = u·in_projᵀ;  [x, B, C] = silu(conv([x, B, C]) + b);
//   y = SSD(x, dt = softplus(dt + dt_bias), A = −exp(A_log), B, C) + D·x;  out = (RMSNorm_g(y·silu(z))·w)·out_projᵀ
// Mamba2Mixer<Backend> has run-time sizes (one instantiation for all configs); Mamba2<DState, DConv,
// Expand, HeadDim, Backend> puts them in the type. step() is the recurrent form, equal to forward().
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/supported.hpp"
#include "mambatrack/core/tensor.hpp"
#include "mambatrack/nn/init.hpp"
#include "mambatrack/nn/parameter_store.hpp"
#include "mambatrack/ops/causal_conv1d.hpp"
#include "mambatrack/ops/gated_rmsnorm.hpp"
#include "mambatrack/ops/linear.hpp"
#include "mambatrack/ops/ssd.hpp"

namespace mambatrack::nn {

namespace mamba2_detail {
template <template <class...> class A, class T, class Device>
struct ArgsOn {
  using type = A<T, Device>;
};
template <template <class...> class A, class T>
struct ArgsOn<A, T, Host> {
  using type = A<T>;
};
}  // namespace mamba2_detail

// The run-time options of a Mamba2 layer, with the reference's defaults.
struct Mamba2Options {
  int64_t ngroups = 1;        // B and C groups; nheads must be a multiple
  int64_t chunk_size = 256;   // SSD chunk (the result does not depend on it)
  double A_init_min = 1.0, A_init_max = 16.0;                  // A ~ U(A_init_range), stored as log
  double dt_min = 1e-3, dt_max = 0.1, dt_init_floor = 1e-4;    // dt_bias initialisation
  double dt_limit_min = 0.0, dt_limit_max = std::numeric_limits<double>::infinity();  // dt clamp
  double norm_eps = 1e-5;
  bool rescale_out_proj = true;  // out_proj.weight /= sqrt(n_layer) at init (rescale_prenorm_residual)
};

// The sizes of a Mamba2 layer, derived from (d_model, d_state, d_conv, expand, headdim, ngroups).
struct Mamba2Sizes {
  int64_t d_model = 0, d_state = 0, d_conv = 0, expand = 0, headdim = 0, ngroups = 1;
  int64_t d_inner() const { return expand * d_model; }
  int64_t nheads() const { return d_inner() / headdim; }
  int64_t gn() const { return ngroups * d_state; }
  int64_t conv_dim() const { return d_inner() + 2 * gn(); }
  int64_t d_in_proj() const { return 2 * d_inner() + 2 * gn() + nheads(); }
};

// Throws ConfigError unless d_state, d_conv, expand and headdim are compiled values
// (core/supported.hpp); the message lists the supported ones.
inline void check_mamba2_supported(int d_state, int d_conv, int expand, int headdim) {
  auto ok = [](auto) { return 0; };
  dispatch_value(SupportedDState{}, d_state, "mamba2 d_state", ok);
  dispatch_value(SupportedDConv{}, d_conv, "mamba2 d_conv", ok);
  dispatch_value(SupportedExpand{}, expand, "mamba2 expand", ok);
  dispatch_value(SupportedHeadDim{}, headdim, "mamba2 headdim", ok);
}

// Backend: Scalar, Device, Store (add/param/grad), linear_fwd/bwd, fill, take_columns,
// copy_columns (nn/cpu_backend.hpp), causal_conv1d_fwd/bwd, ssd_fwd/bwd, gated_rmsnorm_fwd/bwd,
// mamba2_neg_exp, mamba2_a_log_grad (nn/mamba2_backend.hpp: Mamba2CpuBackend).
template <class Backend_>
class Mamba2Mixer {
 public:
  using Backend = Backend_;
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  using Store = typename Backend::Store;
  // An ops/ argument struct on this backend's device: Args<T> on the host, Args<T, Device> on a
  // device (the SSD and gated-RMSNorm structs gain their Device parameter with their CUDA ops).
  template <template <class...> class A>
  using Args = typename mamba2_detail::ArgsOn<A, T, Device>::type;


  // The backward's internal workspaces: nothing in them outlives one backward call, so all the
  // mixers of a backbone may use one set (nn::share_backward_workspace).
  struct BackwardWorkspace {
    Tensor<T, Device> dnormed, dy, dz, dxs, ddt, dB, dC, dA, dxbc, dxbc_in, dzx;
    std::size_t bytes() const {
      std::size_t n = 0;
      for (const Tensor<T, Device>* t : {&dnormed, &dy, &dz, &dxs, &ddt, &dB, &dC, &dA, &dxbc, &dxbc_in, &dzx})
        n += t->bytes();
      return n;
    }
  };
  // Saved activations (forward), the returned input gradient and the backward workspace (own, or
  // shared), reused while the shapes stay the same.
  struct Context {
    View<const T, Device> x;
    View<const int64_t, Device> cu_seqlens;
    Tensor<T, Device> zx, xbc_in, xbc, xs, B, C, z, dt, A, y, normed, out;  // forward
    Tensor<T, Device> dx;
    Tensor<float, Device> ssd_states;  // the SSD forward's chunk-start states (CUDA; may stay empty)
    std::shared_ptr<BackwardWorkspace> backward_workspace = std::make_shared<BackwardWorkspace>();
    std::size_t bytes() const {
      std::size_t n = backward_workspace->bytes() + ssd_states.bytes();
      for (const Tensor<T, Device>* t : {&zx, &xbc_in, &xbc, &xs, &B, &C, &z, &dt, &A, &y, &normed, &out, &dx})
        n += t->bytes();
      return n;
    }
  };

  // The recurrent state of `batch` sequences plus the step workspaces.
  struct State {
    Tensor<T> conv;  // (batch, d_conv, conv_dim): the last d_conv conv inputs [x, B, C], oldest first
    Tensor<T> ssm;   // (batch, nheads, headdim, d_state)
    Tensor<T> zx, xbc, y, z, normed, out, A;
    int64_t batch() const { return conv.shape().rank() ? conv.dim(0) : 0; }
  };

  Mamba2Mixer() = default;
  virtual ~Mamba2Mixer() = default;
  Mamba2Mixer(const Mamba2Mixer&) = default;
  Mamba2Mixer& operator=(const Mamba2Mixer&) = default;
  Mamba2Mixer(int64_t d_model, int d_state, int d_conv, int expand, int headdim, Mamba2Options opt = {})
      : opt_(opt) {
    check_mamba2_supported(d_state, d_conv, expand, headdim);
    s_ = Mamba2Sizes{d_model, d_state, d_conv, expand, headdim, opt.ngroups};
    MAMBATRACK_CHECK(d_model > 0, ConfigError, "mamba2: d_model must be positive, got ", d_model);
    MAMBATRACK_CHECK(s_.d_inner() % headdim == 0, ConfigError, "mamba2: d_inner = expand·d_model = ", expand, "·",
                     d_model, " = ", s_.d_inner(), " is not a multiple of headdim = ", headdim);
    MAMBATRACK_CHECK(opt.ngroups >= 1 && s_.nheads() % opt.ngroups == 0, ConfigError, "mamba2: nheads = d_inner/headdim = ",
                     s_.nheads(), " is not a multiple of ngroups = ", opt.ngroups);
    MAMBATRACK_CHECK(opt.chunk_size >= 1, ConfigError, "mamba2: chunk_size must be >= 1, got ", opt.chunk_size);
    MAMBATRACK_CHECK(opt.A_init_min > 0 && opt.A_init_max >= opt.A_init_min, ConfigError,
                     "mamba2: A_init_range must satisfy 0 < min <= max, got (", opt.A_init_min, ", ", opt.A_init_max, ")");
    MAMBATRACK_CHECK(opt.dt_min > 0 && opt.dt_max >= opt.dt_min, ConfigError,
                     "mamba2: dt_min/dt_max must satisfy 0 < dt_min <= dt_max, got (", opt.dt_min, ", ", opt.dt_max, ")");
  }

  // prefix ends in "mixer.": in_proj.weight, conv1d.weight (disk (conv_dim, 1, d_conv)),
  // conv1d.bias, dt_bias, A_log, D, norm.weight, out_proj.weight, in the reference's order.
  void register_params(Store& s, const std::string& prefix) {
    store_ = &s;
    const int64_t di = s_.d_inner(), H = s_.nheads(), cd = s_.conv_dim();
    in_proj_ = s.add(prefix + "in_proj.weight", Shape{s_.d_in_proj(), s_.d_model});
    conv_w_ = s.add(prefix + "conv1d.weight", Shape{cd, s_.d_conv}, false, {cd, 1, s_.d_conv});
    conv_b_ = s.add(prefix + "conv1d.bias", Shape{cd}, true);
    dt_bias_ = s.add(prefix + "dt_bias", Shape{H}, true);
    A_log_ = s.add(prefix + "A_log", Shape{H}, true);
    D_ = s.add(prefix + "D", Shape{H}, true);
    norm_w_ = s.add(prefix + "norm.weight", Shape{di}, true);
    out_proj_ = s.add(prefix + "out_proj.weight", Shape{s_.d_model, di});
  }

  // The reference's initialisation (nn/init.hpp), each parameter from its own named stream;
  // n_layer > 0 (and rescale_out_proj) rescales out_proj.weight by 1/sqrt(n_layer).
  void init(ParameterStore& s, uint64_t seed, int n_layer) const {
    auto rng = [&](ParamHandle h) { return param_rng(seed, s.info(h).name); };
    Philox r_in = rng(in_proj_), r_cw = rng(conv_w_), r_cb = rng(conv_b_), r_dt = rng(dt_bias_), r_a = rng(A_log_),
           r_out = rng(out_proj_);
    init_fan_in_uniform(s.param(in_proj_), s_.d_model, r_in);
    init_fan_in_uniform(s.param(conv_w_), s_.d_conv, r_cw);  // Conv1d fan_in = in_channels/groups · k = d_conv
    init_fan_in_uniform(s.param(conv_b_), s_.d_conv, r_cb);
    init_dt_bias(s.param(dt_bias_), opt_.dt_min, opt_.dt_max, opt_.dt_init_floor, r_dt);
    init_mamba2_A_log(s.param(A_log_), opt_.A_init_min, opt_.A_init_max, r_a);
    init_constant(s.param(D_), 1.0f);
    init_constant(s.param(norm_w_), 1.0f);
    View<float> wo = s.param(out_proj_);
    init_fan_in_uniform(wo, s_.d_inner(), r_out);
    if (opt_.rescale_out_proj && n_layer > 0) {
      const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n_layer)));
      for (int64_t i = 0; i < wo.numel(); ++i) wo[i] *= scale;
    }
  }

  // x: (tokens, d_model) packed as cu_seqlens says; returns (tokens, d_model). Keeps views of x
  // and cu_seqlens until backward.
  View<const T, Device> forward(Context& ctx, View<const T, Device> x, View<const int64_t, Device> cu_seqlens) {
    return run_forward(ctx, x, cu_seqlens, View<T, Device>());
  }

  // dy: (tokens, d_model). Returns dx (overwritten); parameter gradients are accumulated.
  View<const T, Device> backward(Context& ctx, View<const T, Device> dy) {
    MAMBATRACK_CHECK(store_ != nullptr, ConfigError, "mamba2: backward before register_params()");
    MAMBATRACK_CHECK_SHAPE(dy.shape == ctx.out.shape(), "mamba2 backward: dy has shape ", dy.shape,
                           ", the forward output ", ctx.out.shape());
    const int64_t n = ctx.x.dim(0), di = s_.d_inner(), H = s_.nheads(), P = s_.headdim, G = s_.ngroups,
                  N = s_.d_state, gn = s_.gn(), cd = s_.conv_dim();
    BackwardWorkspace& w = *ctx.backward_workspace;
    // out_proj
    View<T, Device> dnormed = ws(w.dnormed, Shape{n, di});
    Backend::linear_bwd({ctx.normed.view(), param(out_proj_), dy, dnormed, store_->grad(out_proj_), View<T, Device>()});
    // gated RMSNorm
    View<T, Device> dyv = ws(w.dy, Shape{n, di}), dz = ws(w.dz, Shape{n, di});
    Args<GatedRmsNormBwdArgs> nb;
    nb.y = ctx.y.view().reshape(Shape{n, di});
    nb.z = ctx.z.view();
    nb.weight = param(norm_w_);
    nb.dout = dnormed;
    nb.ngroups = G;
    nb.eps = static_cast<T>(opt_.norm_eps);
    nb.dy = dyv;
    nb.dz = dz;
    nb.dweight = store_->grad(norm_w_);
    Backend::gated_rmsnorm_bwd(nb);
    // SSD
    View<T, Device> dA = ws(w.dA, Shape{H});
    Backend::fill(dA, T(0));
    Args<SsdBwdArgs> sb;
    sb.in = ssd_inputs(ctx);
    sb.dy = View<const T, Device>(dyv.data, Shape{n, H, P});
    sb.dx = ws(w.dxs, Shape{n, H, P});
    sb.ddt = ws(w.ddt, Shape{n, H});
    sb.dB = ws(w.dB, Shape{n, G, N});
    sb.dC = ws(w.dC, Shape{n, G, N});
    sb.dA = dA;
    sb.dD = store_->grad(D_);
    sb.ddt_bias = store_->grad(dt_bias_);
    sb.chunk_size = opt_.chunk_size;
    if (ctx.ssd_states.data() != nullptr)
      sb.saved_states = View<const float, Device>(ctx.ssd_states.data(), ctx.ssd_states.shape());
    Backend::ssd_bwd(sb);
    Backend::mamba2_a_log_grad(dA, ctx.A.view(), store_->grad(A_log_));
    // conv + SiLU over [x, B, C]
    View<T, Device> dxbc = ws(w.dxbc, Shape{n, cd});
    Backend::copy_columns(w.dxs.view().reshape(Shape{n, di}), dxbc, 0);
    Backend::copy_columns(w.dB.view().reshape(Shape{n, gn}), dxbc, di);
    Backend::copy_columns(w.dC.view().reshape(Shape{n, gn}), dxbc, di + gn);
    View<T, Device> dxbc_in = ws(w.dxbc_in, Shape{n, cd});
    CausalConv1dBwdArgs<T, Device> cb;
    cb.in = conv_inputs(ctx.xbc_in.view(), ctx.cu_seqlens);
    cb.dout = dxbc;
    cb.dx = dxbc_in;
    cb.dweight = store_->grad(conv_w_);
    cb.dbias = store_->grad(conv_b_);
    Backend::causal_conv1d_bwd(cb);
    // in_proj: d[z, xBC, dt]
    View<T, Device> dzx = ws(w.dzx, Shape{n, s_.d_in_proj()});
    Backend::copy_columns(View<const T, Device>(dz), dzx, 0);
    Backend::copy_columns(View<const T, Device>(dxbc_in), dzx, di);
    Backend::copy_columns(View<const T, Device>(w.ddt.view()), dzx, di + cd);
    View<T, Device> dx = ws(ctx.dx, ctx.x.shape);
    Backend::linear_bwd({ctx.x, param(in_proj_), View<const T, Device>(dzx), dx, store_->grad(in_proj_), View<T, Device>()});
    return dx;
  }

  // A zero state for `batch` sequences (the state before their first token).
  State new_state(int64_t batch) const {
    State st;
    st.conv = Tensor<T>(Shape{batch, s_.d_conv, s_.conv_dim()});
    st.ssm = Tensor<T>(Shape{batch, s_.nheads(), s_.headdim, s_.d_state});
    reset(st);
    return st;
  }
  static void reset(State& st) {
    mambatrack::fill(st.conv.view(), T(0));
    mambatrack::fill(st.ssm.view(), T(0));
  }

  // Runs forward over packed sequences and leaves in `st` (resized to the batch) the state after
  // each sequence's last token, so step() continues them. Returns forward's output.
  View<const T, Device> prefill(Context& ctx, State& st, View<const T, Device> x, View<const int64_t, Device> cu_seqlens) {
    static_assert(std::is_same_v<typename Backend::Device, Host>, "prefill() runs on the host");
    const int64_t batch = cu_seqlens.numel() - 1, K = s_.d_conv, cd = s_.conv_dim();
    if (st.batch() != batch) st = new_state(batch);
    View<const T, Device> out = run_forward(ctx, x, cu_seqlens, st.ssm.view());
    // conv state: the last K raw conv inputs of each sequence, zeros before its start.
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t j = 0; j < K; ++j) {
        const int64_t t = cu_seqlens[b + 1] - K + j;
        T* dst = st.conv.data() + (b * K + j) * cd;
        for (int64_t c = 0; c < cd; ++c) dst[c] = t >= cu_seqlens[b] ? ctx.xbc_in.data()[t * cd + c] : T(0);
      }
    return out;
  }

  // One token per sequence: token (batch, d_model) -> (batch, d_model), advancing `st` in place.
  // The same math as forward() at the next position of every sequence (reference §7):
  //   conv: roll left, append [x, B, C], silu(Σ state·w + b);  dA = exp(dt·A) per head;
  //   H = H·dA + dt·x⊗B;  y = H·C + D·x;  gated RMSNorm;  out_proj.
  View<const T, Device> step(State& st, View<const T, Device> token) {
    static_assert(std::is_same_v<typename Backend::Device, Host>, "step() runs on the host");
    MAMBATRACK_CHECK(store_ != nullptr, ConfigError, "mamba2: step before register_params()");
    const int64_t batch = st.batch(), K = s_.d_conv, di = s_.d_inner(), H = s_.nheads(), P = s_.headdim,
                  N = s_.d_state, gn = s_.gn(), cd = s_.conv_dim(), dp = s_.d_in_proj();
    MAMBATRACK_CHECK_SHAPE(token.rank() == 2 && token.dim(0) == batch && token.dim(1) == s_.d_model,
                           "mamba2 step: token has shape ", token.shape, ", expected (", batch, ", ", s_.d_model,
                           ") for a state of ", batch, " sequences");
    View<T, Device> zx = ws(st.zx, Shape{batch, dp});
    Backend::linear_fwd({token, param(in_proj_), View<const T, Device>(), zx});
    View<const T, Device> w = param(conv_w_), bias = param(conv_b_), dt_bias = param(dt_bias_), Dv = param(D_);
    View<T, Device> xbc = ws(st.xbc, Shape{batch, cd}), y = ws(st.y, Shape{batch, di}),
            z = ws(st.z, Shape{batch, di}), A = ws(st.A, Shape{H});
    Backend::mamba2_neg_exp(param(A_log_), A);
    const T dt_lo = static_cast<T>(opt_.dt_limit_min), dt_hi = static_cast<T>(opt_.dt_limit_max);
    for (int64_t b = 0; b < batch; ++b) {
      const T* row = zx.data + b * dp;
      T* cs = st.conv.data() + b * K * cd;
      for (int64_t j = 0; j + 1 < K; ++j)
        for (int64_t c = 0; c < cd; ++c) cs[j * cd + c] = cs[(j + 1) * cd + c];
      for (int64_t c = 0; c < cd; ++c) cs[(K - 1) * cd + c] = row[di + c];
      for (int64_t c = 0; c < cd; ++c) {
        T acc = bias[c];
        for (int64_t j = 0; j < K; ++j) acc += w[c * K + j] * cs[j * cd + c];
        xbc[b * cd + c] = acc / (T(1) + std::exp(-acc));
      }
      for (int64_t c = 0; c < di; ++c) z[b * di + c] = row[c];
      const T* xs = xbc.data + b * cd;
      const T* Bm = xs + di;
      const T* Cm = Bm + gn;
      for (int64_t h = 0; h < H; ++h) {
        const int64_t g = h / (H / s_.ngroups);
        T dt = ssd_detail::softplus_thresholded(row[di + cd + h] + dt_bias[h]);
        dt = dt < dt_lo ? dt_lo : (dt > dt_hi ? dt_hi : dt);
        const T dA = std::exp(dt * A[h]);
        T* hs = st.ssm.data() + (b * H + h) * P * N;
        for (int64_t p = 0; p < P; ++p) {
          const T xp = xs[h * P + p], dtx = dt * xp;
          T acc = 0;
          for (int64_t k = 0; k < N; ++k) {
            T& s = hs[p * N + k];
            s = s * dA + dtx * Bm[g * N + k];
            acc += s * Cm[g * N + k];
          }
          y[b * di + h * P + p] = acc + Dv[h] * xp;
        }
      }
    }
    Args<GatedRmsNormFwdArgs> na;
    na.y = y;
    na.z = z;
    na.weight = param(norm_w_);
    na.ngroups = s_.ngroups;
    na.eps = static_cast<T>(opt_.norm_eps);
    na.out = ws(st.normed, Shape{batch, di});
    Backend::gated_rmsnorm_fwd(na);
    View<T, Device> out = ws(st.out, Shape{batch, s_.d_model});
    Backend::linear_fwd({View<const T, Device>(na.out), param(out_proj_), View<const T, Device>(), out});
    return out;
  }

  const Mamba2Sizes& sizes() const { return s_; }
  const Mamba2Options& options() const { return opt_; }
  // Host-side upper bound on every sequence's length (0: unknown), passed to the SSD as a speed
  // hint (SsdInputs::max_seqlen_hint); it must be a true bound.
  void set_max_seqlen_hint(int64_t n) { max_seqlen_hint_ = n; }
  void set_chunk_size(int64_t chunk) {
    MAMBATRACK_CHECK(chunk >= 1, ConfigError, "mamba2: chunk_size must be >= 1, got ", chunk);
    opt_.chunk_size = chunk;
  }
  int64_t d_model() const { return s_.d_model; }
  int64_t d_inner() const { return s_.d_inner(); }
  int64_t nheads() const { return s_.nheads(); }
  int64_t ngroups() const { return s_.ngroups; }

 private:
  View<const T, Device> param(ParamHandle h) const { return store_->param(h); }
  // A workspace resized only when its shape changes (no allocation in the steady state).
  static View<T, Device> ws(Tensor<T, Device>& t, const Shape& shape) {
    if (!(t.shape() == shape)) t = Tensor<T, Device>(shape);
    return t.view();
  }

  CausalConv1dInputs<T, Device> conv_inputs(View<const T, Device> x, View<const int64_t, Device> cu) const {
    CausalConv1dInputs<T, Device> in;
    in.x = x;
    in.weight = param(conv_w_);
    in.bias = param(conv_b_);
    in.cu_seqlens = cu;
    in.silu = true;
    return in;
  }

  Args<SsdInputs> ssd_inputs(const Context& ctx) const {
    const int64_t n = ctx.x.dim(0), H = s_.nheads(), G = s_.ngroups, N = s_.d_state;
    Args<SsdInputs> in;
    in.x = ctx.xs.view().reshape(Shape{n, H, s_.headdim});
    in.dt = ctx.dt.view();
    in.dt_bias = param(dt_bias_);
    in.A = ctx.A.view();
    in.B = ctx.B.view().reshape(Shape{n, G, N});
    in.C = ctx.C.view().reshape(Shape{n, G, N});
    in.D = param(D_);
    in.cu_seqlens = ctx.cu_seqlens;
    in.dt_min = static_cast<T>(opt_.dt_limit_min);
    in.dt_max = static_cast<T>(opt_.dt_limit_max);
    in.max_seqlen_hint = max_seqlen_hint_;
    return in;
  }

  View<const T, Device> run_forward(Context& ctx, View<const T, Device> x, View<const int64_t, Device> cu, View<T, Device> final_state) {
    MAMBATRACK_CHECK(store_ != nullptr, ConfigError, "mamba2: forward before register_params()");
    MAMBATRACK_CHECK_SHAPE(x.rank() == 2 && x.dim(1) == s_.d_model, "mamba2: input has shape ", x.shape,
                           ", expected (tokens, d_model = ", s_.d_model, ")");
    ctx.x = x;
    ctx.cu_seqlens = cu;
    const int64_t n = x.dim(0), di = s_.d_inner(), H = s_.nheads(), P = s_.headdim, gn = s_.gn(),
                  cd = s_.conv_dim();
    View<T, Device> zx = ws(ctx.zx, Shape{n, s_.d_in_proj()});
    Backend::linear_fwd({x, param(in_proj_), View<const T, Device>(), zx});
    View<T, Device> xbc_in = ws(ctx.xbc_in, Shape{n, cd});
    Backend::take_columns(View<const T, Device>(zx), xbc_in, di);
    View<T, Device> xbc = ws(ctx.xbc, Shape{n, cd});
    CausalConv1dFwdArgs<T, Device> cf;
    cf.in = conv_inputs(View<const T, Device>(xbc_in), cu);
    cf.out = xbc;
    Backend::causal_conv1d_fwd(cf);
    Backend::take_columns(View<const T, Device>(xbc), ws(ctx.xs, Shape{n, di}), 0);
    Backend::take_columns(View<const T, Device>(xbc), ws(ctx.B, Shape{n, gn}), di);
    Backend::take_columns(View<const T, Device>(xbc), ws(ctx.C, Shape{n, gn}), di + gn);
    Backend::take_columns(View<const T, Device>(zx), ws(ctx.z, Shape{n, di}), 0);
    Backend::take_columns(View<const T, Device>(zx), ws(ctx.dt, Shape{n, H}), di + cd);
    Backend::mamba2_neg_exp(param(A_log_), ws(ctx.A, Shape{H}));
    Args<SsdFwdArgs> sf;
    sf.in = ssd_inputs(ctx);
    sf.y = ws(ctx.y, Shape{n, H, P});
    sf.final_state = final_state;
    sf.chunk_size = opt_.chunk_size;
    sf.saved_states = &ctx.ssd_states;
    Backend::ssd_fwd(sf);
    Args<GatedRmsNormFwdArgs> na;
    na.y = ctx.y.view().reshape(Shape{n, di});
    na.z = ctx.z.view();
    na.weight = param(norm_w_);
    na.ngroups = s_.ngroups;
    na.eps = static_cast<T>(opt_.norm_eps);
    na.out = ws(ctx.normed, Shape{n, di});
    Backend::gated_rmsnorm_fwd(na);
    View<T, Device> out = ws(ctx.out, Shape{n, s_.d_model});
    Backend::linear_fwd({View<const T, Device>(na.out), param(out_proj_), View<const T, Device>(), out});
    return out;
  }

  Mamba2Sizes s_;
  Mamba2Options opt_;
  int64_t max_seqlen_hint_ = 0;
  Store* store_ = nullptr;
  ParamHandle in_proj_, conv_w_, conv_b_, dt_bias_, A_log_, D_, norm_w_, out_proj_;
};

// The layer with its design parameters in the type (DESIGN.md §5); the same code as Mamba2Mixer.
template <int DState, int DConv, int Expand, int HeadDim, class Backend>
class Mamba2 : public Mamba2Mixer<Backend> {
 public:
  static constexpr int kDState = DState;
  static constexpr int kDConv = DConv;
  static constexpr int kExpand = Expand;
  static constexpr int kHeadDim = HeadDim;
  static_assert(SupportedDState::contains(DState), "DState is not in SupportedDState (core/supported.hpp)");
  static_assert(SupportedDConv::contains(DConv), "DConv is not in SupportedDConv (core/supported.hpp)");
  static_assert(SupportedExpand::contains(Expand), "Expand is not in SupportedExpand (core/supported.hpp)");
  static_assert(SupportedHeadDim::contains(HeadDim), "HeadDim is not in SupportedHeadDim (core/supported.hpp)");

  Mamba2() = default;
  explicit Mamba2(int64_t d_model, Mamba2Options opt = {})
      : Mamba2Mixer<Backend>(d_model, DState, DConv, Expand, HeadDim, opt) {}
};

// Run-time factory for config-driven programs (the Mamba2 entry of nn/dispatch.hpp): checks
// (d_state, d_conv, expand, headdim) against the compiled values with dispatch_value (ConfigError
// listing them otherwise) and returns the run-time-sized layer, which Block/Backbone hold. The
// checks are additive (one per list), not one instantiation per combination.
template <class Backend>
Mamba2Mixer<Backend> make_mamba2(int d_state, int d_conv, int expand, int headdim, int64_t d_model,
                                 const Mamba2Options& opt = {}) {
  return Mamba2Mixer<Backend>(d_model, d_state, d_conv, expand, headdim, opt);
}

// For code that wants the typed layer: calls f(Mamba2<N, K, E, P, Backend>(d_model, opt)) for the
// compiled values equal to the arguments (ConfigError listing the supported values otherwise).
// Instantiates f once per combination of the lists (multiplicative): pass narrower lists where
// only some are needed.
template <class Backend, class DStates = SupportedDState, class DConvs = SupportedDConv,
          class Expands = SupportedExpand, class HeadDims = SupportedHeadDim, class F>
decltype(auto) with_mamba2(int d_state, int d_conv, int expand, int headdim, int64_t d_model, const Mamba2Options& opt,
                           F&& f) {
  check_mamba2_supported(d_state, d_conv, expand, headdim);
  return dispatch_value(DStates{}, d_state, "mamba2 d_state", [&](auto n) -> decltype(auto) {
    return dispatch_value(DConvs{}, d_conv, "mamba2 d_conv", [&](auto k) -> decltype(auto) {
      return dispatch_value(Expands{}, expand, "mamba2 expand", [&](auto e) -> decltype(auto) {
        return dispatch_value(HeadDims{}, headdim, "mamba2 headdim", [&](auto p) -> decltype(auto) {
          return f(Mamba2<decltype(n)::value, decltype(k)::value, decltype(e)::value, decltype(p)::value, Backend>(
              d_model, opt));
        });
      });
    });
  });
}

}  // namespace mambatrack::nn
