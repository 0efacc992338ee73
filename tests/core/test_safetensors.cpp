// safetensors reader and writer: round trips of every dtype, byte-for-byte agreement with files
// written by the real `safetensors` package, and one clear CheckpointError per kind of corruption.
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "mambatrack/core/safetensors.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;

namespace {

std::vector<unsigned char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<unsigned char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Re-writes every tensor and the metadata of a file with our writer.
std::vector<unsigned char> rewrite(const SafetensorsFile& f) {
  SafetensorsWriter w;
  for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
  for (const auto& t : f.tensors()) w.add(t.name, t.dtype, t.shape, f.raw(t.name), t.bytes());
  return w.serialize();
}

// A valid file whose header we then corrupt: header text and data section given directly.
std::vector<unsigned char> make_file(const std::string& header, std::size_t data_bytes,
                                     int64_t header_len = -1) {
  std::vector<unsigned char> out(8 + header.size() + data_bytes, 0x5a);
  uint64_t n = header_len < 0 ? header.size() : static_cast<uint64_t>(header_len);
  for (int i = 0; i < 8; ++i) out[i] = static_cast<unsigned char>(n >> (8 * i));
  std::copy(header.begin(), header.end(), out.begin() + 8);
  return out;
}

std::string error_of(const std::vector<unsigned char>& bytes) {
  try {
    SafetensorsFile f(bytes, "case.safetensors");
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("safetensors: every dtype round-trips through writer and reader", "[cpu][core]") {
  const uint64_t seed = test::test_seed(101);
  INFO("seed " << seed);
  Philox rng(seed);
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  w.set_metadata("config", R"({"d_model": 64, "name": "ü"})");
  std::map<std::string, std::vector<unsigned char>> want;
  std::map<std::string, std::vector<int64_t>> shapes;
  const std::vector<std::vector<int64_t>> shape_choices = {{}, {0}, {5}, {3, 4}, {2, 1, 3}, {1, 2, 2, 2, 2}};
  for (int d = 0; d < kNumDTypes; ++d) {
    for (std::size_t s = 0; s < shape_choices.size(); ++s) {
      const DType dt = static_cast<DType>(d);
      const std::string name = std::string("t.") + dtype_name(dt) + "." + std::to_string(s);
      int64_t n = 1;
      for (auto x : shape_choices[s]) n *= x;
      std::vector<unsigned char> bytes(static_cast<std::size_t>(n) * dtype_size(dt));
      for (auto& b : bytes) b = static_cast<unsigned char>(rng.next_u32());
      w.add(name, dt, shape_choices[s], bytes.data(), bytes.size());
      want[name] = bytes;
      shapes[name] = shape_choices[s];
    }
  }
  const auto file = w.serialize();
  REQUIRE(file.size() % 8 == 0);  // 8-byte header padding and whole-element payloads here
  SafetensorsFile r(file, "roundtrip");
  REQUIRE(r.tensors().size() == want.size());
  CHECK(r.metadata().at("format") == "pt");
  CHECK(r.metadata().at("config") == R"({"d_model": 64, "name": "ü"})");
  for (const auto& [name, bytes] : want) {
    const auto& info = r.info(name);
    CHECK(info.shape == shapes[name]);
    CHECK(std::string(dtype_name(info.dtype)) == name.substr(2, name.rfind('.') - 2));
    REQUIRE(info.bytes() == bytes.size());
    CHECK(std::equal(bytes.begin(), bytes.end(), r.raw(name)));
  }
  // Writing what was read gives the same bytes again.
  CHECK(rewrite(r) == file);
}

TEST_CASE("safetensors: typed reads and conversions", "[cpu][core]") {
  SafetensorsWriter w;
  std::vector<float> f = {1.5f, -2.25f, 3.0f, 1e-3f, 7.0f, -0.5f};
  std::vector<int64_t> ids = {-3, 0, 9007199254740993LL};
  std::vector<uint16_t> bf = {float_to_bf16_bits(1.0f), float_to_bf16_bits(-3.5f)};
  w.add<float>("f", {2, 3}, f.data());
  w.add<int64_t>("ids", {3}, ids.data());
  w.add("bf", DType::BF16, {2}, bf.data(), 4);
  SafetensorsFile r(w.serialize(), "typed");
  CHECK(r.read<float>("f") == f);
  CHECK(r.read<int64_t>("ids") == ids);
  auto t = r.tensor<double>("f");
  CHECK(t.shape() == Shape{2, 3});
  CHECK(t.at(1, 0) == 1e-3f);
  CHECK(r.as_double("bf") == std::vector<double>{1.0, -3.5});
  CHECK_THROWS_WITH(r.read<double>("f"), Catch::Contains("tensor 'f' is F32, expected F64"));
  CHECK_THROWS_WITH(r.info("nope"), Catch::Contains("no tensor named 'nope'"));
}

TEST_CASE("safetensors: our writer reproduces the real library's file byte for byte", "[cpu][core]") {
  const std::string path = test::fixtures_dir() + "/all_dtypes.safetensors";
  const auto bytes = read_bytes(path);
  REQUIRE(!bytes.empty());
  SafetensorsFile f = SafetensorsFile::open(path);
  CHECK(rewrite(f) == bytes);

  // Names, dtypes, shapes and value sums as the real library reported them.
  std::ifstream js(test::fixtures_dir() + "/all_dtypes.json");
  const auto desc = nlohmann::json::parse(js);
  CHECK(f.metadata() == desc["metadata"].get<std::map<std::string, std::string>>());
  REQUIRE(f.tensors().size() == desc["tensors"].size());
  for (auto it = desc["tensors"].begin(); it != desc["tensors"].end(); ++it) {
    INFO(it.key());
    const auto& info = f.info(it.key());
    CHECK(dtype_name(info.dtype) == it.value()["dtype"].get<std::string>());
    CHECK(info.shape == it.value()["shape"].get<std::vector<int64_t>>());
    if (!it.value()["sum"].is_null()) {
      double sum = 0;
      for (double v : f.as_double(it.key())) sum += v;
      // 64-bit integers above 2^53 lose bits in double in both sums: compare relatively.
      CHECK(sum == Approx(it.value()["sum"].get<double>()).epsilon(1e-12));
    }
  }
}

TEST_CASE("safetensors: every golden file reads as the real library reads it", "[cpu][core][golden]") {
  const std::string dir = test::golden_dir();
  if (!test::path_exists(dir)) {
    WARN("golden vectors not found at " << dir << " (set MAMBATRACK_GOLDEN_DIR): skipped");
    return;
  }
  std::ifstream js(test::fixtures_dir() + "/golden_summary.json");
  const auto summary = nlohmann::json::parse(js);
  int files = 0;
  for (auto file = summary.begin(); file != summary.end(); ++file) {
    const std::string path = dir + "/" + file.key();
    if (!test::path_exists(path)) continue;
    INFO(path);
    ++files;
    SafetensorsFile f = SafetensorsFile::open(path);
    CHECK(f.metadata() == file.value()["metadata"].get<std::map<std::string, std::string>>());
    // The case description is JSON naming the op.
    const auto info = nlohmann::json::parse(f.metadata().at("case"));
    CHECK(info.contains("op"));
    const auto& tensors = file.value()["tensors"];
    REQUIRE(f.tensors().size() == tensors.size());
    for (auto t = tensors.begin(); t != tensors.end(); ++t) {
      INFO(t.key());
      const auto& ti = f.info(t.key());
      const std::string want_dtype = t.value()["dtype"].get<std::string>() == "int64" ? "I64" : "F64";
      CHECK(dtype_name(ti.dtype) == want_dtype);
      CHECK(ti.shape == t.value()["shape"].get<std::vector<int64_t>>());
      double sum = 0, sumsq = 0;
      for (double v : f.as_double(t.key())) {
        sum += v;
        sumsq += v * v;
      }
      // Sums of the same doubles in a different order: a few ulps of the sum of magnitudes.
      CHECK(sumsq == Approx(t.value()["sumsq"].get<double>()).epsilon(1e-12));
      CHECK(sum == Approx(t.value()["sum"].get<double>()).margin(1e-12 * (1 + std::sqrt(sumsq) * 100)));
    }
    // Files written by the real library come out of our writer byte for byte.
    CHECK(rewrite(f) == read_bytes(path));
  }
  CHECK(files == 9);
}

TEST_CASE("safetensors: atomic write to disk and reading it back", "[cpu][core]") {
  const std::string path = "test_core_atomic.safetensors";
  std::vector<double> v = {1, 2, 3};
  SafetensorsWriter w;
  w.add<double>("v", {3}, v.data());
  w.write(path);
  CHECK(SafetensorsFile::open(path).read<double>("v") == v);
  CHECK_FALSE(test::path_exists(path + ".tmp." + std::to_string(::getpid())));
  std::remove(path.c_str());
  CHECK_THROWS_AS(SafetensorsFile::open("no/such/file.safetensors"), CheckpointError);
  CHECK_THROWS_WITH(w.write("no/such/dir/x.safetensors"), Catch::Contains("no/such/dir/x.safetensors"));
}

TEST_CASE("safetensors: writer refuses inconsistent input", "[cpu][core]") {
  SafetensorsWriter w;
  std::vector<float> f(6);
  CHECK_THROWS_AS(w.add("a", DType::F32, {2, 2}, f.data(), 24), ShapeError);
  w.add<float>("a", {6}, f.data());
  CHECK_THROWS_WITH(w.add<float>("a", {6}, f.data()), Catch::Contains("added twice"));
  CHECK_THROWS_AS(w.add<float>("__metadata__", {6}, f.data()), CheckpointError);
}

TEST_CASE("safetensors: each corruption gives its own clear error", "[cpu][core]") {
  const std::string good = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}})";
  REQUIRE(error_of(make_file(good, 16)).empty());

