// CUDA Linear through cuBLASLt (see ops/linear.hpp): y = x·Wᵀ (+ b) with the bias fused into the
// epilogue; dx = dy·W (overwritten); dW += dyᵀ·x (beta = 1); db += Σ_t dy (deterministic column
// sum). Row-major (tokens, in)·(out, in)ᵀ is, in cuBLASLt's column-major terms, yᵀ(out×n) =
// op_T(W as in×out)·(x as in×n). fp32 inputs compute in fp32, tf32 or bf16 (GemmCompute);
// bf16 inputs always accumulate in fp32. cuBLASLt is deterministic for a fixed algorithm and
// workspace; plans are cached in the CudaContext so the algorithm stays fixed.
#pragma once

#include <cublasLt.h>

#include "mambatrack/ops/cuda/common.cuh"
#include "mambatrack/ops/linear.hpp"

namespace mambatrack::cuda {

// How fp32 GEMMs compute (bf16 inputs always multiply in bf16 and accumulate in fp32).
enum class GemmCompute {
  kFp32,  // full fp32 (CUBLAS_COMPUTE_32F)
  kTf32,  // tensor cores on tf32-rounded inputs, fp32 accumulation (≈1e-3 relative)
  kBf16,  // tensor cores on bf16-rounded inputs, fp32 accumulation (≈1e-2 relative)
};

namespace detail {

template <class T>
constexpr cudaDataType_t cuda_type() {
  if constexpr (std::is_same_v<T, float>) return CUDA_R_32F;
  else return CUDA_R_16BF;
}

inline cublasComputeType_t compute_type(cudaDataType_t in, GemmCompute c) {
  if (in != CUDA_R_32F) return CUBLAS_COMPUTE_32F;
  switch (c) {
    case GemmCompute::kTf32: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case GemmCompute::kBf16: return CUBLAS_COMPUTE_32F_FAST_16BF;
    default: return CUBLAS_COMPUTE_32F;
  }
}

inline int64_t ptr_alignment(const void* p) {
  const auto u = reinterpret_cast<uintptr_t>(p);
  int64_t a = 256;
  while (a > 1 && (u % static_cast<uintptr_t>(a)) != 0) a /= 2;
  return a;
}

// Column-major D(m×n) = alpha·op(A)·op(B) + beta·C with C = D (in place), bias (m) fused when
// given. A is (lda × ·), op T when trans_a. A and B of data type `dt`, C/D of `ct` (default dt).
inline void gemm_lt(CudaContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void* A,
                    int64_t lda, const void* B, int64_t ldb, void* C, int64_t ldc, float beta, cudaDataType_t dt,
                    GemmCompute compute, const void* bias, int ct_in = -1) {
  const cudaDataType_t ct = ct_in < 0 ? dt : static_cast<cudaDataType_t>(ct_in);
  const int64_t align = std::min({ptr_alignment(A), ptr_alignment(B), ptr_alignment(C),
                                  bias ? ptr_alignment(bias) : int64_t(256)});
  const GemmPlanKey key{trans_a, trans_b, m, n, k, lda, ldb, ldc, static_cast<int64_t>(dt),
                        static_cast<int64_t>(compute) * 4 + (bias ? 2 : 0) + (beta != 0.0f ? 1 : 0), align,
                        static_cast<int64_t>(ct)};
  auto& plans = ctx.plans();
  auto it = plans.find(key);
  if (it == plans.end()) {
    GemmPlan p;
    const cublasComputeType_t comp = compute_type(dt, compute);
    MAMBATRACK_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, comp, CUDA_R_32F));
    const cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    MAMBATRACK_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    MAMBATRACK_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    const cublasLtEpilogue_t epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    MAMBATRACK_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    if (bias) {
      MAMBATRACK_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &dt, sizeof(dt)));
      MAMBATRACK_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    }
    MAMBATRACK_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, dt, trans_a ? k : m, trans_a ? m : k, lda));
    MAMBATRACK_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, dt, trans_b ? n : k, trans_b ? k : n, ldb));
    MAMBATRACK_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, ct, m, n, ldc));
    cublasLtMatmulPreference_t pref = nullptr;
    MAMBATRACK_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = ctx.workspace_bytes();
    const uint32_t al = static_cast<uint32_t>(align);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceSetAttribute(pref, attr, &al, sizeof(al));
    if (st == CUBLAS_STATUS_SUCCESS)
      st = cublasLtMatmulAlgoGetHeuristic(ctx.lt(), p.op, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatrixLayoutDestroy(p.c);
      cublasLtMatmulDescDestroy(p.op);
      throw DeviceError("linear: cuBLASLt has no algorithm for a " + std::to_string(m) + "x" + std::to_string(n) +
                        "x" + std::to_string(k) + " GEMM (" + (dt == CUDA_R_32F ? "fp32" : "bf16") +
                        ", pointer alignment " + std::to_string(align) + " bytes): " + ::mambatrack::detail::cublas_status_name(st));
    }
    p.algo = result.algo;
    it = plans.emplace(key, p).first;
  } else if (bias) {
    MAMBATRACK_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(it->second.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  const float alpha = 1.0f;
  const GemmPlan& p = it->second;
  MAMBATRACK_CUBLAS_CHECK(cublasLtMatmul(ctx.lt(), p.op, &alpha, A, p.a, B, p.b, &beta, C, p.c, C, p.c, &p.algo,
                                         ctx.workspace(), ctx.workspace_bytes(), ctx.stream()));
}

// y[t, o] = b[o] (or 0): the k = 0 case, which cuBLASLt does not take.
template <class T>
__global__ void fill_rows_kernel(T* __restrict__ y, const T* __restrict__ b, int64_t n, int64_t cols) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n * cols;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = b ? b[i % cols] : from_f<T>(0.0f);
}

