// CPU threading: parallel_for over an index range with a static partition (so the same thread
// count always gives the same work split and the same floating-point results), and the global
// thread count shared by our loops and Eigen's GEMMs (Eigen built with OpenMP follows
// omp_get_max_threads() unless told otherwise). Serial when built without OpenMP. No Eigen here,
// so CUDA translation units may include it.
#pragma once

#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace mambatrack {

inline int num_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// n <= 0: all cores.
inline void set_num_threads(int n) {
#if defined(_OPENMP)
  if (n <= 0) n = omp_get_num_procs();
  omp_set_num_threads(n);
#else
  (void)n;
#endif
}

// f(i) for i in [begin, end), split into contiguous static blocks across the threads. Iterations
// must be independent. Below `grain` iterations it runs serially.
template <class F>
void parallel_for(int64_t begin, int64_t end, F&& f, int64_t grain = 1) {
#if defined(_OPENMP)
  if (end - begin > grain && num_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel for schedule(static)
    for (int64_t i = begin; i < end; ++i) f(i);
    return;
  }
#else
  (void)grain;
#endif
  for (int64_t i = begin; i < end; ++i) f(i);
}

}  // namespace mambatrack
