// Linear (y = x·Wᵀ + b): CPU float vs double reference, finite differences of the reference
// backward, exact small-integer GEMMs, accumulate/overwrite contract, shape errors.
#include <catch2/catch.hpp>

#include "mambatrack/ops/cpu/linear.hpp"
#include "mambatrack/ops/reference/linear.hpp"
#include "op_test_util.hpp"

using namespace mambatrack;
using namespace mambatrack::test;

namespace {
struct LinearCase {
  int64_t n, in, out;
  bool bias;
};
}  // namespace

TEST_CASE("linear: CPU forward and backward match the double reference", "[cpu][ops]") {
  const uint64_t seed = test_seed(101);
  INFO("seed " << seed);
  for (const LinearCase c : {LinearCase{1, 3, 5, true}, LinearCase{7, 16, 8, false}, LinearCase{33, 64, 256, true},
                             LinearCase{130, 256, 64, true}}) {
    INFO("tokens " << c.n << " in " << c.in << " out " << c.out << " bias " << c.bias);
    VecD x = rnd(c.n * c.in, seed), w = rnd(c.out * c.in, seed + 1), b = rnd(c.out, seed + 2),
         dy = rnd(c.n * c.out, seed + 3), dw0 = rnd(c.out * c.in, seed + 4), db0 = rnd(c.out, seed + 5);
    VecD y(c.n * c.out), dx(c.n * c.in), dw = dw0, db = db0;
    const Shape sx{c.n, c.in}, sw{c.out, c.in}, sy{c.n, c.out}, sb{c.out};
    reference::linear_fwd({cv(x, sx), cv(w, sw), c.bias ? cv(b, sb) : View<const double>(), mv(y, sy)});
    reference::linear_bwd({cv(x, sx), cv(w, sw), cv(dy, sy), mv(dx, sx), mv(dw, sw),
                           c.bias ? mv(db, sb) : View<double>()});

    VecF xf = to_float(x), wf = to_float(w), bf = to_float(b), dyf = to_float(dy);
    VecF yf(y.size()), dxf(dx.size(), 7.0f), dwf = to_float(dw0), dbf = to_float(db0);
    cpu::linear_fwd({cv(xf, sx), cv(wf, sw), c.bias ? cv(bf, sb) : View<const float>(), mv(yf, sy)});
    cpu::linear_bwd({cv(xf, sx), cv(wf, sw), cv(dyf, sy), mv(dxf, sx), mv(dwf, sw),
                     c.bias ? mv(dbf, sb) : View<float>()});
    // float GEMM: sums of up to 256 products of O(1) terms, each rounded at 6e-8 relative, plus the
    // inputs' own rounding to float: ~1e-6 relative in the worst case seen; 1e-5 leaves room.
    CHECK(rel_err(yf, y) < 1e-5);
    CHECK(rel_err(dxf, dx) < 1e-5);
    CHECK(rel_err(dwf, dw) < 1e-5);  // sums over up to 130 tokens
    if (c.bias) CHECK(rel_err(dbf, db) < 1e-5);
  }
}

