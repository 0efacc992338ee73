// MAMBATRACK_HD marks small functions that compile for both the host and a CUDA device (RNG,
// dtype conversions), so the two give the same numbers from the same code.
#pragma once

#if defined(__CUDACC__)
#define MAMBATRACK_HD __host__ __device__ __forceinline__
#else
#define MAMBATRACK_HD inline
#endif
