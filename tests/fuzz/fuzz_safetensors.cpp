// libFuzzer target for the safetensors reader: any byte string either parses into a consistent
// file (every tensor's bytes inside the buffer, re-serialising gives a readable file) or throws
// CheckpointError. Anything else (a crash, another exception, a sanitizer report) is a bug.
#include <cstdint>
#include <vector>

#include "mambatrack/core/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<unsigned char> bytes(data, data + size);
  try {
    mambatrack::SafetensorsFile f(std::move(bytes), "fuzz");
    mambatrack::SafetensorsWriter w;
    for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
    uint64_t total = 0;
    for (const auto& t : f.tensors()) {
      total += t.bytes();
      w.add(t.name, t.dtype, t.shape, f.raw(t.name), t.bytes());
      if (t.dtype != mambatrack::DType::C64 && t.dtype != mambatrack::DType::F8_E4M3 &&
          t.dtype != mambatrack::DType::F8_E5M2 && t.dtype != mambatrack::DType::F8_E8M0)
        (void)f.as_double(t.name);
    }
    if (total > size) __builtin_trap();
    mambatrack::SafetensorsFile again(w.serialize(), "fuzz-again");
    if (again.tensors().size() != f.tensors().size()) __builtin_trap();
  } catch (const mambatrack::CheckpointError&) {
  }
  return 0;
}
