// CUDA golden handlers for ops "mamba1_block" (one Mamba mixer) and "mamba1_lm_masked_ce"
// (embedding, n × [residual add, RMSNorm, Mamba mixer], final add + RMSNorm, tied LM head, mean CE
// over labels ≠ −100), shared/golden/README.md: the nn/ layer templates on nn::CudaBackend in
// float32. Parameters are loaded into the store's host copy by their state-dict names, then
// uploaded; x / ids / cu_seqlens go to the device as packed equal-length sequences. The tensors
// compared, their names and element order are those of the CPU handlers (golden/golden_mamba1.cpp).
#include <string>
#include <type_traits>
#include <vector>

#include "golden/cuda/golden_cuda_util.cuh"
#include "golden/golden.hpp"
#include "mambatrack/nn/backbone.hpp"
#include "mambatrack/nn/cuda_backend.cuh"
#include "mambatrack/nn/heads.hpp"
#include "mambatrack/nn/mamba.hpp"

namespace mambatrack::golden {
namespace {

using Backend = nn::CudaBackend;
using Store = nn::CudaParameterStore;

std::vector<std::string> param_names(const Store& s) {
  std::vector<std::string> n;
  for (const auto& p : s.params()) n.push_back(p.name);
  return n;
}

// Every named parameter gets the file's tensor of the same name (into the host copy), then the
// whole flat buffer goes to the device.
void load_params(const Case& c, Store& s, const std::vector<std::string>& names) {
  for (const std::string& n : names) {
    View<float> dst = s.host().param(s.handle(n));
    const std::vector<double> v = c.want(n);
    MAMBATRACK_CHECK_SHAPE(static_cast<int64_t>(v.size()) == dst.numel(), c.path, ": '", n, "' has ", v.size(),
                           " values, the model expects ", dst.shape);
    for (int64_t i = 0; i < dst.numel(); ++i) dst[i] = static_cast<float>(v[static_cast<std::size_t>(i)]);
  }
  s.upload();
}

std::vector<double> grad_of(const Store& s, const std::string& name) {
  return host_doubles(s.grad(s.handle(name)));
}

const char* const kMixerParams[] = {"in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
                                    "dt_proj.bias",   "A_log",         "D",           "out_proj.weight"};

nn::MambaMixer<Backend> mixer_from_meta(const Case& c) {
  nn::MambaMixer<Backend> m(c.size("d_model"), static_cast<int>(c.size("d_state")), static_cast<int>(c.size("d_conv")),
                            static_cast<int>(c.size("expand")));
  MAMBATRACK_CHECK(m.dt_rank() == c.size("dt_rank"), ConfigError, c.path, ": dt_rank ", c.size("dt_rank"),
                   " but ceil(d_model/16) = ", m.dt_rank());
  return m;
}

std::vector<Result> run_mamba1_block_cuda(const Case& c) {
  const int64_t batch = c.size("batch"), len = c.size("len"), dm = c.size("d_model"), tok = batch * len;
  Store store;
  nn::MambaMixer<Backend> mixer = mixer_from_meta(c);
  mixer.register_params(store, "");
  store.finalize();
  const std::vector<std::string> names(std::begin(kMixerParams), std::end(kMixerParams));
  load_params(c, store, names);

  const Tensor<float, Cuda> x = device_f32(c.want("x"), Shape{tok, dm}),
                            dout = device_f32(c.want("dout"), Shape{tok, dm});
  const Tensor<int64_t, Cuda> cu = device_i64(equal_cu_seqlens(batch, len));
  nn::MambaMixer<Backend>::Context ctx;
  // CUDA float32: README bound for blocks, 1e-4 (float sums over d_model/d_inner in the cuBLASLt
  // fp32 GEMMs and over len in the scan, in other orders than the CPU, whose measured error is
  // <= 3.8e-7 here).
  const double tol = 1e-4;
  std::vector<Result> r;
  const View<const float, Cuda> y = mixer.forward(ctx, x.view(), cu.view());
  r.push_back({"cuda f32 out", "out", host_doubles(y), tol});
  const View<const float, Cuda> dx = mixer.backward(ctx, dout.view());
  r.push_back({"cuda f32 grad_x", "grad_x", host_doubles(dx), tol});
  for (const std::string& n : names) r.push_back({"cuda f32 grad_" + n, "grad_" + n, grad_of(store, n), tol});
  return r;
}

// The README's model through nn::Backbone (embedding, Blocks of [add, RMSNorm, mixer], final
// add + RMSNorm) and a tied nn::LmHead; registered with prefix "" the names are the file's.
std::vector<Result> run_mamba1_lm_cuda(const Case& c) {
  using BackboneT = nn::Backbone<Backend, nn::MambaMixer<Backend>>;
  const int64_t batch = c.size("batch"), len = c.size("len"), dm = c.size("d_model"), V = c.size("vocab");
  const int64_t tok = batch * len;
  nn::BackboneConfig bc;
  bc.d_model = dm;
  bc.n_layer = static_cast<int>(c.size("n_layer"));
  bc.input = nn::BackboneInput::kTokens;
  bc.vocab = V;
  bc.norm = NormKind::kRms;
  bc.norm_eps = c.meta.at("rms_eps").get<double>();
  MAMBATRACK_CHECK(c.meta.at("tied_head").get<bool>(), ConfigError, c.path, ": expected a tied LM head");
  Store store;
  BackboneT backbone(bc, mixer_from_meta(c));
  backbone.register_params(store, "");
  nn::LmHead<Backend> head(dm, V);
  head.register_params(store, "lm_head.weight", store.handle("embedding.weight"));
  store.finalize();
  const std::vector<std::string> names = param_names(store);
  load_params(c, store, names);

  const Tensor<int64_t, Cuda> ids = device_i64(c.file.read<int64_t>("inputs")),
                              labels = device_i64(c.file.read<int64_t>("labels")),
                              cu = device_i64(equal_cu_seqlens(batch, len));
  MAMBATRACK_CHECK_SHAPE(ids.numel() == tok && labels.numel() == tok, c.path, ": inputs/labels have ", ids.numel(),
                         "/", labels.numel(), " ids, expected batch·len = ", tok);
  typename BackboneT::Context ctx;
  typename nn::LmHead<Backend>::Context hctx;
  const View<const float, Cuda> y = backbone.forward_tokens(ctx, ids.view(), cu.view());
  const View<const float, Cuda> logits = head.forward(hctx, y);
  Tensor<float, Cuda> dlogits = device_nan(Shape{tok, V});
  CrossEntropyArgs<float, Cuda> ce;
  ce.logits = logits;
  ce.labels = labels.view();
  ce.dlogits = dlogits.view();
  ce.ignore_index = c.meta.at("ignore_index").get<int64_t>();
  const LossResult loss = Backend::cross_entropy(ce);
  backbone.backward(ctx, head.backward(hctx, dlogits.view()));

  // CUDA float32: README bound for the model, 1e-4 (two blocks, CE over 40 classes; the CPU's
  // measured error is <= 1.5e-6, the loss 1.5e-9).
  const double tol = 1e-4;
  std::vector<Result> r;
  r.push_back({"cuda f32 loss", "loss", {static_cast<double>(loss.loss)}, tol});
  for (const std::string& n : names) r.push_back({"cuda f32 grad_" + n, "grad_" + n, grad_of(store, n), tol});
  return r;
}

const Register kRegisterBlock("mamba1_block", run_mamba1_block_cuda);
const Register kRegisterLm("mamba1_lm_masked_ce", run_mamba1_lm_cuda);

}  // namespace
}  // namespace mambatrack::golden
