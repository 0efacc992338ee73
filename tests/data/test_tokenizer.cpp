// Module tokenizer: ids, UNK, vocabulary cap, building from detectors.csv and from events, and
// the text file (round trip and every malformed line reported with its line number).
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

#include "data/data_test_util.hpp"
#include "mambatrack/data/tokenizer.hpp"
#include "mambatrack/data/trackml_io.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::data;

namespace {
std::string detectors_path() { return test::shared_dir() + "/data/trackml/detectors.csv"; }
}  // namespace

TEST_CASE("tokenizer: specials first, modules sorted by (volume, layer, module), unknown -> UNK", "[data][tokenizer]") {
  const Tokenizer t = Tokenizer::from_keys({{8, 2, 5}, {7, 4, 1}, {8, 2, 1}, {7, 4, 1}, {9, 2, 3}, {8, 10, 1}});
  CHECK(Tokenizer::kPad == 0);
  CHECK(Tokenizer::kMask == 1);
  CHECK(Tokenizer::kUnk == 2);
  CHECK(Tokenizer::kCls == 3);
  CHECK(Tokenizer::kSep == 4);
  CHECK(t.vocab_size() == 10);  // 5 specials + 5 distinct modules
  CHECK(t.token(7, 4, 1) == 5);
  CHECK(t.token(8, 2, 1) == 6);
  CHECK(t.token(8, 2, 5) == 7);
  CHECK(t.token(8, 10, 1) == 8);  // numeric, not string order (10 > 2)
  CHECK(t.token(9, 2, 3) == 9);
  CHECK(t.token(8, 2, 2) == Tokenizer::kUnk);
  CHECK(t.token(6, 0, 0) == Tokenizer::kUnk);
  CHECK(t.token(10, 0, 0) == Tokenizer::kUnk);
  CHECK(t.module(7) == ModuleKey{8, 2, 5});
  CHECK_THROWS_AS(t.module(Tokenizer::kSep), Error);
  CHECK_THROWS_AS(t.module(10), Error);
  CHECK(t.encode({{9, 2, 3}, {1, 1, 1}, {7, 4, 1}}) == std::vector<int32_t>{3, 9, 2, 5, 4});
  for (int32_t s = 0; s < 5; ++s) CHECK(Tokenizer::is_special(s));
  CHECK_FALSE(Tokenizer::is_special(5));

  // MAMBA-PT's vocab_size cap counts the specials and drops the highest-sorting modules.
  const Tokenizer capped = Tokenizer::from_keys({{8, 2, 5}, {7, 4, 1}, {8, 2, 1}}, 7);
  CHECK(capped.vocab_size() == 7);
  CHECK(capped.token(8, 2, 1) == 6);
  CHECK(capped.token(8, 2, 5) == Tokenizer::kUnk);
  CHECK_THROWS_AS(Tokenizer::from_keys({{1, 1, 1}}, 5), ConfigError);
}

TEST_CASE("tokenizer: from the real detectors.csv, all modules and the pixel volumes", "[data][tokenizer]") {
  if (!test::path_exists(detectors_path())) {
    WARN("skipped: " << detectors_path() << " is absent");
    return;
  }
  const auto modules = read_detectors(detectors_path());
  const Tokenizer all = Tokenizer::from_modules(modules);
  CHECK(all.vocab_size() == 5 + 18728);
  CHECK(all.token(7, 2, 1) == 5);
  CHECK(all.token(18, 12, 98) == 5 + 18727);
  const Tokenizer pixel = Tokenizer::from_modules(modules, {7, 8, 9});
  CHECK(pixel.num_modules() == 756 + 2492 + 756);  // trackml.md §2
  CHECK(pixel.token(8, 2, 1) == 5 + 756);          // after the 756 modules of volume 7
  CHECK(pixel.token(9, 14, 108) == 5 + 4003);
  CHECK(pixel.token(13, 2, 1) == Tokenizer::kUnk);
  // Ids follow the sorted order of the keys.
  for (int64_t i = 1; i < pixel.num_modules(); ++i)
    REQUIRE(pixel.module(static_cast<int32_t>(4 + i)) < pixel.module(static_cast<int32_t>(5 + i)));
}

