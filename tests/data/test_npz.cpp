// .npz / .npy reader and the TPCpp-10M layout, against fixtures written by numpy
// (tests/fixtures/npz/make_npz_fixtures.py; expected.json holds what numpy reads back).
#include <catch2/catch.hpp>

#include <fstream>
#include <iterator>
#include <string>

#include <nlohmann/json.hpp>

#include "mambatrack/data/npz.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::data;

namespace {
std::string npz_dir() { return test::fixtures_dir() + "/npz"; }

const nlohmann::json& expected() {
  static nlohmann::json j = [] {
    std::ifstream f(npz_dir() + "/expected.json");
    REQUIRE(f.good());
    return nlohmann::json::parse(f);
  }();
  return j;
}

// Every array of `file` equals numpy's values exactly (float64 holds every f4/f8/int value here
// except the 64-bit integers, which are compared as integers).
void check_file(const std::string& file) {
  INFO("fixture " << file);
  NpzFile z(npz_dir() + "/" + file);
  const auto& want = expected().at(file);
  CHECK(z.names().size() == want.size());
  for (auto it = want.begin(); it != want.end(); ++it) {
    INFO("array " << it.key());
    const NpyArray a = z.array(it.key());
    CHECK(a.descr == it.value().at("descr").get<std::string>());
    CHECK(a.shape == it.value().at("shape").get<std::vector<int64_t>>());
    const auto& vals = it.value().at("values");
    REQUIRE(static_cast<int64_t>(vals.size()) == a.numel());
    if (a.kind == 'u' && a.itemsize == 8) {
      CHECK(a.to_vector<uint64_t>() == vals.get<std::vector<uint64_t>>());
    } else if (a.kind == 'i' || a.kind == 'u' || a.kind == 'b') {
      CHECK(a.to_vector<int64_t>() == vals.get<std::vector<int64_t>>());
    } else {
      CHECK(a.to_vector<double>() == vals.get<std::vector<double>>());  // exact: same bits
    }
  }
}

// The message of the DataError that reading every array of `file` throws.
std::string read_error(const std::string& file, const std::string& reader = "array") {
  const std::string path = npz_dir() + "/" + file;
  try {
    if (reader == "spacepoints") {
      read_tpc_spacepoints(path);
    } else {
      NpzFile z(path);
      for (const auto& n : z.names()) z.array(n);
    }
  } catch (const DataError& e) {
    CHECK(e.file() == path);
    return e.what();
  }
  FAIL("no DataError for " << file);
  return "";
}
}  // namespace

TEST_CASE("npz: every dtype of np.savez (stored) reads back exactly", "[data][npz]") { check_file("dtypes.npz"); }

TEST_CASE("npz: every dtype of np.savez_compressed (deflate) reads back exactly", "[data][npz]") {
  check_file("dtypes_deflated.npz");
}

TEST_CASE("npz: .npy format versions 1, 2 and 3", "[data][npz]") { check_file("versions.npz"); }

TEST_CASE("npz: zip64 end-of-central-directory records", "[data][npz]") { check_file("zip64.npz"); }