template <class T>
void linear_fwd_impl(const LinearFwdArgs<T, Cuda>& a, CudaContext& ctx, GemmCompute compute) {
  a.check();
  const int64_t n = a.tokens(), in = a.in_features(), out = a.out_features();
  if (n == 0 || out == 0) return;
  const T* bias = ops::present(a.b) ? a.b.data : nullptr;
  if (in == 0) {
    fill_rows_kernel<T><<<grid_for(n * out, 256), 256, 0, ctx.stream()>>>(a.y.data, bias, n, out);
    check_launch("linear");
    return;
  }
  gemm_lt(ctx, true, false, out, n, in, a.w.data, in, a.x.data, in, a.y.data, out, 0.0f, cuda_type<T>(), compute,
          bias);
}

template <class T>
void linear_bwd_impl(const LinearBwdArgs<T, Cuda>& a, CudaContext& ctx, GemmCompute compute) {
  a.check();
  const int64_t n = a.tokens(), in = a.in_features(), out = a.out_features();
  if (ops::present(a.dx) && n * in > 0) {
    if (out == 0) {
      fill_rows_kernel<T><<<grid_for(n * in, 256), 256, 0, ctx.stream()>>>(a.dx.data, nullptr, n, in);
      check_launch("linear backward");
    } else {
      // dxᵀ(in×n) = W(in×out, col-major view of the row-major (out, in)) · dyᵀ(out×n)
      gemm_lt(ctx, false, false, in, n, out, a.w.data, in, a.dy.data, out, a.dx.data, in, 0.0f, cuda_type<T>(),
              compute, nullptr);
    }
  }
  if (n == 0) return;
  if (ops::present(a.dw) && out * in > 0) {
    // dWᵀ(in×out) += xᵀ(in×n) · dy(n×out), dy seen as (out×n) col-major, transposed.
    gemm_lt(ctx, false, true, in, out, n, a.x.data, in, a.dy.data, out, a.dw.data, in, 1.0f, cuda_type<T>(),
            compute, nullptr);
  }
  if (ops::present(a.db) && out > 0) colsum_accumulate<T>(a.dy.data, n, out, a.db.data, ctx);
}

}  // namespace detail

inline void linear_fwd(const LinearFwdArgs<float, Cuda>& a, CudaContext& ctx, GemmCompute compute = GemmCompute::kFp32) {
  detail::linear_fwd_impl<float>(a, ctx, compute);
}
inline void linear_fwd(const LinearFwdArgs<bfloat16, Cuda>& a, CudaContext& ctx) {
  detail::linear_fwd_impl<bfloat16>(a, ctx, GemmCompute::kFp32);
}
inline void linear_bwd(const LinearBwdArgs<float, Cuda>& a, CudaContext& ctx, GemmCompute compute = GemmCompute::kFp32) {
  detail::linear_bwd_impl<float>(a, ctx, compute);
}
inline void linear_bwd(const LinearBwdArgs<bfloat16, Cuda>& a, CudaContext& ctx) {
  detail::linear_bwd_impl<bfloat16>(a, ctx, GemmCompute::kFp32);
}

// Mixed precision: bf16 activations and weights, fp32 master gradients. dx (bf16) as above;
// dw32 (out, in) += dyᵀ·x and db32 (out) += Σ_t dy accumulate in fp32 (either may be absent).
// a.dw and a.db must be absent.
inline void linear_bwd(const LinearBwdArgs<bfloat16, Cuda>& a, View<float, Cuda> dw32, View<float, Cuda> db32,
                       CudaContext& ctx) {
  MAMBATRACK_CHECK_SHAPE(!ops::present(a.dw) && !ops::present(a.db), "linear backward (fp32 gradients): give dW and",
                         " db as the fp32 views, not in the bf16 arguments");
  a.check();
  const int64_t n = a.tokens(), in = a.in_features(), out = a.out_features();
  if (ops::present(dw32)) ops::check_matrix(dw32, out, in, "linear backward", "dw (fp32)");
  if (ops::present(db32)) ops::check_vector(db32, out, "linear backward", "db (fp32)");
  detail::linear_bwd_impl<bfloat16>(a, ctx, GemmCompute::kFp32);
  if (n == 0) return;
  if (ops::present(dw32) && out * in > 0)
    detail::gemm_lt(ctx, false, true, in, out, n, a.x.data, in, a.dy.data, out, dw32.data, in, 1.0f, CUDA_R_16BF,
                    GemmCompute::kFp32, nullptr, CUDA_R_32F);
  if (ops::present(db32) && out > 0) detail::colsum_accumulate<bfloat16, float>(a.dy.data, n, out, db32.data, ctx);
}

}  // namespace mambatrack::cuda
