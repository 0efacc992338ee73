// Reader for numpy .npz archives (a zip of .npy members, stored or deflated; zip64 records
// handled) and for the TPCpp-10M release layout built on them: spacepoints[_NNN].npz with `data`
// (N, 4) = (E, x, y, z) and `size` (points per event), and per-point label files track_ids.npz,
// pid_labels.npz, noise_tags.npz with `data` (N). .npy: magic "\x93NUMPY", version 1/2/3, a
// Python-dict header {'descr', 'fortran_order', 'shape'}, then the C-order array.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <zlib.h>

#include "mambatrack/core/error.hpp"

namespace mambatrack::data {

// One .npy array: raw element bytes, converted to little-endian on read.
struct NpyArray {
  std::string descr;          // as in the file, e.g. "<f4"
  char kind = 'f';            // 'f' float, 'i' signed, 'u' unsigned, 'b' bool
  int itemsize = 4;
  std::vector<int64_t> shape; // empty: a scalar
  std::vector<uint8_t> bytes;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
  // The values converted to T (any numeric kind to any arithmetic T, as static_cast does).
  template <class T>
  std::vector<T> to_vector() const {
    const int64_t n = numel();
    std::vector<T> out(static_cast<std::size_t>(n));
    const uint8_t* p = bytes.data();
    for (int64_t i = 0; i < n; ++i, p += itemsize) out[i] = element<T>(p);
    return out;
  }

 private:
  template <class S>
  static S load(const uint8_t* p) {
    S v;
    std::memcpy(&v, p, sizeof(S));
    return v;
  }
  template <class T>
  T element(const uint8_t* p) const {
    switch (kind) {
      case 'f': return itemsize == 4 ? static_cast<T>(load<float>(p)) : static_cast<T>(load<double>(p));
      case 'b': return static_cast<T>(*p != 0);
      case 'i':
        switch (itemsize) {
          case 1: return static_cast<T>(load<int8_t>(p));
          case 2: return static_cast<T>(load<int16_t>(p));
          case 4: return static_cast<T>(load<int32_t>(p));
          default: return static_cast<T>(load<int64_t>(p));
        }
      default:
        switch (itemsize) {
          case 1: return static_cast<T>(load<uint8_t>(p));
          case 2: return static_cast<T>(load<uint16_t>(p));
          case 4: return static_cast<T>(load<uint32_t>(p));
          default: return static_cast<T>(load<uint64_t>(p));
        }
    }
  }
};

namespace detail {

inline uint64_t le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

// A tiny parser for the .npy header dict: string, True/False and int-tuple values.
struct NpyHeaderParser {
  const std::string& s;
  std::size_t i = 0;
  const std::string& file;
  const std::string& member;

