// Shape, Tensor and View; the Error hierarchy and its messages; the logging sink.
#include <catch2/catch.hpp>

#include "mambatrack/core/core.hpp"

using namespace mambatrack;

TEST_CASE("tensor: shape, ownership, views and indexing", "[cpu][core]") {
  Tensor<float> t(Shape{2, 3, 4});
  CHECK(t.numel() == 24);
  CHECK(reinterpret_cast<uintptr_t>(t.data()) % 64 == 0);
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(i);
  CHECK(t.at(1, 2, 3) == 23.0f);
  View<float> v = t.view();
  CHECK(v.rows(1, 2).at(0, 0, 1) == 13.0f);
  View<const float> cv = v;  // const conversion
  CHECK(cv.reshape(Shape{6, 4}).at(5, 3) == 23.0f);
  CHECK_THROWS_AS(v.reshape(Shape{5, 5}), ShapeError);
  CHECK_THROWS_WITH(v.rows(1, 3), Catch::Contains("rows [1, 3) of (2, 3, 4)"));

  Tensor<float> moved = std::move(t);
  CHECK(t.data() == nullptr);
  CHECK(moved.at(0, 0, 1) == 1.0f);
  Tensor<float> other(Shape{24});
  copy<float>(moved.view(), other.view());
  CHECK(other[23] == 23.0f);
  fill(other.view(), -1.5f);
  CHECK(other[7] == -1.5f);
  Tensor<double> empty(Shape{0, 8});
  CHECK(empty.numel() == 0);
  CHECK(Shape{}.numel() == 1);
  CHECK(Shape{4, 5}.str() == "(4, 5)");
  CHECK_THROWS_AS((Shape{1, 2, 3, 4}.push_back(5)), ShapeError);
  CHECK_THROWS_AS((Shape{-1}), ShapeError);
}

TEST_CASE("errors: hierarchy and messages name the place", "[cpu][core]") {
  const DataError e("hits.csv", 1042, "volume_id", "expected an integer, got \"7.5\"");
  CHECK(std::string(e.what()) == "hits.csv:1042: column 'volume_id': expected an integer, got \"7.5\"");
  CHECK(e.line() == 1042);
  CHECK(e.field() == "volume_id");
  try {
    MAMBATRACK_CHECK(1 + 1 == 3, ConfigError, "d_state ", 17, " is not compiled");
    FAIL("no throw");
  } catch (const Error& err) {
    CHECK(dynamic_cast<const ConfigError*>(&err) != nullptr);
    CHECK_THAT(err.what(), Catch::Contains("test_tensor.cpp:") && Catch::EndsWith("d_state 17 is not compiled"));
  }
  CHECK_THROWS_AS([] { MAMBATRACK_CHECK_SHAPE(false, "x"); }(), ShapeError);
}

TEST_CASE("logging: messages go to the sink the program sets", "[cpu][core]") {
  std::vector<std::pair<LogLevel, std::string>> got;
  auto previous = set_log_sink([&](LogLevel l, const std::string& m) { got.emplace_back(l, m); });
  log(LogLevel::Info, "read ", 12, " events");
  log(LogLevel::Warning, "skipped ", 1.5);
  set_log_sink(previous);
  log(LogLevel::Debug, "not captured");
  REQUIRE(got.size() == 2);
  CHECK(got[0].first == LogLevel::Info);
  CHECK(got[0].second == "read 12 events");
  CHECK(got[1].second == "skipped 1.5");
}
