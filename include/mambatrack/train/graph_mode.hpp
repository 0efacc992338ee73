// Graph mode of the training tasks (CUDA backends): a full training batch is padded to a fixed
// token budget so every step has the same shapes, and the backbone's forward and backward are
// replayed from CUDA graphs (nn/cuda_graph.cuh) instead of launching each kernel from the host.
// The padding is K extra sequences of PAD tokens appended after the real ones, each at most
// max_len long (so positions stay inside the position table); the real tokens keep their rows
// and their results: sequences never mix, and the padding gets no loss and so no gradient.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "mambatrack/core/error.hpp"

namespace mambatrack::train {

// Whether a Backend can capture graphs (it names a Graph type: nn::CudaBackendT).
template <class B, class = void>
struct HasGraphs : std::false_type {};
template <class B>
struct HasGraphs<B, std::void_t<typename B::Graph>> : std::true_type {};

// The Backend's Graph type, or (host backends) a stand-in that is never ready.
struct NoGraph {
  bool ready() const { return false; }
};
template <class B, bool = HasGraphs<B>::value>
struct GraphOf {
  using type = NoGraph;
};
template <class B>
struct GraphOf<B, true> {
  using type = typename B::Graph;
};
template <class B>
using graph_t = typename GraphOf<B>::type;

struct GraphBudget {
  int64_t tokens = 0;      // every padded batch has exactly this many tokens
  int64_t max_len = 0;     // the longest padding sequence
  int64_t pad_sequences = 0;
};

// The budget of `batch_size` sequences of at most `max_len` tokens: batch_size · max_len tokens,
// spread over batch_size padding sequences (the padding is never longer than the budget, so
// ceil(padding / batch_size) <= max_len).
inline GraphBudget graph_budget(int64_t batch_size, int64_t max_len) {
  MAMBATRACK_CHECK(batch_size >= 1 && max_len >= 1, ConfigError, "graph mode: batch size ", batch_size,
                   " and longest sequence ", max_len, " must be positive");
  return GraphBudget{batch_size * max_len, max_len, batch_size};
}

// tokens/cu of a packed batch -> padded copies: tokens_out has budget.tokens entries (pad_token
// after the real ones), cu_out has cu.size() + pad_sequences entries.
template <class I>
void pad_to_budget(const std::vector<I>& tokens, const std::vector<int64_t>& cu, const GraphBudget& budget,
                   int64_t pad_token, std::vector<int64_t>& tokens_out, std::vector<int64_t>& cu_out) {
  const auto n = static_cast<int64_t>(tokens.size());
  MAMBATRACK_CHECK(!cu.empty() && cu.back() == n, ShapeError, "graph mode: cu_seqlens ends at ",
                   cu.empty() ? -1 : cu.back(), " but the batch has ", n, " tokens");
  MAMBATRACK_CHECK(n <= budget.tokens, ShapeError, "graph mode: a batch of ", n,
                   " tokens exceeds the token budget of ", budget.tokens);
  tokens_out.assign(tokens.begin(), tokens.end());
  tokens_out.resize(static_cast<std::size_t>(budget.tokens), pad_token);
  cu_out.assign(cu.begin(), cu.end());
  const int64_t pad = budget.tokens - n, k = budget.pad_sequences;
  for (int64_t j = 0; j < k; ++j) cu_out.push_back(cu_out.back() + pad / k + (j < pad % k ? 1 : 0));
}

}  // namespace mambatrack::train