  [[noreturn]] void fail(const std::string& problem) const {
    throw DataError(file, 0, "", "member '" + member + "': .npy header: " + problem + " in \"" + s + "\"");
  }
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r')) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) { ++i; return true; }
    return false;
  }
  std::string str() {
    ws();
    if (i >= s.size() || (s[i] != '\'' && s[i] != '"')) fail("expected a quoted string");
    const char q = s[i++];
    const std::size_t b = i;
    while (i < s.size() && s[i] != q) ++i;
    if (i >= s.size()) fail("unterminated string");
    return s.substr(b, i++ - b);
  }
  int64_t integer() {
    ws();
    const std::size_t b = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    if (b == i || i - b > 18) fail("expected a non-negative integer");
    return std::stoll(s.substr(b, i - b));
  }
};

inline NpyArray parse_npy(const std::vector<uint8_t>& buf, const std::string& file, const std::string& member) {
  auto fail = [&](const std::string& problem) -> DataError {
    return DataError(file, 0, "", "member '" + member + "': " + problem);
  };
  static const uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (buf.size() < 10 || std::memcmp(buf.data(), kMagic, 6) != 0) throw fail("not a .npy array (bad magic)");
  const int major = buf[6];
  std::size_t hlen = 0, start = 0;
  if (major == 1) {
    hlen = static_cast<std::size_t>(le(&buf[8], 2));
    start = 10;
  } else if (major == 2 || major == 3) {
    if (buf.size() < 12) throw fail(".npy header truncated");
    hlen = static_cast<std::size_t>(le(&buf[8], 4));
    start = 12;
  } else {
    throw fail(".npy format version " + std::to_string(major) + " is not supported (1, 2, 3 are)");
  }
  if (buf.size() < start + hlen) throw fail(".npy header truncated");
  const std::string header(reinterpret_cast<const char*>(&buf[start]), hlen);
  NpyArray a;
  bool have_descr = false, have_fortran = false, have_shape = false;
  NpyHeaderParser p{header, 0, file, member};
  if (!p.eat('{')) p.fail("expected '{'");
  while (!p.eat('}')) {
    const std::string key = p.str();
    if (!p.eat(':')) p.fail("expected ':' after '" + key + "'");
    if (key == "descr") {
      p.ws();
      if (p.i < header.size() && header[p.i] == '[') throw fail("structured dtypes are not supported");
      a.descr = p.str();
      have_descr = true;
    } else if (key == "fortran_order") {
      p.ws();
      if (header.compare(p.i, 5, "False") == 0) {
        p.i += 5;
      } else if (header.compare(p.i, 4, "True") == 0) {
        throw fail("fortran_order True is not supported; save the array C-contiguous (np.ascontiguousarray)");
      } else {
        p.fail("fortran_order must be True or False");
      }
      have_fortran = true;
    } else if (key == "shape") {
      if (!p.eat('(')) p.fail("shape must be a tuple");
      while (!p.eat(')')) {
        a.shape.push_back(p.integer());
        if (!p.eat(',')) {
          if (!p.eat(')')) p.fail("expected ',' or ')' in shape");
          break;
        }
      }
      have_shape = true;
    } else {
      p.fail("unexpected key '" + key + "'");
    }
    if (!p.eat(',')) {
      if (!p.eat('}')) p.fail("expected ',' or '}'");
      break;
    }
  }
  if (!have_descr || !have_fortran || !have_shape) throw fail(".npy header lacks descr, fortran_order or shape");
  const std::string& d = a.descr;
  if (d.size() < 3 || std::string("<>|=").find(d[0]) == std::string::npos)
    throw fail("dtype '" + d + "' is not supported (simple numeric dtypes like <f4, <i8, |u1, |b1 are)");
  a.kind = d[1];
  const std::string size_text = d.substr(2);
  a.itemsize = size_text.size() == 1 && size_text[0] >= '1' && size_text[0] <= '8' ? size_text[0] - '0' : 0;
  const bool ok = (a.kind == 'f' && (a.itemsize == 4 || a.itemsize == 8)) ||
                  ((a.kind == 'i' || a.kind == 'u') &&
                   (a.itemsize == 1 || a.itemsize == 2 || a.itemsize == 4 || a.itemsize == 8)) ||
                  (a.kind == 'b' && a.itemsize == 1);
  if (!ok) throw fail("dtype '" + d + "' is not supported (f4, f8, i1-i8, u1-u8, b1 are)");
  const std::size_t data_start = start + hlen;
  // Element count without overflow: any product beyond the member's size is already wrong.
  uint64_t count = 1;
  for (int64_t dim : a.shape) {
    if (dim != 0 && count > (buf.size() - data_start) / static_cast<uint64_t>(dim) + 1)
      throw fail("shape is larger than the member's " + std::to_string(buf.size() - data_start) + " data bytes");
    count *= static_cast<uint64_t>(dim);
  }
  const uint64_t nbytes = count * static_cast<uint64_t>(a.itemsize);
  if (buf.size() - data_start != nbytes)
    throw fail("shape " + std::to_string(a.numel()) + " elements x " + std::to_string(a.itemsize) + " bytes needs " +
               std::to_string(nbytes) + " data bytes, the member has " + std::to_string(buf.size() - data_start));
  a.bytes.assign(buf.begin() + static_cast<std::ptrdiff_t>(data_start), buf.end());
  if (d[0] == '>' && a.itemsize > 1)
    for (std::size_t k = 0; k < a.bytes.size(); k += a.itemsize) std::reverse(&a.bytes[k], &a.bytes[k] + a.itemsize);
  return a;
}

}  // namespace detail

