// The per-stream state of the CUDA ops: a stream (borrowed), a cuBLASLt handle with its
// workspace, grow-only scratch buffers for per-block partial sums, and a cache of cuBLASLt
// matmul plans (descriptors + the chosen algorithm, so repeated GEMMs skip the heuristic).
// MAMBATRACK_CUBLAS_CHECK turns a cuBLAS/cuBLASLt status into a DeviceError naming the call.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "mambatrack/core/cuda_memory.cuh"
#include "mambatrack/core/error.hpp"

namespace mambatrack {

namespace detail {
inline const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
  }
}
inline void cublas_check(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw DeviceError(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " +
                      cublas_status_name(status) + " (" + std::to_string(static_cast<int>(status)) + ")");
}
}  // namespace detail

#define MAMBATRACK_CUBLAS_CHECK(call) ::mambatrack::detail::cublas_check((call), #call, __FILE__, __LINE__)

// Key of a cached cuBLASLt plan: every integer that shapes the descriptors.
using GemmPlanKey = std::array<int64_t, 12>;

struct GemmPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

class CudaContext {
 public:
  static constexpr std::size_t kWorkspaceBytes = std::size_t(32) << 20;  // cuBLASLt's advice for Hopper

  // `stream` is borrowed (null: the legacy default stream).
  explicit CudaContext(cudaStream_t stream = nullptr) : stream_(stream), workspace_(Shape{int64_t(kWorkspaceBytes)}) {
    MAMBATRACK_CUBLAS_CHECK(cublasLtCreate(&lt_));
  }
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;
  ~CudaContext() {
    for (auto& kv : plans_) {
      cublasLtMatrixLayoutDestroy(kv.second.a);
      cublasLtMatrixLayoutDestroy(kv.second.b);
      cublasLtMatrixLayoutDestroy(kv.second.c);
      cublasLtMatmulDescDestroy(kv.second.op);
    }
    if (lt_) cublasLtDestroy(lt_);
  }

  cudaStream_t stream() const { return stream_; }
  cublasLtHandle_t lt() const { return lt_; }
  void* workspace() { return workspace_.data(); }
  std::size_t workspace_bytes() const { return kWorkspaceBytes; }

  // At least `bytes` of device scratch, contents unspecified; `slot` (0..3) separates buffers an
  // op needs at once. Grows only; growing releases the old buffer, or keeps it alive when a CUDA
  // graph may hold its address (cuda_graph_state().captured).
  void* scratch(std::size_t bytes, int slot = 0) {
    auto& s = scratch_[static_cast<std::size_t>(slot & 3)];
    if (static_cast<std::size_t>(s.numel()) < bytes) {
      if (cuda_graph_state().captured) retired_.push_back(std::move(s));
      s = Tensor<uint8_t, Cuda>();
      s = Tensor<uint8_t, Cuda>(Shape{static_cast<int64_t>(bytes + (bytes >> 2) + 256)});
    }
    return s.data();
  }
  template <class T>
  T* scratch_as(std::size_t count, int slot = 0) {
    return static_cast<T*>(scratch(count * sizeof(T), slot));
  }

  std::map<GemmPlanKey, GemmPlan>& plans() { return plans_; }

 private:
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  Tensor<uint8_t, Cuda> workspace_;
  std::array<Tensor<uint8_t, Cuda>, 4> scratch_;
  std::vector<Tensor<uint8_t, Cuda>> retired_;  // outgrown scratch a captured graph may use
  std::map<GemmPlanKey, GemmPlan> plans_;
};

}  // namespace mambatrack