TEST_CASE("tokenizer: from the hits of events, with a volume subset", "[data][tokenizer]") {
  Event a, b;
  a.hits.hit_id = {1, 2, 3};
  a.hits.volume_id = {8, 13, 8};
  a.hits.layer_id = {4, 2, 2};
  a.hits.module_id = {17, 5, 17};
  a.hits.x = a.hits.y = a.hits.z = {0.5f, 0.5f, 0.5f};
  b.hits = a.hits;
  b.hits.module_id = {3, 5, 17};
  const Tokenizer t = Tokenizer::from_events({a, b}, {8});
  CHECK(t.modules() == std::vector<ModuleKey>{{8, 2, 17}, {8, 4, 3}, {8, 4, 17}});
  CHECK(Tokenizer::from_events({a, b}).num_modules() == 4);
  CHECK(Tokenizer::hit_modules(a.hits) == std::vector<ModuleKey>{{8, 2, 17}, {8, 4, 17}, {13, 2, 5}});
}

TEST_CASE("tokenizer: save and load round trip, documented format", "[data][tokenizer]") {
  test::ScratchDir dir;
  const Tokenizer t = Tokenizer::from_keys({{17, 4, 3192}, {7, 2, 1}, {8, 8, 1092}});
  t.save(dir / "tok.txt");
  std::ifstream f(dir / "tok.txt");
  std::stringstream ss;
  ss << f.rdbuf();
  CHECK(ss.str() == "mambatrack-tokenizer 1\nmodules 3\n5 7 2 1\n6 8 8 1092\n7 17 4 3192\n");
  const Tokenizer u = Tokenizer::load(dir / "tok.txt");
  CHECK(u == t);
  CHECK(u.token(8, 8, 1092) == 6);
  // An empty vocabulary is valid too.
  Tokenizer().save(dir / "empty.txt");
  CHECK(Tokenizer::load(dir / "empty.txt").vocab_size() == 5);
}

TEST_CASE("tokenizer: malformed files are DataErrors with the line", "[data][tokenizer]") {
  test::ScratchDir dir;
  struct Case {
    const char* text;
    int64_t line;
    const char* words;
  };
  const Case cases[] = {
      {"", 1, "end of file"},
      {"tokenizer 1\nmodules 0\n", 1, "header"},
      {"mambatrack-tokenizer 2\nmodules 0\n", 1, "header"},
      {"mambatrack-tokenizer 1\nmodule 1\n5 7 2 1\n", 2, "modules N"},
      {"mambatrack-tokenizer 1\nmodules -1\n", 2, "modules N"},
      {"mambatrack-tokenizer 1\nmodules 2\n5 7 2 1\n", 4, "end of file"},
      {"mambatrack-tokenizer 1\nmodules 2\n5 7 2 1\n6 7 x 2\n", 4, "four integers"},
      {"mambatrack-tokenizer 1\nmodules 2\n5 7 2 1\n6 7 2 2 9\n", 4, "four integers"},
      {"mambatrack-tokenizer 1\nmodules 2\n5 7 2 1\n7 7 2 2\n", 4, "expected token 6"},
      {"mambatrack-tokenizer 1\nmodules 2\n5 7 2 1\n6 7 2 1\n", 4, "strictly increasing"},
      {"mambatrack-tokenizer 1\nmodules 1\n5 7 2 1\n6 7 2 2\n", 4, "unexpected content"},
  };
  for (const auto& c : cases) {
    INFO("file text: " << c.text);
    {
      std::ofstream f(dir / "bad.txt", std::ios::trunc);
      f << c.text;
    }
    try {
      Tokenizer::load(dir / "bad.txt");
      FAIL("accepted");
    } catch (const DataError& e) {
      CHECK(e.line() == c.line);
      CHECK(e.file() == dir / "bad.txt");
      CHECK_THAT(std::string(e.what()), Catch::Contains(c.words));
    }
  }
  CHECK_THROWS_AS(Tokenizer::load(dir / "missing.txt"), DataError);
}