// An open .npz: its central directory; members are read (and inflated) on demand.
class NpzFile {
 public:
  struct Member {
    std::string name;  // as in the zip, e.g. "data.npy"
    uint16_t method = 0, flags = 0;
    uint32_t crc = 0;
    uint64_t compressed = 0, uncompressed = 0, local_offset = 0;
  };

  explicit NpzFile(std::string path) : path_(std::move(path)) {
    std::ifstream f(path_, std::ios::binary);
    if (!f) throw DataError(path_, 0, "", "cannot open the .npz file");
    f.seekg(0, std::ios::end);
    size_ = static_cast<uint64_t>(f.tellg());
    read_directory(f);
  }
  // An archive already in memory (e.g. received over the network); `name` is used in errors.
  NpzFile(std::string name, std::vector<uint8_t> bytes)
      : path_(std::move(name)), mem_(std::make_shared<const std::vector<uint8_t>>(std::move(bytes))) {
    size_ = mem_->size();
    std::ifstream none;
    read_directory(none);
  }

 private:
  void read_directory(std::ifstream& f) {
    const uint64_t tail = std::min<uint64_t>(size_, 22 + 65535 + 20);
    std::vector<uint8_t> t = read_at(f, size_ - tail, tail, "the end of central directory");
    int64_t eocd = -1;
    for (int64_t k = static_cast<int64_t>(tail) - 22; k >= 0; --k)
      if (detail::le(&t[k], 4) == 0x06054b50u) { eocd = k; break; }
    if (eocd < 0) throw fail("not a zip archive (no end-of-central-directory record; truncated?)");
    const uint8_t* e = &t[eocd];
    uint64_t entries = detail::le(e + 10, 2), cd_size = detail::le(e + 12, 4), cd_offset = detail::le(e + 16, 4);
    if (detail::le(e + 4, 2) != 0 || detail::le(e + 6, 2) != 0) throw fail("multi-disk zip archives are not supported");
    if (eocd >= 20 && detail::le(&t[eocd - 20], 4) == 0x07064b50u) {  // zip64 locator
      const uint64_t off64 = detail::le(&t[eocd - 20 + 8], 8);
      std::vector<uint8_t> z = read_at(f, off64, 56, "the zip64 end of central directory");
      if (detail::le(&z[0], 4) != 0x06064b50u) throw fail("bad zip64 end-of-central-directory signature");
      entries = detail::le(&z[32], 8);
      cd_size = detail::le(&z[40], 8);
      cd_offset = detail::le(&z[48], 8);
    }
    std::vector<uint8_t> cd = read_at(f, cd_offset, cd_size, "the central directory");
    std::size_t pos = 0;
    for (uint64_t n = 0; n < entries; ++n) {
      if (pos + 46 > cd.size() || detail::le(&cd[pos], 4) != 0x02014b50u)
        throw fail("central directory entry " + std::to_string(n) + " is malformed");
      const uint8_t* c = &cd[pos];
      Member m;
      m.flags = static_cast<uint16_t>(detail::le(c + 8, 2));
      m.method = static_cast<uint16_t>(detail::le(c + 10, 2));
      m.crc = static_cast<uint32_t>(detail::le(c + 16, 4));
      m.compressed = detail::le(c + 20, 4);
      m.uncompressed = detail::le(c + 24, 4);
      const std::size_t name_len = detail::le(c + 28, 2), extra_len = detail::le(c + 30, 2), comment_len = detail::le(c + 32, 2);
      m.local_offset = detail::le(c + 42, 4);
      if (pos + 46 + name_len + extra_len + comment_len > cd.size())
        throw fail("central directory entry " + std::to_string(n) + " runs past the directory");
      m.name.assign(reinterpret_cast<const char*>(c + 46), name_len);
      // zip64 extra: the 8-byte values of the fields that are 0xFFFFFFFF, in this order.
      const uint8_t* x = c + 46 + name_len;
      for (std::size_t q = 0; q + 4 <= extra_len;) {
        const uint64_t id = detail::le(x + q, 2), len = detail::le(x + q + 2, 2);
        if (q + 4 + len > extra_len) throw fail("member '" + m.name + "': malformed extra field");
        if (id == 0x0001) {
          std::size_t r = q + 4;
          auto take = [&](uint64_t& v) {
            if (v != 0xFFFFFFFFu) return;
            if (r + 8 > q + 4 + len) throw fail("member '" + m.name + "': zip64 extra field too short");
            v = detail::le(x + r, 8);
            r += 8;
          };
          take(m.uncompressed);
          take(m.compressed);
          take(m.local_offset);
        }
        q += 4 + len;
      }
      members_.push_back(m);
      pos += 46 + name_len + extra_len + comment_len;
    }
  }

