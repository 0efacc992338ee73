// golden_runner_cuda DIR [--require-all]: golden_runner's main (golden/golden_runner.cpp, compiled
// in here: same CLI, output lines and exit codes) over the CUDA handlers of this folder, which
// register the same ops. Without a CUDA device it prints why and returns 77, so CTest reports the
// test skipped rather than failed; the usage message is unchanged.
#include <cuda_runtime_api.h>
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "golden/golden.hpp"  // every header golden_runner.cpp includes, before `main` is renamed

#define main golden_runner_main
#include "golden/golden_runner.cpp"
#undef main

int main(int argc, char** argv) {
  if (argc >= 2) {
    int devices = 0;
    const cudaError_t status = cudaGetDeviceCount(&devices);
    if (status != cudaSuccess || devices == 0) {
      std::printf("no CUDA device (%s): golden_runner_cuda skipped\n",
                  status != cudaSuccess ? cudaGetErrorString(status) : "cudaGetDeviceCount found 0 devices");
      return 77;
    }
  }
  return golden_runner_main(argc, argv);
}
