// Main of the [cuda] test executable: without a CUDA device every test reports "skipped"
// (return code 77, CTest's SKIP_RETURN_CODE); listing the tests works everywhere.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>

int main(int argc, char* argv[]) {
  bool listing = false;
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--list", 6) == 0) listing = true;
  int devices = 0;
  if (!listing && (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)) {
    std::printf("no CUDA device: [cuda] tests skipped\n");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
