// TensorBoard event files: CRC32C against the published check values, Event bytes equal to what
// the protobuf library serialises (hex taken from tensorboard 2.21's event_pb2), and our own file
// parsed back with an independent reader: frame lengths, both CRCs, and every decoded field.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "mambatrack/core/philox.hpp"
#include "mambatrack/train/tensorboard.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::train;

namespace {
std::string hex(const std::string& bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}
std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
// ---- an independent reader: frames, then the protobuf fields we write -------------------------
template <class T>
T load_le(const std::string& s, std::size_t at) {
  T v;
  std::memcpy(&v, s.data() + at, sizeof(T));
  return v;
}
// Splits a TFRecord file into its records, checking every length and both CRCs.
std::vector<std::string> read_frames(const std::string& file) {
  std::vector<std::string> records;
  std::size_t at = 0;
  while (at < file.size()) {
    REQUIRE(at + 12 <= file.size());
    const uint64_t length = load_le<uint64_t>(file, at);
    CHECK(load_le<uint32_t>(file, at + 8) == mask_crc32c(crc32c(file.data() + at, 8)));
    REQUIRE(at + 12 + length + 4 <= file.size());
    const std::string data = file.substr(at + 12, length);
    CHECK(load_le<uint32_t>(file, at + 12 + length) == mask_crc32c(crc32c(data.data(), data.size())));
    records.push_back(data);
    at += 12 + length + 4;
  }
  CHECK(at == file.size());
  return records;
}
uint64_t read_varint(const std::string& s, std::size_t& at) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    REQUIRE(at < s.size());
    const auto b = static_cast<unsigned char>(s[at++]);
    v |= uint64_t{b & 0x7Fu} << shift;
    if (!(b & 0x80)) return v;
  }
  FAIL("varint longer than 10 bytes");
  return 0;
}
struct Field {
  uint32_t number = 0, wire = 0;
  uint64_t varint = 0;
  std::string bytes;  // fixed32/fixed64 raw bytes, or length-delimited content
};
std::vector<Field> fields(const std::string& msg) {
  std::vector<Field> out;
  std::size_t at = 0;
  while (at < msg.size()) {
    const uint64_t key = read_varint(msg, at);
    Field f;
    f.number = static_cast<uint32_t>(key >> 3);
    f.wire = static_cast<uint32_t>(key & 7);
    if (f.wire == 0) {
      f.varint = read_varint(msg, at);
    } else {
      const std::size_t n = f.wire == 1 ? 8 : f.wire == 5 ? 4 : f.wire == 2 ? read_varint(msg, at) : 0;
      REQUIRE(n > 0);
      REQUIRE(at + n <= msg.size());
      f.bytes = msg.substr(at, n);
      at += n;
    }
    out.push_back(f);
  }
  return out;
}
struct DecodedEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::vector<std::pair<std::string, float>> scalars;
  int session_status = -1;
};
DecodedEvent decode_event(const std::string& data) {
  DecodedEvent e;
  for (const auto& f : fields(data)) {
    if (f.number == 1 && f.wire == 1) e.wall_time = load_le<double>(f.bytes, 0);
    else if (f.number == 2 && f.wire == 0) e.step = static_cast<int64_t>(f.varint);
    else if (f.number == 3 && f.wire == 2) e.file_version = f.bytes;
    else if (f.number == 5 && f.wire == 2) {
      for (const auto& v : fields(f.bytes)) {
        REQUIRE(v.number == 1);  // Summary.value
        std::pair<std::string, float> s;
        for (const auto& vf : fields(v.bytes)) {
          if (vf.number == 1 && vf.wire == 2) s.first = vf.bytes;
          else if (vf.number == 2 && vf.wire == 5) s.second = load_le<float>(vf.bytes, 0);
          else FAIL("unexpected Summary.Value field " << vf.number);
        }
        e.scalars.push_back(s);
      }
    } else if (f.number == 7 && f.wire == 2) {
      const auto log = fields(f.bytes);
      REQUIRE(log.size() == 1);
      e.session_status = static_cast<int>(log[0].varint);
    } else {
      FAIL("unexpected Event field " << f.number << " wire type " << f.wire);
    }
  }
  return e;
}
}  // namespace

TEST_CASE("tensorboard: CRC32C matches the published check values", "[cpu][train]") {
  CHECK(crc32c("123456789", 9) == 0xE3069283u);
  const std::string zeros(32, '\0'), ff(32, '\xff');
  std::string ascending(32, '\0');
  for (int i = 0; i < 32; ++i) ascending[i] = static_cast<char>(i);
  CHECK(crc32c(zeros.data(), 32) == 0x8A9136AAu);  // RFC 3720 B.4
  CHECK(crc32c(ff.data(), 32) == 0x62A8AB43u);
  CHECK(crc32c(ascending.data(), 32) == 0x46DD794Eu);
  CHECK(crc32c("", 0) == 0u);
  // Extending in pieces gives the CRC of the whole.
  const std::string text = "The quick brown fox jumps over the lazy dog";
  CHECK(crc32c_extend(crc32c(text.data(), 10), text.data() + 10, text.size() - 10) == crc32c(text.data(), text.size()));
  const uint64_t seed = test::test_seed(77);
  INFO("seed " << seed);
  Philox rng(seed);
  for (int i = 0; i < 100; ++i) {
    const uint32_t c = rng.next_u32();
    CHECK(unmask_crc32c(mask_crc32c(c)) == c);
  }
  CHECK(mask_crc32c(0) == 0xa282ead8u);
  CHECK(mask_crc32c(0x00008000u) == 0xa282ead8u + 1);  // bit 15 rotates to bit 0
}