TEST_CASE("linear: the per-thread token split matches one thread and the reference", "[cpu][ops]") {
  const uint64_t seed = test_seed(105);
  INFO("seed " << seed);
  const int64_t n = 1100, in = 24, out = 40;  // 2 threads: two ranges of >= 256 tokens
  const Shape sx{n, in}, sw{out, in}, sy{n, out}, sb{out};
  VecD x = rnd(n * in, seed), w = rnd(out * in, seed + 1), b = rnd(out, seed + 2), dy = rnd(n * out, seed + 3);
  VecD y(n * out), dx(n * in), dw(out * in, 0.0), db(out, 0.0);
  reference::linear_fwd({cv(x, sx), cv(w, sw), cv(b, sb), mv(y, sy)});
  reference::linear_bwd({cv(x, sx), cv(w, sw), cv(dy, sy), mv(dx, sx), mv(dw, sw), mv(db, sb)});
  const VecF xf = to_float(x), wf = to_float(w), bf = to_float(b), dyf = to_float(dy);
  const int threads = num_threads();
  for (int t : {1, 2, 3}) {
    INFO("threads " << t);
    set_num_threads(t);
    VecF yf(y.size()), dxf(dx.size()), dwf(dw.size(), 0.0f), dbf(db.size(), 0.0f);
    cpu::linear_fwd({cv(xf, sx), cv(wf, sw), cv(bf, sb), mv(yf, sy)});
    cpu::linear_bwd({cv(xf, sx), cv(wf, sw), cv(dyf, sy), mv(dxf, sx), mv(dwf, sw), mv(dbf, sb)});
    CHECK(rel_err(yf, y) < 1e-5);   // float dot products of 24 terms
    CHECK(rel_err(dxf, dx) < 1e-5);
    CHECK(rel_err(dwf, dw) < 1e-5);  // float sums over 1100 tokens in 1-3 partials
    CHECK(rel_err(dbf, db) < 1e-5);
  }
  set_num_threads(threads);
}

TEST_CASE("linear: reference backward matches central finite differences", "[cpu][ops][grad]") {
  const uint64_t seed = test_seed(102);
  INFO("seed " << seed);
  for (const LinearCase c : {LinearCase{1, 3, 2, true}, LinearCase{5, 4, 6, true}, LinearCase{3, 7, 1, false}}) {
    INFO("tokens " << c.n << " in " << c.in << " out " << c.out);
    VecD x = rnd(c.n * c.in, seed), w = rnd(c.out * c.in, seed + 1), b = rnd(c.out, seed + 2),
         dy = rnd(c.n * c.out, seed + 3);
    const Shape sx{c.n, c.in}, sw{c.out, c.in}, sy{c.n, c.out}, sb{c.out};
    VecD y(c.n * c.out);
    auto loss = [&] {  // L = Σ y·dy
      reference::linear_fwd({cv(x, sx), cv(w, sw), c.bias ? cv(b, sb) : View<const double>(), mv(y, sy)});
      return dot(y, dy);
    };
    VecD dx(x.size()), dw(w.size(), 0.0), db(b.size(), 0.0);
    reference::linear_bwd({cv(x, sx), cv(w, sw), cv(dy, sy), mv(dx, sx), mv(dw, sw),
                           c.bias ? mv(db, sb) : View<double>()});
    // Central differences in double at h = 1e-5: truncation and rounding both ~1e-10 (linear in
    // each input, so truncation is 0 here); 1e-6 is the required bound.
    CHECK(rel_err(dx, fd_grad(x, loss)) < 1e-6);
    CHECK(rel_err(dw, fd_grad(w, loss)) < 1e-6);
    if (c.bias) CHECK(rel_err(db, fd_grad(b, loss)) < 1e-6);
  }
}

TEST_CASE("linear: small-integer inputs give bit-exact float GEMMs", "[cpu][ops]") {
  const uint64_t seed = test_seed(103);
  INFO("seed " << seed);
  const int64_t n = 37, in = 64, out = 48;
  VecD x = small_ints(n * in, seed), w = small_ints(out * in, seed + 1), b = small_ints(out, seed + 2),
       dy = small_ints(n * out, seed + 3);
  const Shape sx{n, in}, sw{out, in}, sy{n, out}, sb{out};
  VecD y(n * out), dx(n * in), dw(out * in, 0.0), db(out, 0.0);
  reference::linear_fwd({cv(x, sx), cv(w, sw), cv(b, sb), mv(y, sy)});
  reference::linear_bwd({cv(x, sx), cv(w, sw), cv(dy, sy), mv(dx, sx), mv(dw, sw), mv(db, sb)});
  VecF xf = to_float(x), wf = to_float(w), bf = to_float(b), dyf = to_float(dy);
  VecF yf(y.size()), dxf(dx.size()), dwf(dw.size(), 0.0f), dbf(db.size(), 0.0f);
  cpu::linear_fwd({cv(xf, sx), cv(wf, sw), cv(bf, sb), mv(yf, sy)});
  cpu::linear_bwd({cv(xf, sx), cv(wf, sw), cv(dyf, sy), mv(dxf, sx), mv(dwf, sw), mv(dbf, sb)});
  // |products| <= 9, sums of <= 64 of them: every partial sum is an integer < 2^24, so exact.
  CHECK(rel_err(yf, y) == 0.0);
  CHECK(rel_err(dxf, dx) == 0.0);
  CHECK(rel_err(dwf, dw) == 0.0);
  CHECK(rel_err(dbf, db) == 0.0);
}

