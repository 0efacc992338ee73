// The safetensors format (huggingface/safetensors): an 8-byte little-endian header length N, N
// bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}
// padded with spaces to a multiple of 8, then the tensors' raw little-endian row-major bytes,
// contiguous and in offset order. The reader checks every rule of the format; the writer lays
// tensors out like the reference writer (dtype descending, then name) so files match byte for byte.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "mambatrack/core/dtype.hpp"
#include "mambatrack/core/error.hpp"
#include "mambatrack/core/tensor.hpp"

namespace mambatrack {

struct SafetensorsTensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // any rank, as stored
  uint64_t begin = 0;          // byte offsets within the data section
  uint64_t end = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  uint64_t bytes() const { return end - begin; }
  std::string shape_str() const {
    std::string s = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + ")";
  }
};

namespace detail {

// The reference implementation refuses headers above 100 MB.
constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;

inline uint64_t read_le_u64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

[[noreturn]] inline void corrupt(const std::string& file, const std::string& problem) {
  throw CheckpointError((file.empty() ? std::string("<buffer>") : file) + ": " + problem);
}

inline uint64_t json_offset(const nlohmann::json& v, const std::string& file,
                            const std::string& name) {
  if (!v.is_number_unsigned()) {
    if (v.is_number_integer()) corrupt(file, "tensor '" + name + "': negative data offset " + v.dump());
    corrupt(file, "tensor '" + name + "': data_offsets must hold non-negative integers, got " + v.dump());
  }
  return v.get<uint64_t>();
}

}  // namespace detail

