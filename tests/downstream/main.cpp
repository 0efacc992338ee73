// Uses the library the way an experiment's code would; exits non-zero if anything disagrees.
#include <mambatrack/mambatrack.hpp>

#include <cstdio>

int main() {
  mambatrack::Philox rng(2026);
  mambatrack::Tensor<float> t(mambatrack::Shape{4, 8});
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(rng.normal());
  mambatrack::SafetensorsWriter w;
  w.set_metadata("format", "pt");
  w.add<float>("weight", mambatrack::View<const float>(t.view()));
  mambatrack::SafetensorsFile r(w.serialize(), "memory");
  const auto back = r.read<float>("weight");
  for (int64_t i = 0; i < t.numel(); ++i)
    if (back[static_cast<size_t>(i)] != t[i]) return 1;
  std::printf("downstream ok: %zu tensors, format %s\n", r.tensors().size(), r.metadata().at("format").c_str());
  return 0;
}