TEST_CASE("linear: backward accumulates dW and db, overwrites dx, skips absent outputs", "[cpu][ops]") {
  const uint64_t seed = test_seed(104);
  INFO("seed " << seed);
  const int64_t n = 9, in = 5, out = 4;
  VecF x = to_float(rnd(n * in, seed)), w = to_float(rnd(out * in, seed + 1)), dy = to_float(rnd(n * out, seed + 2));
  const Shape sx{n, in}, sw{out, in}, sy{n, out}, sb{out};
  VecF dx_once(n * in), dw_once(out * in, 0.0f), db_once(out, 0.0f);
  cpu::linear_bwd({cv(x, sx), cv(w, sw), cv(dy, sy), mv(dx_once, sx), mv(dw_once, sw), mv(db_once, sb)});
  VecF dx(n * in, 123.0f), dw(out * in, 0.0f), db(out, 0.0f);
  for (int k = 0; k < 2; ++k)
    cpu::linear_bwd({cv(x, sx), cv(w, sw), cv(dy, sy), mv(dx, sx), mv(dw, sw), mv(db, sb)});
  for (std::size_t i = 0; i < dx.size(); ++i) CHECK(dx[i] == dx_once[i]);  // overwritten, not 123 + ...
  for (std::size_t i = 0; i < dw.size(); ++i) CHECK(dw[i] == Approx(2 * dw_once[i]).epsilon(1e-6));
  for (std::size_t i = 0; i < db.size(); ++i) CHECK(db[i] == Approx(2 * db_once[i]).epsilon(1e-6));
  // dx absent (first layer) and dW absent (frozen weight): only db is touched.
  VecF db2(out, 0.0f);
  cpu::linear_bwd({cv(x, sx), cv(w, sw), cv(dy, sy), View<float>(), View<float>(), mv(db2, sb)});
  for (std::size_t i = 0; i < db2.size(); ++i) CHECK(db2[i] == db_once[i]);
}

TEST_CASE("linear: mismatched shapes throw ShapeError naming the sizes", "[cpu][ops]") {
  VecF x(6 * 5), w(4 * 3), y(6 * 4), b(3);
  using Catch::Matchers::Contains;
  CHECK_THROWS_AS(cpu::linear_fwd({cv(x, {6, 5}), cv(w, {4, 3}), {}, mv(y, {6, 4})}), ShapeError);
  CHECK_THROWS_WITH(cpu::linear_fwd({cv(x, {6, 5}), cv(w, {4, 3}), {}, mv(y, {6, 4})}),
                    Contains("x has 5 features") && Contains("(4, 3)"));
  VecF x2(6 * 3);
  CHECK_THROWS_WITH(cpu::linear_fwd({cv(x2, {6, 3}), cv(w, {4, 3}), cv(b, {3}), mv(y, {6, 4})}),
                    Contains("b has shape (3), expected (4)"));
  CHECK_THROWS_WITH(cpu::linear_fwd({cv(x2, {6, 3}), cv(w, {4, 3}), {}, mv(y, {4, 6})}),
                    Contains("y has shape (4, 6), expected (6, 4)"));
  VecF dy(6 * 4), dw(3 * 4);
  CHECK_THROWS_WITH(cpu::linear_bwd({cv(x2, {6, 3}), cv(w, {4, 3}), cv(dy, {6, 4}), {}, mv(dw, {3, 4}), {}}),
                    Contains("dw has shape (3, 4), expected (4, 3)"));
}