// A parsed safetensors header plus the bytes of the data section. Construct from a file path
// (read in one pass) or from a buffer (used by the fuzzer and by in-memory round trips).
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path) {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) throw CheckpointError(path + ": cannot open (" + std::strerror(errno) + ")");
    const std::streamoff size = in.tellg();
    if (size < 0) throw CheckpointError(path + ": cannot determine the file size");
    std::vector<unsigned char> bytes(static_cast<std::size_t>(size));
    in.seekg(0);
    if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size))
      throw CheckpointError(path + ": read failed");
    return SafetensorsFile(std::move(bytes), path);
  }

  SafetensorsFile(std::vector<unsigned char> bytes, std::string name = "")
      : bytes_(std::move(bytes)), file_(std::move(name)) {
    parse();
  }

  const std::string& path() const noexcept { return file_; }
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  // Tensors in the order of their data offsets.
  const std::vector<SafetensorsTensorInfo>& tensors() const noexcept { return tensors_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }

  const SafetensorsTensorInfo& info(const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end()) detail::corrupt(file_, "no tensor named '" + name + "'");
    return tensors_[it->second];
  }
  // Raw bytes of one tensor (inside this object; valid while it lives).
  const unsigned char* raw(const std::string& name) const {
    return bytes_.data() + data_start_ + info(name).begin;
  }

  // Elements of a tensor whose dtype is exactly T's.
  template <class T>
  std::vector<T> read(const std::string& name) const {
    const auto& t = info(name);
    if (t.dtype != dtype_of<T>())
      detail::corrupt(file_, "tensor '" + name + "' is " + dtype_name(t.dtype) + ", expected " +
                                 dtype_name(dtype_of<T>()));
    std::vector<T> out(static_cast<std::size_t>(t.numel()));
    if (!out.empty()) std::memcpy(out.data(), raw(name), t.bytes());
    return out;
  }

  // A host tensor of rank <= 4 holding the values, converted to T from any real dtype
  // (integers, F16, BF16, F32, F64). Used for golden files and checkpoints.
  template <class T>
  Tensor<T, Host> tensor(const std::string& name) const {
    const auto& t = info(name);
    if (t.shape.size() > static_cast<std::size_t>(Shape::kMaxRank))
      detail::corrupt(file_, "tensor '" + name + "' has rank " + std::to_string(t.shape.size()) +
                                 ", more than the 4 a Tensor holds");
    Shape shape;
    for (int64_t d : t.shape) shape.push_back(d);
    Tensor<T, Host> out(shape);
    convert_into(t, out.data());
    return out;
  }
  // All values as doubles, any rank.
  std::vector<double> as_double(const std::string& name) const {
    const auto& t = info(name);
    std::vector<double> out(static_cast<std::size_t>(t.numel()));
    convert_into(t, out.data());
    return out;
  }

 private:
  template <class T>
  void convert_into(const SafetensorsTensorInfo& t, T* out) const {
    const unsigned char* p = bytes_.data() + data_start_ + t.begin;
    const int64_t n = t.numel();
    auto load = [&](auto tag, int64_t i) {
      using S = decltype(tag);
      S s;
      std::memcpy(&s, p + i * static_cast<int64_t>(sizeof(S)), sizeof(S));
      return s;
    };
    for (int64_t i = 0; i < n; ++i) {
      switch (t.dtype) {
        case DType::BOOL: out[i] = static_cast<T>(p[i] != 0); break;
        case DType::U8: out[i] = static_cast<T>(load(uint8_t{}, i)); break;
        case DType::I8: out[i] = static_cast<T>(load(int8_t{}, i)); break;
        case DType::I16: out[i] = static_cast<T>(load(int16_t{}, i)); break;
        case DType::U16: out[i] = static_cast<T>(load(uint16_t{}, i)); break;
        case DType::F16: out[i] = static_cast<T>(half_bits_to_float(load(uint16_t{}, i))); break;
        case DType::BF16: out[i] = static_cast<T>(bf16_bits_to_float(load(uint16_t{}, i))); break;
        case DType::I32: out[i] = static_cast<T>(load(int32_t{}, i)); break;
        case DType::U32: out[i] = static_cast<T>(load(uint32_t{}, i)); break;
        case DType::F32: out[i] = static_cast<T>(load(float{}, i)); break;
        case DType::F64: out[i] = static_cast<T>(load(double{}, i)); break;
        case DType::I64: out[i] = static_cast<T>(load(int64_t{}, i)); break;
        case DType::U64: out[i] = static_cast<T>(load(uint64_t{}, i)); break;
        default:
          detail::corrupt(file_, "tensor '" + t.name + "' has dtype " + dtype_name(t.dtype) +
                                     ", which is not converted to numbers here");
      }
    }
  }

  void parse() {
    const uint64_t size = bytes_.size();
    if (size < 8)
      detail::corrupt(file_, "file is " + std::to_string(size) +
                                 " bytes, shorter than the 8-byte header length");
    const uint64_t n = detail::read_le_u64(bytes_.data());
    if (n > detail::kMaxSafetensorsHeader)
      detail::corrupt(file_, "header length " + std::to_string(n) + " exceeds the format's limit of " +
                                 std::to_string(detail::kMaxSafetensorsHeader) + " bytes");
    if (n > size - 8)
      detail::corrupt(file_, "header length " + std::to_string(n) +
                                 " runs past the end of the file (" + std::to_string(size) + " bytes)");
    if (n == 0 || bytes_[8] != '{')
      detail::corrupt(file_, "header does not start with '{'");
    data_start_ = 8 + n;

    // Parse the JSON, remembering every top-level key to catch duplicates (the JSON library
    // would silently keep the last one).
    std::set<std::string> seen;
    std::string duplicate;
    nlohmann::json header;
    auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
      if (event == nlohmann::json::parse_event_t::key && depth == 1) {
        const std::string& key = parsed.get_ref<const std::string&>();
        if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
      }
      return true;
    };
    try {
      header = nlohmann::json::parse(bytes_.begin() + 8, bytes_.begin() + 8 + static_cast<std::ptrdiff_t>(n),
                                     callback);
    } catch (const nlohmann::json::exception& e) {
      detail::corrupt(file_, std::string("header is not valid JSON: ") + e.what());
    }
    if (!duplicate.empty()) detail::corrupt(file_, "tensor name '" + duplicate + "' appears twice in the header");
    if (!header.is_object()) detail::corrupt(file_, "header is not a JSON object");

    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& name = it.key();
      const nlohmann::json& v = it.value();
      if (name == "__metadata__") {
        if (!v.is_object()) detail::corrupt(file_, "__metadata__ is not an object of strings");
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (!m.value().is_string())
            detail::corrupt(file_, "__metadata__ value of '" + m.key() + "' is not a string");
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      tensors_.push_back(parse_tensor(name, v));
    }

    // Offsets: sorted, they must tile [0, data size) exactly.
    std::sort(tensors_.begin(), tensors_.end(), [](const auto& a, const auto& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    const uint64_t data_size = size - data_start_;
    uint64_t expected = 0;
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      const auto& t = tensors_[i];
      if (t.begin < expected)
        detail::corrupt(file_, "tensor '" + t.name + "' (bytes " + std::to_string(t.begin) + ".." +
                                   std::to_string(t.end) + ") overlaps tensor '" + tensors_[i - 1].name + "'");
      if (t.begin > expected)
        detail::corrupt(file_, "gap of " + std::to_string(t.begin - expected) +
                                   " bytes in the data section before tensor '" + t.name + "'");
      expected = t.end;
    }
    if (expected != data_size)
      detail::corrupt(file_, "the tensors cover " + std::to_string(expected) +
                                 " bytes but the data section holds " + std::to_string(data_size));
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  }

  SafetensorsTensorInfo parse_tensor(const std::string& name, const nlohmann::json& v) const {
    SafetensorsTensorInfo t;
    t.name = name;
    if (!v.is_object()) detail::corrupt(file_, "entry '" + name + "' is not an object");
    auto field = [&](const char* key) -> const nlohmann::json& {
      auto f = v.find(key);
      if (f == v.end()) detail::corrupt(file_, "tensor '" + name + "' has no '" + key + "'");
      return *f;
    };
    const auto& dtype = field("dtype");
    if (!dtype.is_string() || !parse_dtype(dtype.get<std::string>(), t.dtype))
      detail::corrupt(file_, "tensor '" + name + "': unknown dtype " + dtype.dump() +
                                 " (supported: " + supported_dtypes() + ")");
    const auto& shape = field("shape");
    if (!shape.is_array()) detail::corrupt(file_, "tensor '" + name + "': shape is not an array");
    uint64_t numel = 1;
    for (const auto& d : shape) {
      if (!d.is_number_unsigned())
        detail::corrupt(file_, "tensor '" + name + "': shape entry " + d.dump() + " is not a non-negative integer");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / 8 / dim))
        detail::corrupt(file_, "tensor '" + name + "': shape " + shape.dump() + " overflows");
      numel *= dim;
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& offsets = field("data_offsets");
    if (!offsets.is_array() || offsets.size() != 2)
      detail::corrupt(file_, "tensor '" + name + "': data_offsets must be [begin, end]");
    t.begin = detail::json_offset(offsets[0], file_, name);
    t.end = detail::json_offset(offsets[1], file_, name);
    if (t.end < t.begin)
      detail::corrupt(file_, "tensor '" + name + "': data_offsets [" + std::to_string(t.begin) + ", " +
                                 std::to_string(t.end) + "] end before they begin");
    const uint64_t need = numel * static_cast<uint64_t>(dtype_size(t.dtype));
    if (need != t.end - t.begin)
      detail::corrupt(file_, "tensor '" + name + "': shape " + t.shape_str() + " of " + dtype_name(t.dtype) +
                                 " needs " + std::to_string(need) + " bytes but data_offsets span " +
                                 std::to_string(t.end - t.begin));
    return t;
  }

  std::vector<unsigned char> bytes_;
  std::string file_;
  uint64_t data_start_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<SafetensorsTensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
};