TEST_CASE("tensorboard: Event bytes equal the protobuf library's serialisation", "[cpu][train]") {
  // python: Event(wall_time=1.5, step=3, summary=Summary(value=[Value(tag="train/loss",
  //         simple_value=0.25)])).SerializeToString().hex()
  CHECK(hex(encode_scalar_event(1.5, 3, {{"train/loss", 0.25f}})) ==
        "09000000000000f83f10032a130a110a0a747261696e2f6c6f7373150000803e");
  // Two values, a negative step (10-byte varint), a large float.
  CHECK(hex(encode_scalar_event(1.5, -2, {{"val/acc", -0.375f}, {"val/loss", 1e30f}})) ==
        "09000000000000f83f10feffffffffffffffff012a210a0e0a0776616c2f616363150000c0be0a0f0a0876616c2f6c6f737315caf24971");
  CHECK(hex(encode_file_version_event(1700000000.25)) == "0900001040fc54d9411a0d627261696e2e4576656e743a32");
  CHECK(hex(encode_session_start_event(2.0, 11)) == "090000000000000040100b3a020801");
  // Framing: 8-byte length, its masked CRC, the data, the data's masked CRC.
  const std::string data = encode_scalar_event(1.5, 3, {{"train/loss", 0.25f}});
  const std::string frame = tfrecord_frame(data);
  REQUIRE(frame.size() == data.size() + 16);
  CHECK(frame.substr(12, data.size()) == data);
  CHECK(load_le<uint64_t>(frame, 0) == data.size());
  CHECK(load_le<uint32_t>(frame, 8) == mask_crc32c(crc32c(frame.data(), 8)));
  CHECK(load_le<uint32_t>(frame, 12 + data.size()) == mask_crc32c(crc32c(data.data(), data.size())));
}

TEST_CASE("tensorboard: our event file parses back with every tag, step and value", "[cpu][train]") {
  const uint64_t seed = test::test_seed(31337);
  INFO("seed " << seed);
  const std::string dir = "test_train_tb_parse";
  std::filesystem::remove_all(dir);
  Philox rng(seed);
  std::vector<MetricRecord> records;
  for (int64_t s = 1; s <= 12; ++s) {
    MetricRecord r;
    r.step = s * 5;
    r.split = s % 4 == 0 ? "val" : "train";
    r.values = {{"loss", rng.uniform(0.5, 4.0)}, {"accuracy", rng.uniform(0.0, 1.0)}};
    if (r.split == "train") {
      r.lr = rng.uniform(1e-5, 1e-3);
      r.grad_norm = rng.uniform(0.1, 3.0);
    }
    r.wall_time = 1732460000.0 + 0.5 * static_cast<double>(s);
    records.push_back(r);
  }
  std::string path;
  {
    TensorBoardSink sink(dir);
    path = sink.path();
    for (const auto& r : records) sink.write(r);
    // Flushed per record: complete before the writer closes.
    CHECK(read_frames(slurp(path)).size() == 1 + records.size());
  }
  const std::string name = std::filesystem::path(path).filename().string();
  CHECK(name.rfind("events.out.tfevents.", 0) == 0);
  const auto frames = read_frames(slurp(path));
  REQUIRE(frames.size() == 1 + records.size());
  const auto first = decode_event(frames[0]);
  CHECK(first.file_version == "brain.Event:2");
  CHECK(first.scalars.empty());
  for (std::size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    const auto e = decode_event(frames[i + 1]);
    CHECK(e.step == r.step);
    CHECK(e.wall_time == r.wall_time);
    std::vector<std::pair<std::string, float>> want;
    if (r.lr) want.emplace_back(r.split + "/lr", static_cast<float>(*r.lr));
    if (r.grad_norm) want.emplace_back(r.split + "/grad_norm", static_cast<float>(*r.grad_norm));
    for (const auto& [k, v] : r.values) want.emplace_back(r.split + "/" + k, static_cast<float>(v));
    CHECK(e.scalars == want);  // float32 on disk: the values are compared after the same cast
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("tensorboard: a resumed writer starts a new file with a SessionLog START", "[cpu][train]") {
  const std::string dir = "test_train_tb_resume";
  std::filesystem::remove_all(dir);
  std::string first_path, second_path;
  {
    EventFileWriter a(dir, std::nullopt, 1732460000.0);
    a.add_scalar("train/loss", 7, 1.75, 1732460001.0);
    first_path = a.path();
  }
  {
    // Same second, same host: the name is taken, so this one gets a suffix, never overwrites.
    EventFileWriter b(dir, int64_t{4}, 1732460000.0);
    b.add_scalar("train/loss", 5, 1.5, 1732460002.0);
    second_path = b.path();
  }
  CHECK(first_path != second_path);
  CHECK(second_path.rfind(first_path + ".", 0) == 0);  // sorts after the first file
  CHECK(read_frames(slurp(first_path)).size() == 2);
  const auto frames = read_frames(slurp(second_path));
  REQUIRE(frames.size() == 3);
  CHECK(decode_event(frames[0]).file_version == "brain.Event:2");
  const auto start = decode_event(frames[1]);
  CHECK(start.session_status == 1);
  CHECK(start.step == 5);  // resumed at 4: events of step >= 5 from earlier files are stale
  const auto e = decode_event(frames[2]);
  CHECK(e.step == 5);
  CHECK(e.scalars == std::vector<std::pair<std::string, float>>{{"train/loss", 1.5f}});
  std::filesystem::remove_all(dir);
}
