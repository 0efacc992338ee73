// Losses, arguments shared by every backend. Each returns the loss, reduced as the MEAN over the
// counted elements (tokens whose label is not ignore_index; unmasked elements for MSE), and
// writes grad_scale · ∂loss/∂logits into dlogits (OVERWRITTEN; rows not counted get 0).
//   cross_entropy: −Σ_c q_c log softmax(z)_c, q = 1−ε on the target and ε/(V−1) elsewhere
//     (MAMBA-PT) or (1−ε)·onehot + ε/V (torch); optionally + Σ q log q (MAMBA-PT's KLDiv value).
//   bce_with_logits: max(z,0) − z·y + log(1 + e^(−|z|));  masked_mse: (p − t)².
#pragma once

#include <cmath>
#include <cstdint>

#include "mambatrack/core/dtype.hpp"
#include "mambatrack/core/tensor.hpp"
#include "mambatrack/ops/view_checks.hpp"

namespace mambatrack {

constexpr int64_t kIgnoreIndex = -100;  // torch's CrossEntropyLoss default
constexpr double kMsePadValue = -100.0;  // FM4NPP pads k-NNN targets with −100

struct LossResult {
  double loss = 0;    // mean over `count` elements; 0 when count is 0 (then all gradients are 0)
  int64_t count = 0;  // tokens or elements that entered the mean
};

// Where the smoothing mass goes.
enum class SmoothingForm {
  kMambaPt,  // 1−ε on the target, ε/(V−1) on each other class (MAMBA-PT's MDMLoss)
  kTorch,    // (1−ε)·onehot + ε/V on every class (torch CrossEntropyLoss(label_smoothing=ε))
};

template <class T, class Device = Host>
struct CrossEntropyArgs {
  View<const T, Device> logits;        // (tokens, V)
  View<const int64_t, Device> labels;  // (tokens), in [0, V) or ignore_index
  View<T, Device> dlogits;             // (tokens, V), overwritten; absent: loss only
  int64_t ignore_index = kIgnoreIndex;
  double label_smoothing = 0;  // ε in [0, 1)
  SmoothingForm form = SmoothingForm::kMambaPt;
  // Add Σ_c q_c log q_c, so the value equals KLDiv(log_softmax, q, 'batchmean') as MAMBA-PT
  // reports it (a constant shift; the gradient is the same).
  bool kl_divergence = false;
  double grad_scale = 1.0;  // e.g. task weight / accumulation steps
  // The number of labels that are not ignore_index, when the caller knows it from its host copy
  // (−1: counted by the op). A device backend then skips its counting pass, the read-back that
  // waits for it and its label range check: the caller must have checked the labels itself.
  int64_t host_count = -1;
  // Where a device backend leaves {mean loss, count} (2 doubles) instead of reading the loss back:
  // no synchronisation, so the op can run inside a CUDA graph. The returned LossResult then has
  // count −1; the caller reads `result` later. The labels must have been checked by the caller: a
  // label outside [0, V) that is not ignore_index makes the loss NaN. Host backends fill it too.
  View<double, Device> result;

