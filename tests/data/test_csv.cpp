// Tests of the CSV layer (csv.hpp) and of the parse errors every TrackML reader reports.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

#include "data/data_test_util.hpp"
#include "mambatrack/data/csv.hpp"
#include "mambatrack/data/trackml_io.hpp"

using namespace mambatrack;
using namespace mambatrack::data;

namespace {

struct Parsed {
  std::vector<int32_t> ids;
  std::vector<float> xs;
};

Parsed parse_id_x(const std::string& text) {
  CsvReader r(text, "t.csv");
  const int c_id = r.require("id"), c_x = r.require("x");
  Parsed p;
  while (r.next()) {
    p.ids.push_back(r.get_i32(c_id, 0));
    p.xs.push_back(r.get_float(c_x));
  }
  return p;
}

// Runs `f` and returns the DataError it throws (fails the test when none is thrown).
template <class F>
DataError expect_data_error(F&& f) {
  try {
    f();
  } catch (const DataError& e) {
    return e;
  }
  FAIL("no DataError was thrown");
  return DataError("unreachable");
}

}  // namespace

TEST_CASE("csv: columns by name, whitespace, CRLF, BOM, blank lines", "[data][cpu]") {
  // Same table written four ways: reordered columns with an extra one, spaces and tabs around
  // fields, CRLF line ends, a UTF-8 BOM and blank lines, no final newline.
  const std::string variants[] = {
      "id,x\n1,0.5\n2,-3.25\n",
      "x,extra,id\n0.5,zz,1\n-3.25,,2\n",
      "\xEF\xBB\xBF id ,\tx\r\n 1 , 0.5\t\r\n\r\n2,-3.25",
      "id,x\n\n1,+0.5\n   \n2,-3.25e0\n\n",
  };
  for (const auto& text : variants) {
    INFO(text);
    const Parsed p = parse_id_x(text);
    REQUIRE(p.ids == std::vector<int32_t>{1, 2});
    REQUIRE(p.xs == std::vector<float>{0.5f, -3.25f});  // exactly representable
  }
}

TEST_CASE("csv: numbers parse exactly (uint64 past 2^53, float32 correctly rounded)", "[data][cpu]") {
  const std::string text =
      "particle_id,vx,vy,vz,px,py,pz,q,nhits\n"
      "824163129872097282,0.1,-0.14166800000000002,1e-40,3.4028235e38,-0,7,-1,0\n"
      "18446744073709551615,1,2,3,4,5,6,1,19\n";
  const Particles p = parse_particles_buffer(text.data(), text.size(), "p.csv");
  REQUIRE(p.size() == 2);
  // 824163129872097282 = 0x0b70001000000002 is odd-ish and > 2^53: a double would round it.
  REQUIRE(p.particle_id[0] == 824163129872097282ull);
  REQUIRE(p.particle_id[1] == 18446744073709551615ull);
  REQUIRE(p.vx[0] == 0.1f);                   // correctly rounded float of 0.1
  REQUIRE(p.vy[0] == -0.141668f);             // pandas' extra digits round to the same float
  REQUIRE(p.vz[0] == 1e-40f);                 // subnormal kept
  REQUIRE(p.px[0] == 3.4028235e38f);          // FLT_MAX
  REQUIRE(std::signbit(p.py[0]));             // -0 keeps its sign
  REQUIRE(p.q[0] == -1);
  REQUIRE_FALSE(p.has_particle_type());
}