 public:

  const std::string& path() const { return path_; }
  const std::vector<Member>& members() const { return members_; }
  // Array names: member names without ".npy".
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& m : members_) out.push_back(array_name(m.name));
    return out;
  }
  bool contains(const std::string& name) const { return find(name) != nullptr; }

  // The uncompressed bytes of a member ("data" or "data.npy").
  std::vector<uint8_t> member_bytes(const std::string& name) const {
    const Member* m = find(name);
    if (!m) {
      std::string have;
      for (const auto& x : members_) have += (have.empty() ? "" : ", ") + array_name(x.name);
      throw DataError(path_, 0, "", "no array '" + name + "' (the archive has: " + have + ")");
    }
    auto mfail = [&](const std::string& problem) { return DataError(path_, 0, "", "member '" + m->name + "': " + problem); };
    if (m->flags & 1) throw mfail("encrypted members are not supported");
    std::ifstream f;
    if (!mem_) {
      f.open(path_, std::ios::binary);
      if (!f) throw DataError(path_, 0, "", "cannot open the .npz file");
    }
    std::vector<uint8_t> lh = read_at(f, m->local_offset, 30, "the local header of '" + m->name + "'");
    if (detail::le(&lh[0], 4) != 0x04034b50u) throw mfail("bad local header signature");
    const uint64_t data_at = m->local_offset + 30 + detail::le(&lh[26], 2) + detail::le(&lh[28], 2);
    std::vector<uint8_t> raw = read_at(f, data_at, m->compressed, "the data of '" + m->name + "'");
    std::vector<uint8_t> out;
    if (m->method == 0) {
      if (m->compressed != m->uncompressed) throw mfail("stored member with different compressed and uncompressed sizes");
      out.swap(raw);
    } else if (m->method == 8) {
      // deflate expands at most ~1032:1; a larger claim is a corrupt directory, not a big array.
      if (m->uncompressed > m->compressed * 1032 + 1024)
        throw mfail("uncompressed size " + std::to_string(m->uncompressed) + " is impossible for " +
                    std::to_string(m->compressed) + " deflated bytes");
      out.resize(static_cast<std::size_t>(m->uncompressed));
      z_stream zs{};
      if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) throw mfail("zlib inflateInit2 failed");
      zs.next_in = raw.data();
      zs.next_out = out.data();
      // Feed at most 1 GiB per call so sizes above 4 GiB fit zlib's 32-bit counters.
      int rc = Z_OK;
      uint64_t in_left = raw.size(), out_left = out.size();
      while (rc == Z_OK) {
        const uInt in_chunk = static_cast<uInt>(std::min<uint64_t>(in_left, 1u << 30));
        const uInt out_chunk = static_cast<uInt>(std::min<uint64_t>(out_left, 1u << 30));
        zs.avail_in = in_chunk;
        zs.avail_out = out_chunk;
        rc = inflate(&zs, Z_NO_FLUSH);
        in_left -= in_chunk - zs.avail_in;
        out_left -= out_chunk - zs.avail_out;
        if (rc == Z_OK && in_chunk == zs.avail_in && out_chunk == zs.avail_out) rc = Z_BUF_ERROR;  // no progress
      }
      inflateEnd(&zs);
      if (rc != Z_STREAM_END) throw mfail("corrupt deflate data (zlib error " + std::to_string(rc) + ")");
      if (out_left != 0) throw mfail("inflated to fewer bytes than the directory says");
    } else {
      throw mfail("compression method " + std::to_string(m->method) + " is not supported (stored and deflate are)");
    }
    uLong crc = crc32(0L, Z_NULL, 0);
    for (uint64_t off = 0; off < out.size(); off += (1u << 30)) {
      const uInt chunk = static_cast<uInt>(std::min<uint64_t>(out.size() - off, 1u << 30));
      crc = crc32(crc, out.data() + off, chunk);
    }
    if (static_cast<uint32_t>(crc) != m->crc) throw mfail("CRC-32 mismatch (the archive is corrupt)");
    return out;
  }

  NpyArray array(const std::string& name) const {
    const Member* m = find(name);
    return detail::parse_npy(member_bytes(name), path_, m ? m->name : name);
  }

 private:
  static std::string array_name(const std::string& member) {
    return member.size() > 4 && member.compare(member.size() - 4, 4, ".npy") == 0 ? member.substr(0, member.size() - 4) : member;
  }
  const Member* find(const std::string& name) const {
    for (const auto& m : members_)
      if (m.name == name || array_name(m.name) == name) return &m;
    return nullptr;
  }
  DataError fail(const std::string& problem) const { return DataError(path_, 0, "", problem); }
  std::vector<uint8_t> read_at(std::ifstream& f, uint64_t offset, uint64_t n, const std::string& what) const {
    if (offset > size_ || n > size_ - offset)
      throw fail(what + " lies outside the file (offset " + std::to_string(offset) + ", " + std::to_string(n) +
                 " bytes, file " + std::to_string(size_) + " bytes; truncated?)");
    if (mem_) return std::vector<uint8_t>(mem_->begin() + static_cast<std::ptrdiff_t>(offset),
                                          mem_->begin() + static_cast<std::ptrdiff_t>(offset + n));
    std::vector<uint8_t> b(static_cast<std::size_t>(n));
    f.seekg(static_cast<std::streamoff>(offset));
    f.read(reinterpret_cast<char*>(b.data()), static_cast<std::streamsize>(n));
    if (!f) throw fail("read error in " + what);
    return b;
  }

  std::string path_;
  std::shared_ptr<const std::vector<uint8_t>> mem_;  // set for in-memory archives
  uint64_t size_ = 0;
  std::vector<Member> members_;
};

