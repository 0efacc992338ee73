// train/graph_mode.hpp: padding a packed batch to the graph token budget keeps the real tokens and
// sequences in place, adds exactly pad_sequences sequences of PAD tokens, none longer than the
// longest real sequence allowed, and fills the budget exactly; too large a batch is an error.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "mambatrack/core/philox.hpp"
#include "mambatrack/train/graph_mode.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;

TEST_CASE("graph mode: padding to the token budget", "[train][graphs]") {
  const uint64_t seed = test::test_seed(6060);
  INFO("seed " << seed);
  Philox rng(seed, 1);
  const int64_t batch = 7, max_len = 9, pad_token = 3;
  const train::GraphBudget budget = train::graph_budget(batch, max_len);
  CHECK(budget.tokens == batch * max_len);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<int32_t> tokens;
    std::vector<int64_t> cu{0};
    const int64_t b = 1 + static_cast<int64_t>(rng.below(static_cast<uint64_t>(batch)));
    for (int64_t s = 0; s < b; ++s) {
      const int64_t len = static_cast<int64_t>(rng.below(static_cast<uint64_t>(max_len + 1)));  // empty ones too
      for (int64_t t = 0; t < len; ++t) tokens.push_back(static_cast<int32_t>(10 + rng.below(100)));
      cu.push_back(cu.back() + len);
    }
    std::vector<int64_t> tok_out, cu_out;
    train::pad_to_budget(tokens, cu, budget, pad_token, tok_out, cu_out);
    REQUIRE(static_cast<int64_t>(tok_out.size()) == budget.tokens);
    REQUIRE(static_cast<int64_t>(cu_out.size()) == b + 1 + budget.pad_sequences);
    for (std::size_t i = 0; i < cu.size(); ++i) CHECK(cu_out[i] == cu[i]);
    for (std::size_t i = 0; i < tokens.size(); ++i) CHECK(tok_out[i] == tokens[i]);
    for (std::size_t i = tokens.size(); i < tok_out.size(); ++i) CHECK(tok_out[i] == pad_token);
    CHECK(cu_out.back() == budget.tokens);
    for (std::size_t s = cu.size(); s < cu_out.size(); ++s) {
      CHECK(cu_out[s] >= cu_out[s - 1]);
      CHECK(cu_out[s] - cu_out[s - 1] <= max_len);
    }
  }
  std::vector<int32_t> too_many(static_cast<std::size_t>(budget.tokens + 1), 1);
  std::vector<int64_t> out_t, out_c;
  CHECK_THROWS_AS(train::pad_to_budget(too_many, std::vector<int64_t>{0, budget.tokens + 1}, budget, 0, out_t, out_c),
                  ShapeError);
  CHECK_THROWS_AS(train::graph_budget(0, 5), ConfigError);
}
