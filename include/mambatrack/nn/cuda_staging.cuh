// nn::PinnedStaging: host-to-device copies that do not wait for the GPU. A cudaMemcpyAsync from
// pageable host memory synchronises the stream before it starts (the driver must stage the
// bytes), so a training step that uploads its batch in several pieces drains the GPU each time.
// Here the bytes are first copied into a pinned ring buffer and the DMA from there is queued
// without waiting. A region of the ring is reused only after the event recorded behind its last
// copy has completed (usually long since). Copies larger than half the ring go the pageable way.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstring>
#include <deque>

#include "mambatrack/core/cuda_memory.cuh"
#include "mambatrack/core/error.hpp"

namespace mambatrack::nn {

class PinnedStaging {
 public:
  static constexpr std::size_t kBytes = std::size_t(32) << 20;

  PinnedStaging() = default;
  PinnedStaging(const PinnedStaging&) = delete;
  PinnedStaging& operator=(const PinnedStaging&) = delete;

  // Copies `bytes` from host `src` to device `dst` in `stream` order; `src` may be reused at once.
  void copy_to_device(void* dst, const void* src, std::size_t bytes, cudaStream_t stream) {
    if (bytes == 0) return;
    if (bytes > kBytes / 2 || !ensure_buffer()) {
      MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
      return;
    }
    const std::size_t size = (bytes + 255) / 256 * 256;
    if (head_ + size > kBytes) head_ = 0;  // wrap: the tail of the ring is skipped this round
    const std::size_t begin = head_, end = head_ + size;
    // Recycle the copies that have finished, then wait for any still reading [begin, end).
    while (!pending_.empty() && cudaEventQuery(pending_.front().done) == cudaSuccess) {
      free_events_.push_back(pending_.front().done);
      pending_.pop_front();
    }
    cudaGetLastError();  // cudaEventQuery's cudaErrorNotReady is not an error here
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (overlaps(*it, begin, end)) {
        MAMBATRACK_CUDA_CHECK(cudaEventSynchronize(it->done));
        free_events_.push_back(it->done);
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    std::memcpy(buffer_ + begin, src, bytes);
    MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(dst, buffer_ + begin, bytes, cudaMemcpyHostToDevice, stream));
    Region r{begin, end, take_event()};
    MAMBATRACK_CUDA_CHECK(cudaEventRecord(r.done, stream));
    pending_.push_back(r);
    head_ = end;
  }

 private:
  struct Region {
    std::size_t begin, end;
    cudaEvent_t done;
  };
  static bool overlaps(const Region& r, std::size_t begin, std::size_t end) { return r.begin < end && begin < r.end; }

  // The pinned ring, allocated on first use (false: pinned memory unavailable, copy pageable).
  bool ensure_buffer() {
    if (buffer_) return true;
    if (failed_) return false;
    void* p = nullptr;
    if (cudaMallocHost(&p, kBytes) != cudaSuccess) {
      cudaGetLastError();
      failed_ = true;
      return false;
    }
    buffer_ = static_cast<char*>(p);
    return true;
  }
  cudaEvent_t take_event() {
    if (!free_events_.empty()) {
      cudaEvent_t e = free_events_.back();
      free_events_.pop_back();
      return e;
    }
    // Events that only order copies: no timing.
    cudaEvent_t e = nullptr;
    MAMBATRACK_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }

  char* buffer_ = nullptr;  // never freed: the process-wide staging ring lives as long as the process
  bool failed_ = false;
  std::size_t head_ = 0;
  std::deque<Region> pending_;
  std::deque<cudaEvent_t> free_events_;
};

// The one ring of the CUDA backends (they run on one stream; not for concurrent threads).
inline PinnedStaging& cuda_pinned_staging() {
  static PinnedStaging* s = new PinnedStaging;  // never destroyed (no CUDA calls at exit)
  return *s;
}

}  // namespace mambatrack::nn