TEST_CASE("csv: every bad input gives its own clear DataError", "[data][cpu]") {
  struct Case {
    const char* what;
    std::string text;
    int kind;  // 0 hits, 1 particles, 2 truth
    int64_t line;
    const char* field;
    const char* message_part;
  };
  const std::string H = "hit_id,x,y,z,volume_id,layer_id,module_id\n";
  const std::string P = "particle_id,vx,vy,vz,px,py,pz,q,nhits\n";
  const std::string T = "hit_id,particle_id,tx,ty,tz,tpx,tpy,tpz,weight\n";
  const std::vector<Case> cases = {
      {"empty file", "", 0, 0, "", "empty file, expected a header line"},
      {"only blank lines", "\n \n\r\n", 0, 0, "", "empty file"},
      {"missing column", "hit_id,x,y,z,layer_id,module_id\n1,1,2,3,2,1\n", 0, 1, "volume_id",
       "required column missing; the header is \"hit_id,x,y,z,layer_id,module_id\""},
      {"duplicate column", "hit_id,x,y,z,x,volume_id,layer_id,module_id\n", 0, 1, "x", "appears twice"},
      {"empty column name", "hit_id,,x\n", 0, 1, "", "empty column name at position 2"},
      {"short row", H + "1,1,2,3,8,2,1\n2,1,2,3,8,2\n", 0, 3, "", "too few fields: expected 7"},
      {"extra field", H + "1,1,2,3,8,2,1,9\n", 0, 2, "", "too many fields: expected 7"},
      {"float in an int column", H + "1,1,2,3,7.5,2,1\n", 0, 2, "volume_id",
       "expected an integer, got \"7.5\""},
      {"negative hit_id", H + "-4,1,2,3,8,2,1\n", 0, 2, "hit_id", "integer out of range [0, 2147483647]"},
      {"int32 overflow", H + "2147483648,1,2,3,8,2,1\n", 0, 2, "hit_id", "integer out of range"},
      {"not a number", H + "1,abc,2,3,8,2,1\n", 0, 2, "x", "expected a number, got \"abc\""},
      {"space inside a number", H + "1,1 2,2,3,8,2,1\n", 0, 2, "x", "expected a number, got \"1 2\""},
      {"nan", H + "1,1,nan,3,8,2,1\n", 0, 2, "y", "expected a finite number, got \"nan\""},
      {"float32 overflow", H + "1,1,2,1e39,8,2,1\n", 0, 2, "z", "out of float32 range"},
      {"empty field", H + "1,1,2,,8,2,1\n", 0, 2, "z", "empty field, expected a number"},
      {"empty int field", H + "1,1,2,3,8, ,1\n", 0, 2, "layer_id", "empty field, expected an integer"},
      {"negative particle_id", P + "-5,0,0,0,1,1,1,1,4\n", 1, 2, "particle_id",
       "expected a non-negative integer, got \"-5\""},
      {"particle_id past 2^64", P + "18446744073709551616,0,0,0,1,1,1,1,4\n", 1, 2, "particle_id",
       "integer out of range"},
      {"negative nhits", P + "5,0,0,0,1,1,1,1,-4\n", 1, 2, "nhits", "integer out of range"},
      {"negative weight", T + "1,0,0,0,0,0,0,0,-0.5\n", 2, 2, "weight", "weight must be >= 0"},
      {"binary garbage", H + std::string("1,\x01\xff,2,3,8,2,1\n", 15), 0, 2, "x",
       "expected a number, got \"\\x01\\xff\""},
      {"lone CR inside a line", H + "1,1,2,3\r,8,2,1\n", 0, 2, "z", "expected a number"},
  };
  REQUIRE(cases.size() >= 10);
  for (const Case& c : cases) {
    INFO(c.what);
    const DataError e = expect_data_error([&] {
      if (c.kind == 0) (void)parse_hits_buffer(c.text.data(), c.text.size(), "hits.csv");
      if (c.kind == 1) (void)parse_particles_buffer(c.text.data(), c.text.size(), "particles.csv");
      if (c.kind == 2) (void)parse_truth_buffer(c.text.data(), c.text.size(), "truth.csv");
    });
    INFO(e.what());
    CHECK(e.line() == c.line);
    CHECK(e.field() == c.field);
    CHECK(std::string(e.what()).find(c.message_part) != std::string::npos);
    const char* file = c.kind == 0 ? "hits.csv" : c.kind == 1 ? "particles.csv" : "truth.csv";
    CHECK(std::string(e.what()).rfind(file, 0) == 0);
  }
  // The exact form the style guide asks for.
  const std::string text = H + "1,1,2,3,8,2,1\n2,1,2,3,7.5,2,1\n";
  const DataError e = expect_data_error([&] { (void)parse_hits_buffer(text.data(), text.size(), "hits.csv"); });
  CHECK(std::string(e.what()) == "hits.csv:3: column 'volume_id': expected an integer, got \"7.5\"");
}