  struct Case {
    const char* what;
    std::vector<unsigned char> bytes;
    const char* expect;
  };
  auto truncated = make_file(good, 16);
  truncated.resize(truncated.size() - 3);
  const std::vector<Case> cases = {
      {"shorter than 8 bytes", {1, 2, 3}, "shorter than the 8-byte header length"},
      {"header length past the end", make_file(good, 16, 100000), "runs past the end of the file"},
      {"header length over the limit", make_file(good, 16, 200000000), "exceeds the format's limit"},
      {"header not JSON", make_file("{\"a\": [1, 2", 0), "header is not valid JSON"},
      {"header not starting with {", make_file("[1,2,3]", 0), "does not start with '{'"},
      {"truncated data section", truncated, "the tensors cover 16 bytes but the data section holds 13"},
      {"overlapping offsets",
       make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       "overlaps tensor 'a'"},
      {"gap between tensors",
       make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", 12),
       "gap of 4 bytes in the data section before tensor 'b'"},
      {"wrong byte count for a shape",
       make_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       "shape (3) of F32 needs 12 bytes but data_offsets span 8"},
      {"unknown dtype", make_file(R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8),
       "unknown dtype \"F33\""},
      {"duplicate names",
       make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
       "tensor name 'a' appears twice"},
      {"negative offset", make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 0),
       "negative data offset -4"},
      {"offsets reversed", make_file(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", 4),
       "end before they begin"},
      {"negative dimension", make_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
       "shape entry -1 is not a non-negative integer"},
      {"shape overflowing 64 bits",
       make_file(R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
       "overflows"},
      {"missing data_offsets", make_file(R"({"a":{"dtype":"F32","shape":[1]}})", 4), "has no 'data_offsets'"},
      {"metadata not strings", make_file(R"({"__metadata__":{"format":3}})", 0), "value of 'format' is not a string"},
      {"tensor entry not an object", make_file(R"({"a":[1,2]})", 0), "entry 'a' is not an object"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    const std::string msg = error_of(c.bytes);
    CHECK_THAT(msg, Catch::Contains(c.expect));
    CHECK_THAT(msg, Catch::StartsWith("case.safetensors: "));
  }
}
