// The one process-wide CudaContext (stream, cuBLASLt handle and plans, scratch) that every
// CudaBackend op and CudaParameterStore transfer runs on: created on first use on the legacy
// default stream; set_cuda_backend_stream() replaces it by one on a caller's stream (needed for
// CUDA-graph capture, which cannot capture the legacy default stream). Never destroyed (so no
// CUDA call runs during static destruction, after the runtime may be gone).
#pragma once

#include <cuda_runtime.h>

#include "mambatrack/core/cuda_context.cuh"
#include "mambatrack/core/cuda_memory.cuh"

namespace mambatrack::nn {

namespace cuda_backend_detail {
inline CudaContext*& context_slot() {
  static CudaContext* ctx = nullptr;
  return ctx;
}
}  // namespace cuda_backend_detail

inline CudaContext& cuda_backend_context() {
  CudaContext*& c = cuda_backend_detail::context_slot();
  if (!c) c = new CudaContext(nullptr);
  return *c;
}
inline cudaStream_t cuda_backend_stream() { return cuda_backend_context().stream(); }

// Runs every later CudaBackend op on `stream` (borrowed; the caller keeps it alive). Call between
// steps, not while ops are queued: the old context is freed after a device synchronisation.
inline void set_cuda_backend_stream(cudaStream_t stream) {
  CudaContext*& c = cuda_backend_detail::context_slot();
  if (c) {
    MAMBATRACK_CUDA_CHECK(cudaDeviceSynchronize());
    delete c;
  }
  c = new CudaContext(stream);
}

}  // namespace mambatrack::nn