TEST_CASE("csv: gzip read/write, truncated and corrupt streams name the file", "[data][cpu]") {
  test::ScratchDir dir;
  const std::string text = "hit_id,x,y,z,volume_id,layer_id,module_id\n1,-64.4099,-7.1637,-1502.5,7,2,1\n";
  const std::string gz = deflate_gzip(text, "mem");
  REQUIRE(gz.size() > 18);
  REQUIRE(static_cast<unsigned char>(gz[0]) == 0x1f);  // gzip magic
  REQUIRE(inflate_gzip(gz.data(), gz.size(), "mem") == text);
  // Two members back to back (cat a.gz b.gz) inflate to the concatenation; zero padding is fine.
  const std::string two = gz + deflate_gzip("2,1,2,3,8,2,1\n", "mem") + std::string(8, '\0');
  REQUIRE(inflate_gzip(two.data(), two.size(), "mem") == text + "2,1,2,3,8,2,1\n");

  const std::string good = dir / "event000000001-hits.csv.gz";
  write_text_file(good, text);
  REQUIRE(read_text_file(good) == text);

  struct Bad {
    const char* what;
    std::string bytes;
    const char* message_part;
  };
  std::string corrupt = gz;
  corrupt[12] = static_cast<char>(corrupt[12] ^ 0x5a);  // inside the deflate data
  std::string bad_crc = gz;
  bad_crc[gz.size() - 6] = static_cast<char>(bad_crc[gz.size() - 6] ^ 1);  // CRC32 trailer
  const std::vector<Bad> bads = {
      {"truncated", gz.substr(0, gz.size() / 2), "truncated gzip file"},
      {"truncated trailer", gz.substr(0, gz.size() - 3), "truncated gzip file"},
      {"corrupt data", corrupt, "corrupt gzip file"},
      {"bad crc", bad_crc, "corrupt gzip file"},
      {"not gzip at all", text, "corrupt gzip file"},
      {"trailing junk", gz + "junk", "trailing data after the gzip stream"},
      {"empty", "", "empty file"},
  };
  for (const Bad& b : bads) {
    INFO(b.what);
    const std::string path = dir / "bad-hits.csv.gz";
    test::write_bytes(path, b.bytes);
    const DataError e = expect_data_error([&] { (void)read_hits(path); });
    INFO(e.what());
    CHECK(e.file() == path);
    CHECK(std::string(e.what()).find(b.message_part) != std::string::npos);
  }
  // A decompression bomb stops at the cap.
  const std::string big(1 << 20, 'a');
  const std::string bomb = deflate_gzip(big, "mem");
  const DataError e = expect_data_error([&] { (void)inflate_gzip(bomb.data(), bomb.size(), "bomb.gz", 4096); });
  CHECK(std::string(e.what()).find("inflates to more than 4096 bytes") != std::string::npos);
  // A missing file names itself.
  const DataError m = expect_data_error([&] { (void)read_hits(dir / "nope.csv"); });
  CHECK(std::string(m.what()).find("nope.csv: cannot open file") != std::string::npos);
}

TEST_CASE("csv: writer formats shortest round-trip floats and refuses non-finite values", "[data][cpu]") {
  CsvWriter w("w.csv");
  w.header("a,b,c");
  w.field(int32_t{-7});
  w.field(0.1f);
  w.field(uint64_t{18446744073709551615ull});
  w.end_row();
  w.field(int32_t{0});
  w.field(1e-40f);
  w.field(-0.0);
  w.end_row();
  REQUIRE(w.text() == "a,b,c\n-7,0.1,18446744073709551615\n0,1e-40,-0\n");
  const DataError e = expect_data_error([&] { w.field(std::nanf(""), "x", 42); });
  CHECK(std::string(e.what()) == "w.csv: column 'x': cannot write a non-finite value (row 42)");
}