inline NpyArray read_npz_array(const std::string& path, const std::string& name) { return NpzFile(path).array(name); }

// ---- TPCpp-10M layout ------------------------------------------------------------------------
// Events of one or more spacepoints files: event e = rows offsets[e] .. offsets[e+1] of data.
struct TpcSpacepoints {
  std::vector<float> data;          // (num_points, 4): E, x, y, z
  std::vector<int64_t> offsets{0};  // num_events + 1
  int64_t num_events() const { return static_cast<int64_t>(offsets.size()) - 1; }
  int64_t num_points() const { return offsets.back(); }
  int64_t event_size(int64_t e) const { return offsets[e + 1] - offsets[e]; }
  const float* event(int64_t e) const { return data.data() + 4 * offsets[e]; }
  void append(const TpcSpacepoints& o) {
    const int64_t base = offsets.back();
    data.insert(data.end(), o.data.begin(), o.data.end());
    for (std::size_t i = 1; i < o.offsets.size(); ++i) offsets.push_back(base + o.offsets[i]);
  }
};

inline TpcSpacepoints read_tpc_spacepoints(const NpzFile& z) {
  const std::string& path = z.path();
  const NpyArray data = z.array("data"), size = z.array("size");
  if (data.shape.size() != 2 || data.shape[1] != 4 || data.kind != 'f')
    throw DataError(path, 0, "", "member 'data.npy': expected a float (N, 4) array of E, x, y, z, got dtype " + data.descr +
                                     " with " + std::to_string(data.shape.size()) + " dimensions");
  if (size.shape.size() != 1 || (size.kind != 'i' && size.kind != 'u'))
    throw DataError(path, 0, "", "member 'size.npy': expected a 1-d integer array of points per event, got dtype " + size.descr);
  TpcSpacepoints out;
  out.data = data.to_vector<float>();
  const std::vector<int64_t> sizes = size.to_vector<int64_t>();
  for (std::size_t e = 0; e < sizes.size(); ++e) {
    if (sizes[e] < 0)
      throw DataError(path, 0, "", "member 'size.npy': event " + std::to_string(e) + " has negative size " + std::to_string(sizes[e]));
    out.offsets.push_back(out.offsets.back() + sizes[e]);
  }
  if (out.offsets.back() != data.shape[0])
    throw DataError(path, 0, "", "member 'size.npy': the event sizes sum to " + std::to_string(out.offsets.back()) +
                                     " but 'data' has " + std::to_string(data.shape[0]) + " rows");
  return out;
}

