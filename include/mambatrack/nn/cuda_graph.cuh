// nn::CudaGraph: a captured and instantiated sequence of stream-ordered work. capture(stream, f)
// records what f() queues on `stream` without running it (cudaStreamCaptureModeThreadLocal: a
// synchronising or otherwise unsafe call from this thread during f() is an error, and so is a
// device allocation — core/cuda_memory.cuh); launch(stream) replays it. A replay reads and writes
// the very buffers the capture saw: their addresses and shapes must not change afterwards.
#pragma once

#include <cuda_runtime.h>

#include <string>
#include <utility>

#include "mambatrack/core/cuda_memory.cuh"
#include "mambatrack/core/error.hpp"

namespace mambatrack::nn {

class CudaGraph {
 public:
  CudaGraph() = default;
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;
  CudaGraph(CudaGraph&& o) noexcept : exec_(std::exchange(o.exec_, nullptr)) {}
  CudaGraph& operator=(CudaGraph&& o) noexcept {
    if (this != &o) {
      reset();
      exec_ = std::exchange(o.exec_, nullptr);
    }
    return *this;
  }
  ~CudaGraph() { reset(); }

  bool ready() const noexcept { return exec_ != nullptr; }

  template <class F>
  void capture(cudaStream_t stream, F&& f) {
    MAMBATRACK_CHECK(stream != nullptr, DeviceError,
                     "CUDA-graph capture needs a created stream, not the legacy default stream "
                     "(CudaBackend::use_capture_stream())");
    reset();
    CudaGraphState& st = cuda_graph_state();
    MAMBATRACK_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    st.capturing = true;
    cudaGraph_t graph = nullptr;
    try {
      f();
    } catch (...) {
      st.capturing = false;
      cudaStreamEndCapture(stream, &graph);  // ends the (possibly invalidated) capture
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      throw;
    }
    st.capturing = false;
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    if (end != cudaSuccess) {
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      throw DeviceError(std::string("CUDA-graph capture failed: ") + cudaGetErrorName(end) + " (" +
                        cudaGetErrorString(end) + "); something in the captured step synchronised or used "
                        "another stream");
    }
    const cudaError_t inst = cudaGraphInstantiate(&exec_, graph, 0);
    cudaGraphDestroy(graph);
    if (inst != cudaSuccess) {
      exec_ = nullptr;
      cudaGetLastError();
      throw DeviceError(std::string("cudaGraphInstantiate failed: ") + cudaGetErrorString(inst));
    }
    st.captured = true;
  }

  void launch(cudaStream_t stream) const {
    MAMBATRACK_CHECK(exec_ != nullptr, DeviceError, "CudaGraph::launch before a successful capture");
    MAMBATRACK_CUDA_CHECK(cudaGraphLaunch(exec_, stream));
  }

 private:
  void reset() noexcept {
    if (exec_) cudaGraphExecDestroy(exec_);
    exec_ = nullptr;
  }
  cudaGraphExec_t exec_ = nullptr;
};

}  // namespace mambatrack::nn