  int64_t tokens() const { return logits.dim(0); }
  int64_t classes() const { return logits.dim(1); }
  void check() const {
    ops::check_rank2(logits, "cross_entropy", "logits");
    ops::check_vector(labels, tokens(), "cross_entropy", "labels");
    if (ops::present(dlogits)) ops::check_matrix(dlogits, tokens(), classes(), "cross_entropy", "dlogits");
    if (ops::present(result)) ops::check_vector(result, 2, "cross_entropy", "result");
    MAMBATRACK_CHECK(label_smoothing >= 0 && label_smoothing < 1, ConfigError,
                     "cross_entropy: label_smoothing must be in [0, 1), got ", label_smoothing);
    MAMBATRACK_CHECK(classes() >= 2 || label_smoothing == 0, ConfigError, "cross_entropy: label smoothing needs",
                     " at least 2 classes, logits have ", classes());
    MAMBATRACK_CHECK_SHAPE(classes() >= 1, "cross_entropy: logits ", logits.shape, " have no classes");
  }
  // Target probability on the label (on) and on every other class (off).
  void smoothing_weights(double& on, double& off) const {
    const double eps = label_smoothing, v = static_cast<double>(classes());
    if (form == SmoothingForm::kMambaPt) {
      on = 1.0 - eps;
      off = eps > 0 ? eps / (v - 1.0) : 0.0;
    } else {
      on = 1.0 - eps + eps / v;
      off = eps / v;
    }
  }
  // Σ_c q_c log q_c (0·log 0 = 0): what kl_divergence adds per counted token.
  double q_log_q() const {
    double on, off;
    smoothing_weights(on, off);
    auto xlogx = [](double x) { return x > 0 ? x * std::log(x) : 0.0; };
    return xlogx(on) + static_cast<double>(classes() - 1) * xlogx(off);
  }
};

// Binary cross-entropy on one logit per element with targets in [0, 1]
// (torch.nn.BCEWithLogitsLoss). A 2-class problem with logits (N, 2) is cross_entropy with V = 2.
template <class T, class Device = Host>
struct BceWithLogitsArgs {
  View<const T, Device> logits;   // any shape, N elements
  View<const T, Device> targets;  // N elements in [0, 1]
  View<T, Device> dlogits;        // N elements, overwritten; absent: loss only
  double grad_scale = 1.0;
  void check() const {
    MAMBATRACK_CHECK_SHAPE(logits.numel() == targets.numel(), "bce_with_logits: logits ", logits.shape,
                           " and targets ", targets.shape, " differ in size");
    if (ops::present(dlogits))
      MAMBATRACK_CHECK_SHAPE(dlogits.numel() == logits.numel(), "bce_with_logits: dlogits ", dlogits.shape,
                             " does not match logits ", logits.shape);
  }
};

// Mean squared error over the counted elements: element i counts when mask is absent or
// mask[i] ≠ 0, and (with skip_pad_targets) targets[i] ≠ pad_value. FM4NPP's k-NNN loss is
// this with no mask and the −100 padding of its targets (kmask = knn ≠ −100), mean over all
// counted elements of the batch.
// Regression targets stay in float under bfloat16 predictions: mixed precision takes the loss in
// fp32 against the unrounded targets (as torch autocast does for mse_loss).
template <class T>
struct MseTarget {
  using type = T;
};
template <>
struct MseTarget<bfloat16> {
  using type = float;
};
template <class T>
using mse_target_t = typename MseTarget<T>::type;

template <class T, class Device = Host>
struct MaskedMseArgs {
  View<const T, Device> predictions;  // any shape, N elements
  View<const mse_target_t<T>, Device> targets;  // N elements (float under bfloat16 predictions)
  View<const uint8_t, Device> mask;   // N elements, or absent
  View<T, Device> dpredictions;       // N elements, overwritten (0 where not counted); absent: loss only
  bool skip_pad_targets = true;
  double pad_value = kMsePadValue;
  double grad_scale = 1.0;
  View<double, Device> result;  // as CrossEntropyArgs::result: {mean loss, count}, no read-back
  void check() const {
    MAMBATRACK_CHECK_SHAPE(predictions.numel() == targets.numel(), "masked_mse: predictions ",
                           predictions.shape, " and targets ", targets.shape, " differ in size");
    if (ops::present(mask))
      MAMBATRACK_CHECK_SHAPE(mask.numel() == predictions.numel(), "masked_mse: mask ", mask.shape,
                             " does not match predictions ", predictions.shape);
    if (ops::present(dpredictions))
      MAMBATRACK_CHECK_SHAPE(dpredictions.numel() == predictions.numel(), "masked_mse: dpredictions ",
                             dpredictions.shape, " does not match predictions ", predictions.shape);
    if (ops::present(result)) ops::check_vector(result, 2, "masked_mse", "result");
  }
};

namespace ops {
// Host-side label check: every label is ignore_index or in [0, classes).
inline void check_labels(View<const int64_t, Host> labels, int64_t classes, int64_t ignore_index,
                         const char* op) {
  for (int64_t t = 0; t < labels.numel(); ++t)
    MAMBATRACK_CHECK_SHAPE(labels[t] == ignore_index || (labels[t] >= 0 && labels[t] < classes), op,
                           ": token ", t, " has label ", labels[t], ", outside [0, ", classes,
                           ") and not the ignore index ", ignore_index);
}
}  // namespace ops

}  // namespace mambatrack