inline TpcSpacepoints read_tpc_spacepoints(const std::string& path) { return read_tpc_spacepoints(NpzFile(path)); }

// A per-point label file (track_ids.npz, pid_labels.npz, noise_tags.npz): `data`, 1-d (or
// (N, 1)), integer or bool. expected_points >= 0 checks the length.
inline std::vector<int64_t> read_tpc_point_labels(const std::string& path, int64_t expected_points = -1) {
  const NpyArray a = NpzFile(path).array("data");
  const bool column = a.shape.size() == 1 || (a.shape.size() == 2 && a.shape[1] == 1);
  if (!column || a.kind == 'f')
    throw DataError(path, 0, "", "member 'data.npy': expected a 1-d integer or bool array of per-point labels, got dtype " +
                                     a.descr + " with " + std::to_string(a.shape.size()) + " dimensions");
  if (expected_points >= 0 && a.numel() != expected_points)
    throw DataError(path, 0, "", "member 'data.npy': " + std::to_string(a.numel()) + " labels for " +
                                     std::to_string(expected_points) + " spacepoints");
  return a.to_vector<int64_t>();
}

// One split folder of the release: spacepoints.npz or spacepoints_NNN.npz (concatenated in name
// order), and the label files that exist (empty vectors otherwise), checked against the points.
struct TpcSplit {
  TpcSpacepoints points;
  std::vector<int64_t> track_ids, pid_labels, noise_tags;
};

inline TpcSplit read_tpc_split(const std::string& dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) throw DataError(dir, 0, "", "not a directory");
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("spacepoints", 0) == 0 && name.size() > 4 && name.compare(name.size() - 4, 4, ".npz") == 0)
      files.push_back(entry.path().string());
  }
  if (files.empty()) throw DataError(dir, 0, "", "no spacepoints*.npz file in the folder");
  std::sort(files.begin(), files.end());
  TpcSplit s;
  for (const auto& f : files) s.points.append(read_tpc_spacepoints(f));
  const int64_t n = s.points.num_points();
  auto opt = [&](const char* name, std::vector<int64_t>& dst) {
    const fs::path p = fs::path(dir) / name;
    if (fs::exists(p)) dst = read_tpc_point_labels(p.string(), n);
  };
  opt("track_ids.npz", s.track_ids);
  opt("pid_labels.npz", s.pid_labels);
  opt("noise_tags.npz", s.noise_tags);
  return s;
}

}  // namespace mambatrack::data