TEST_CASE("npz: an archive in memory reads like the file", "[data][npz]") {
  std::ifstream f(npz_dir() + "/dtypes_deflated.npz", std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const NpzFile mem("in-memory.npz", bytes), file(npz_dir() + "/dtypes_deflated.npz");
  CHECK(mem.names() == file.names());
  for (const auto& n : file.names()) CHECK(mem.array(n).bytes == file.array(n).bytes);
  bytes.resize(bytes.size() - 30);
  CHECK_THROWS_WITH(NpzFile("in-memory.npz", bytes), Catch::Contains("in-memory.npz"));
}

TEST_CASE("npz: TPCpp-10M spacepoint files and label files", "[data][npz]") {
  for (const char* f : {"tpc/labeled/spacepoints_000.npz", "tpc/labeled/spacepoints_001.npz", "tpc/labeled/track_ids.npz",
                        "tpc/labeled/pid_labels.npz", "tpc/labeled/noise_tags.npz"})
    check_file(f);
  const TpcSpacepoints sp = read_tpc_spacepoints(npz_dir() + "/tpc/labeled/spacepoints_000.npz");
  CHECK(sp.num_events() == 2);
  CHECK(sp.event_size(0) == 4);
  CHECK(sp.event_size(1) == 5);
  const auto& want = expected().at("tpc/labeled/spacepoints_000.npz").at("data").at("values");
  // Row 6 = event 1, point 2: E, x, y, z at flat 24..27.
  for (int c = 0; c < 4; ++c) CHECK(double(sp.event(1)[4 * 2 + c]) == want[24 + c].get<double>());
}

TEST_CASE("npz: a TPCpp-10M split folder: files concatenated in order, labels aligned", "[data][npz]") {
  const TpcSplit s = read_tpc_split(npz_dir() + "/tpc/labeled");
  CHECK(s.points.num_events() == 5);
  CHECK(s.points.num_points() == 15);
  CHECK(s.points.offsets == std::vector<int64_t>{0, 4, 9, 11, 14, 15});
  const auto& d0 = expected().at("tpc/labeled/spacepoints_000.npz").at("data").at("values");
  const auto& d1 = expected().at("tpc/labeled/spacepoints_001.npz").at("data").at("values");
  // First point of the second file = event 2.
  for (int c = 0; c < 4; ++c) CHECK(double(s.points.event(2)[c]) == d1[c].get<double>());
  CHECK(double(s.points.event(1)[4 * 4 + 3]) == d0[35].get<double>());
  CHECK(s.track_ids == expected().at("tpc/labeled/track_ids.npz").at("data").at("values").get<std::vector<int64_t>>());
  CHECK(s.pid_labels == expected().at("tpc/labeled/pid_labels.npz").at("data").at("values").get<std::vector<int64_t>>());
  CHECK(s.noise_tags == expected().at("tpc/labeled/noise_tags.npz").at("data").at("values").get<std::vector<int64_t>>());
  CHECK_THROWS_AS(read_tpc_point_labels(npz_dir() + "/tpc/labeled/track_ids.npz", 14), DataError);
  CHECK_THROWS_AS(read_tpc_split(npz_dir() + "/no_such_folder"), DataError);
}

TEST_CASE("npz: malformed archives and arrays give a DataError naming the file and member", "[data][npz]") {
  CHECK_THAT(read_error("bad_truncated.npz"), Catch::Contains("bad_truncated.npz"));
  CHECK_THAT(read_error("bad_not_zip.npz"), Catch::Contains("not a zip archive"));
  CHECK_THAT(read_error("bad_deflate.npz"), Catch::Contains("member '"));
  CHECK_THAT(read_error("bad_magic.npz"), Catch::Contains("member 'data.npy'") && Catch::Contains("magic"));
  CHECK_THAT(read_error("bad_fortran.npz"), Catch::Contains("fortran_order"));
  CHECK_THAT(read_error("bad_dtype.npz"), Catch::Contains("<f2"));
  CHECK_THAT(read_error("bad_structured.npz"), Catch::Contains("structured"));
  CHECK_THAT(read_error("bad_short_data.npz"), Catch::Contains("data bytes"));
  CHECK_THAT(read_error("bad_header.npz"), Catch::Contains("shapf"));
  CHECK_THAT(read_error("bad_sizes.npz", "spacepoints"), Catch::Contains("sum to 10"));
  CHECK_THAT(read_error("bad_data_shape.npz", "spacepoints"), Catch::Contains("(N, 4)"));
  CHECK_THROWS_AS(NpzFile(npz_dir() + "/does_not_exist.npz"), DataError);
  CHECK_THAT(read_error("bad_sizes.npz", "spacepoints"), Catch::Contains("'size.npy'"));
  try {
    NpzFile(npz_dir() + "/dtypes.npz").array("nope");
    FAIL("missing array accepted");
  } catch (const DataError& e) {
    CHECK_THAT(std::string(e.what()), Catch::Contains("no array 'nope'") && Catch::Contains("f8_big"));
  }
}

TEST_CASE("npz: every single-byte corruption and truncation is a DataError or reads fine", "[data][npz]") {
  // Robustness: flipping any byte of a small archive (stored and deflated) or cutting it at any
  // length must never crash, hang, allocate wildly or throw anything but DataError.
  for (const char* name : {"tpc/labeled/spacepoints_001.npz", "tpc/labeled/spacepoints_000.npz"}) {
    std::ifstream f(npz_dir() + "/" + name, std::ios::binary);
    const std::string good((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    REQUIRE(good.size() > 200);
    int64_t errors = 0, fine = 0;
    auto attempt = [&](const std::string& bytes) {
      try {
        read_tpc_spacepoints(NpzFile("x.npz", std::vector<uint8_t>(bytes.begin(), bytes.end())));
        ++fine;
      } catch (const DataError&) {
        ++errors;
      }
    };
    for (std::size_t i = 0; i < good.size(); ++i) {
      std::string bad = good;
      bad[i] = static_cast<char>(bad[i] ^ 0xA5);
      attempt(bad);
    }
    for (std::size_t len = 0; len < good.size(); ++len) attempt(good.substr(0, len));
    INFO(name << ": " << errors << " rejected, " << fine << " read");
    CHECK(errors > static_cast<int64_t>(good.size()) / 2);  // the CRC catches every data corruption
  }
}
