// Embedding gather and scatter-add backward: CPU vs reference, finite differences of the
// reference backward, padding index, repeated ids, out-of-range ids.
#include <catch2/catch.hpp>

#include "mambatrack/ops/cpu/embedding.hpp"
#include "mambatrack/ops/reference/embedding.hpp"
#include "op_test_util.hpp"

using namespace mambatrack;
using namespace mambatrack::test;

namespace {
std::vector<int64_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  Philox rng(seed, 5);
  std::vector<int64_t> ids(n);
  for (auto& id : ids) id = rng.range(0, vocab - 1);
  return ids;
}
}  // namespace

TEST_CASE("embedding: CPU gather and scatter-add match the double reference", "[cpu][ops]") {
  const uint64_t seed = test_seed(401);
  INFO("seed " << seed);
  for (auto [n, vocab, d] : {std::tuple<int64_t, int64_t, int64_t>{1, 5, 3}, {50, 7, 33}, {4096, 300, 64}}) {
    INFO("tokens " << n << " vocab " << vocab << " dim " << d);
    const auto ids = random_ids(n, vocab, seed);  // few ids, many repeats: the scatter-add sums
    const int64_t pad = 2;
    VecD table = rnd(vocab * d, seed + 1), dy = rnd(n * d, seed + 2), dt0 = rnd(vocab * d, seed + 3);
    VecD y(n * d), dt = dt0;
    const Shape st{vocab, d}, sy{n, d}, si{n};
    reference::embedding_fwd({cv(ids, si), cv(table, st), mv(y, sy), pad});
    reference::embedding_bwd({cv(ids, si), cv(dy, sy), mv(dt, st), pad});
    VecF tf = to_float(table), dyf = to_float(dy), yf(n * d), dtf = to_float(dt0);
    cpu::embedding_fwd({cv(ids, si), cv(tf, st), mv(yf, sy), pad});
    cpu::embedding_bwd({cv(ids, si), cv(dyf, sy), mv(dtf, st), pad});
    CHECK(rel_err(yf, y) < 1e-7);    // a copy: only the float rounding of the table (3e-8)
    CHECK(rel_err(dtf, dt) < 1e-5);  // float sums of up to ~4096/300 rows per id
    for (int64_t i = 0; i < d; ++i) CHECK(dtf[pad * d + i] == static_cast<float>(dt0[pad * d + i]));
  }
}

TEST_CASE("embedding: reference backward matches central finite differences", "[cpu][ops][grad]") {
  const uint64_t seed = test_seed(402);
  INFO("seed " << seed);
  const int64_t n = 9, vocab = 4, d = 3;
  const std::vector<int64_t> ids{0, 3, 3, 1, 0, 3, 2, 1, 3};
  VecD table = rnd(vocab * d, seed), dy = rnd(n * d, seed + 1), y(n * d);
  const Shape st{vocab, d}, sy{n, d}, si{n};
  auto loss = [&] {
    reference::embedding_fwd({cv(ids, si), cv(table, st), mv(y, sy)});
    return dot(y, dy);
  };
  VecD dt(vocab * d, 0.0);
  reference::embedding_bwd({cv(ids, si), cv(dy, sy), mv(dt, st)});
  CHECK(rel_err(dt, fd_grad(table, loss)) < 1e-6);  // double central differences, h = 1e-5
}

TEST_CASE("embedding: hand-checked scatter-add with repeated ids and a padding row", "[cpu][ops]") {
  const std::vector<int64_t> ids{1, 0, 1, 1};
  const VecF dy{1, 2, 3, 4, 5, 6, 7, 8};  // (4 tokens, 2)
  VecF dt{10, 10, 20, 20, 30, 30};        // (3, 2), accumulated into
  cpu::embedding_bwd({cv(ids, {4}), cv(dy, {4, 2}), mv(dt, {3, 2}), /*padding_idx=*/0});
  CHECK(dt == VecF{10, 10, 20 + 1 + 5 + 7, 20 + 2 + 6 + 8, 30, 30});  // row 0 (padding) untouched
  cpu::embedding_bwd({cv(ids, {4}), cv(dy, {4, 2}), mv(dt, {3, 2})});  // no padding: row 0 gets token 1
  CHECK(dt[0] == 13.0f);
  CHECK(dt[1] == 14.0f);
}

TEST_CASE("embedding: out-of-range ids and a bad padding index are named in the error", "[cpu][ops]") {
  using Catch::Matchers::Contains;
  const VecF table(5 * 2);
  VecF y(3 * 2);
  const std::vector<int64_t> ids{1, 5, 0};
  CHECK_THROWS_AS(cpu::embedding_fwd({cv(ids, {3}), cv(table, {5, 2}), mv(y, {3, 2})}), ShapeError);
  CHECK_THROWS_WITH(cpu::embedding_fwd({cv(ids, {3}), cv(table, {5, 2}), mv(y, {3, 2})}),
                    Contains("token 1 has id 5, outside the vocabulary [0, 5)"));
  const std::vector<int64_t> neg{-1};
  VecF dt(5 * 2), dy(2);
  CHECK_THROWS_WITH(cpu::embedding_bwd({cv(neg, {1}), cv(dy, {1, 2}), mv(dt, {5, 2})}), Contains("id -1"));
  const std::vector<int64_t> ok{1, 2, 0};
  CHECK_THROWS_AS(cpu::embedding_fwd({cv(ok, {3}), cv(table, {5, 2}), mv(y, {3, 2}), 7}), ConfigError);
  CHECK_THROWS_WITH(cpu::embedding_fwd({cv(ok, {3}), cv(table, {5, 2}), mv(y, {2, 3})}),
                    Contains("y has shape (2, 3), expected (3, 2)"));
}