// Collects tensors and metadata and writes them in the reference layout. Tensor data is copied
// when added, so the caller's buffers may change afterwards.
class SafetensorsWriter {
 public:
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data,
           std::size_t bytes) {
    if (name == "__metadata__") throw CheckpointError("'__metadata__' cannot name a tensor");
    for (const auto& e : entries_)
      if (e.name == name) throw CheckpointError("tensor '" + name + "' added twice");
    int64_t numel = 1;
    for (int64_t d : shape) {
      if (d < 0) throw ShapeError("tensor '" + name + "': negative dimension");
      numel *= d;
    }
    if (static_cast<std::size_t>(numel) * dtype_size(dtype) != bytes)
      throw ShapeError("tensor '" + name + "': " + std::to_string(numel) + " elements of " +
                       dtype_name(dtype) + " are not " + std::to_string(bytes) + " bytes");
    Entry e{name, dtype, std::move(shape), {}};
    const auto* p = static_cast<const unsigned char*>(data);
    e.data.assign(p, p + bytes);
    entries_.push_back(std::move(e));
  }
  template <class T>
  void add(const std::string& name, const std::vector<int64_t>& shape, const T* data) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    add(name, dtype_of<T>(), shape, data, static_cast<std::size_t>(n) * sizeof(T));
  }
  template <class T>
  void add(const std::string& name, View<const T, Host> v) {
    add(name, std::vector<int64_t>(v.shape.begin(), v.shape.end()), v.data);
  }

  // The whole file as bytes.
  std::vector<unsigned char> serialize() const {
    std::vector<const Entry*> order;
    for (const auto& e : entries_) order.push_back(&e);
    std::stable_sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
      if (a->dtype != b->dtype) return static_cast<int>(a->dtype) > static_cast<int>(b->dtype);
      return a->name < b->name;
    });
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata_.empty()) {
      nlohmann::ordered_json meta = nlohmann::ordered_json::object();
      for (const auto& [k, v] : metadata_) meta[k] = v;
      header["__metadata__"] = meta;
    }
    uint64_t offset = 0;
    for (const Entry* e : order) {
      nlohmann::ordered_json t = nlohmann::ordered_json::object();
      t["dtype"] = dtype_name(e->dtype);
      t["shape"] = e->shape;
      t["data_offsets"] = {offset, offset + e->data.size()};
      offset += e->data.size();
      header[e->name] = t;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // so the data starts 8-byte aligned
    std::vector<unsigned char> out(8 + text.size() + offset);
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) out[i] = static_cast<unsigned char>(n >> (8 * i));
    std::memcpy(out.data() + 8, text.data(), text.size());
    std::size_t pos = 8 + text.size();
    for (const Entry* e : order) {
      if (!e->data.empty()) std::memcpy(out.data() + pos, e->data.data(), e->data.size());
      pos += e->data.size();
    }
    return out;
  }

  // Writes atomically: a temporary file in the same directory, fsync, rename over `path`, then
  // fsync of the directory. A crash at any point leaves either the old file or the new one.
  void write(const std::string& path) const { write_file_atomically(path, serialize()); }

  static void write_file_atomically(const std::string& path, const std::vector<unsigned char>& bytes) {
    const std::string tmp = path + ".tmp." + std::to_string(::getpid());
    auto fail = [&](const std::string& what) {
      const std::string reason = std::strerror(errno);
      ::unlink(tmp.c_str());
      throw CheckpointError(path + ": " + what + " failed (" + reason + ")");
    };
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail("creating " + tmp);
    std::size_t done = 0;
    while (done < bytes.size()) {
      ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (w < 0) {
        if (errno == EINTR) continue;
        ::close(fd);
        fail("writing");
      }
      done += static_cast<std::size_t>(w);
    }
    if (::fsync(fd) != 0) {
      ::close(fd);
      fail("fsync");
    }
    if (::close(fd) != 0) fail("close");
    if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename");
    const auto slash = path.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<unsigned char> data;
  };
  std::map<std::string, std::string> metadata_;
  std::vector<Entry> entries_;
};

}  // namespace mambatrack
