// CUDA selective scan benchmark: the three scan problems of the CUDA backend issue (bf16 inputs,
// d_state 16, z/D/delta_bias/softplus as in a Mamba block): forward, backward and forward+backward
// median times over CUDA events after a warm-up, the minimum bytes moved (inputs read once,
// outputs written once), achieved GB/s and the fraction of the measured device-to-device copy
// bandwidth, next to the reference (mamba_ssm 2.3.x on an H100) time from the issue. Every row
// runs the tiled kernels (ScanImpl::kTiled, the default) and again the earlier per-token kernels
// (ScanImpl::kLegacy), so one GPU run compares both. The chunked path's rows say how many saved
// chunks each pass chunk holds (chunk_group; "passes x1" = the earlier single-chunk passes), and
// rows with chunk_group_override() = 1 and other counts compare them.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "mambatrack/cuda.cuh"
#include "mambatrack/ops/cuda/selective_scan.cuh"

using namespace mambatrack;

namespace {

__global__ void fill_uniform(bfloat16* p, int64_t n, uint64_t seed, float lo, float hi) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) p[i] = bfloat16(lo + (hi - lo) * philox_uniform(seed, 3, static_cast<uint64_t>(i)));
}

Tensor<bfloat16, Cuda> random_bf16(Shape s, uint64_t seed, float lo, float hi) {
  Tensor<bfloat16, Cuda> t(s);
  const int64_t n = t.numel();
  if (n > 0) fill_uniform<<<static_cast<unsigned>((n + 255) / 256), 256>>>(t.data(), n, seed, lo, hi);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  return t;
}

template <class F>
double median_ms(F&& f, int runs, int warmup) {
  for (int i = 0; i < warmup; ++i) f();
  MAMBATRACK_CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t a, b;
  MAMBATRACK_CUDA_CHECK(cudaEventCreate(&a));
  MAMBATRACK_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    MAMBATRACK_CUDA_CHECK(cudaEventRecord(a));
    f();
    MAMBATRACK_CUDA_CHECK(cudaEventRecord(b));
    MAMBATRACK_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    MAMBATRACK_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Device-to-device copy bandwidth in bytes/s (read + write counted), 1 GiB.
double copy_bandwidth() {
  const std::size_t bytes = std::size_t(1) << 30;
  Tensor<char, Cuda> a(Shape{static_cast<int64_t>(bytes)}), b(Shape{static_cast<int64_t>(bytes)});
  MAMBATRACK_CUDA_CHECK(cudaMemset(a.data(), 1, bytes));
  const double ms = median_ms([&] { MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice)); }, 20, 3);
  return 2.0 * static_cast<double>(bytes) / (ms * 1e-3);
}

struct Problem {
  const char* name;
  int64_t batch, len, dim;
  double reference_ms, target_ms;
};

struct Row {
  const char* name;
  int64_t chunk;
  const char* path;
  const char* impl;
  std::string group;  // chunked path: saved chunks per pass chunk
  double fwd, bwd, both, bytes_fwd, bytes_bwd, ref, target;
};

// path: the automatic choice (max_seqlen_hint = the problem's length) or a forced one.
Row run(const Problem& pr, int64_t chunk, double bw,
        cuda::scan_detail::ScanPath path = cuda::scan_detail::ScanPath::kAuto,
        cuda::scan_detail::BwdKernel kernel = cuda::scan_detail::BwdKernel::kAuto,
        cuda::scan_detail::ScanImpl impl = cuda::scan_detail::ScanImpl::kTiled, int lanes = 0, int group = 0) {
  const int64_t N = 16, G = 1, L = pr.batch * pr.len, dim = pr.dim;
  Tensor<int64_t> cu_h(Shape{pr.batch + 1});
  for (int64_t b = 0; b <= pr.batch; ++b) cu_h[b] = b * pr.len;
  auto cu = to_device<int64_t>(cu_h.view());
  auto u = random_bf16(Shape{L, dim}, 1, -1, 1);
  auto delta = random_bf16(Shape{L, dim}, 2, -4, 0);
  auto A = random_bf16(Shape{dim, N}, 3, -4, -0.3f);
  auto B = random_bf16(Shape{L, G, N}, 4, -1, 1);
  auto C = random_bf16(Shape{L, G, N}, 5, -1, 1);
  auto D = random_bf16(Shape{dim}, 6, -1, 1);
  auto bias = random_bf16(Shape{dim}, 7, -1, 0.5f);
  auto z = random_bf16(Shape{L, dim}, 8, -2, 2);
  auto dout = random_bf16(Shape{L, dim}, 9, -1, 1);
  Tensor<bfloat16, Cuda> out(Shape{L, dim}), du(Shape{L, dim}), ddelta(Shape{L, dim}), dz(Shape{L, dim});
  Tensor<bfloat16, Cuda> dB(Shape{L, G, N}), dC(Shape{L, G, N});
  auto dA = random_bf16(Shape{dim, N}, 10, -1, 1);
  auto dD = random_bf16(Shape{dim}, 11, -1, 1);
  auto ddb = random_bf16(Shape{dim}, 12, -1, 1);
  SelectiveScanInputs<bfloat16, Cuda> in;
  in.u = u.view();
  in.delta = delta.view();
  in.A = A.view();
  in.B = B.view();
  in.C = C.view();
  in.D = D.view();
  in.delta_bias = bias.view();
  in.z = z.view();
  in.cu_seqlens = cu.view();
  in.chunk = chunk;
  in.max_seqlen_hint = pr.len;
  Tensor<float, Cuda> saved(selective_scan_saved_shape(in));  // fp32 states
  SelectiveScanFwdArgs<bfloat16, Cuda> fa{in, out.view(), {}, saved.view()};
  SelectiveScanBwdArgs<bfloat16, Cuda> ba;
  ba.in = in;
  ba.saved_states = saved.view();
  ba.dout = dout.view();
  ba.du = du.view();
  ba.ddelta = ddelta.view();
  ba.dB = dB.view();
  ba.dC = dC.view();
  ba.dz = dz.view();
  ba.dA = dA.view();
  ba.dD = dD.view();
  ba.ddelta_bias = ddb.view();
  const int runs = 30, warm = 5;
  cuda::scan_detail::scan_path_override() = path;
  cuda::scan_detail::bwd_kernel_override() = kernel;
  cuda::scan_detail::scan_impl_override() = impl;
  cuda::scan_detail::tiled_lanes_override() = lanes;
  cuda::scan_detail::chunk_group_override() = group;
  const bool tiled_bwd = impl != cuda::scan_detail::ScanImpl::kLegacy && cuda::scan_detail::use_tiled_bwd<16>(chunk);
  const bool seq = cuda::scan_detail::sequential_path<bfloat16, 16>(cuda::scan_detail::make_params<bfloat16>(
      in, validate_selective_scan_inputs(in)));
  const bool forced = path != cuda::scan_detail::ScanPath::kAuto;
  const bool per_channel = kernel == cuda::scan_detail::BwdKernel::kPerChannel;
  const char* label = per_channel ? (seq ? "sequential, per-channel bwd" : "chunked, per-channel bwd")
                      : seq       ? (forced ? "sequential (forced)" : "sequential")
                                  : (forced ? "chunked (forced)" : "chunked");
  const char* impl_label = impl == cuda::scan_detail::ScanImpl::kLegacy ? "legacy"
                           : tiled_bwd ? (lanes == 4 ? "tiled, bwd 4 lanes/channel" : "tiled")
                                       : "tiled fwd, split bwd";
  const int64_t m = seq ? 0 : cuda::scan_detail::chunk_group(cuda::scan_detail::make_params<bfloat16>(
      in, validate_selective_scan_inputs(in)));
  const std::string group_label = m == 0 ? std::string("") : ", passes x" + std::to_string(m);
  Row r{pr.name, chunk, label, impl_label, group_label, 0, 0, 0, 0, 0, pr.reference_ms, pr.target_ms};
  r.fwd = median_ms([&] { cuda::selective_scan_fwd<bfloat16>(fa); }, runs, warm);
  r.bwd = median_ms([&] { cuda::selective_scan_bwd<bfloat16>(ba); }, runs, warm);
  r.both = median_ms([&] {
    cuda::selective_scan_fwd<bfloat16>(fa);
    cuda::selective_scan_bwd<bfloat16>(ba);
  }, runs, warm);
  cuda::scan_detail::scan_path_override() = cuda::scan_detail::ScanPath::kAuto;
  cuda::scan_detail::bwd_kernel_override() = cuda::scan_detail::BwdKernel::kAuto;
  cuda::scan_detail::scan_impl_override() = cuda::scan_detail::ScanImpl::kAuto;
  cuda::scan_detail::tiled_lanes_override() = 0;
  cuda::scan_detail::chunk_group_override() = 0;
  const double act = static_cast<double>(L * dim) * 2, bc = static_cast<double>(L * G * N) * 2;
  const double saved_b = static_cast<double>(saved.numel()) * 4;
  r.bytes_fwd = 3 * act + 2 * bc + act + saved_b;                 // u, delta, z, B, C in; out, saved out
  r.bytes_bwd = 4 * act + 2 * bc + saved_b + 3 * act + 2 * bc;    // u, delta, z, dout, B, C, saved in; du, ddelta, dz, dB, dC out
  (void)bw;
  return r;
}

// Per-kernel times of the bf16 d_state-16 scan at one size (each kernel launched alone, median of
// 20 after 3 warm-up), to show where the time goes.
void breakdown(const Problem& pr, int64_t chunk) {
  using namespace cuda::scan_detail;
  constexpr int N = 16;
  const int64_t L = pr.batch * pr.len, dim = pr.dim;
  Tensor<int64_t> cu_h(Shape{pr.batch + 1});
  for (int64_t b = 0; b <= pr.batch; ++b) cu_h[b] = b * pr.len;
  auto cu = to_device<int64_t>(cu_h.view());
  auto u = random_bf16(Shape{L, dim}, 1, -1, 1);
  auto delta = random_bf16(Shape{L, dim}, 2, -4, 0);
  auto A = random_bf16(Shape{dim, N}, 3, -4, -0.3f);
  auto B = random_bf16(Shape{L, 1, N}, 4, -1, 1);
  auto C = random_bf16(Shape{L, 1, N}, 5, -1, 1);
  auto D = random_bf16(Shape{dim}, 6, -1, 1);
  auto bias = random_bf16(Shape{dim}, 7, -1, 0.5f);
  auto z = random_bf16(Shape{L, dim}, 8, -2, 2);
  auto dout = random_bf16(Shape{L, dim}, 9, -1, 1);
  Tensor<bfloat16, Cuda> out(Shape{L, dim}), du(Shape{L, dim}), ddelta(Shape{L, dim}), dz(Shape{L, dim});
  SelectiveScanInputs<bfloat16, Cuda> in;
  in.u = u.view();
  in.delta = delta.view();
  in.A = A.view();
  in.B = B.view();
  in.C = C.view();
  in.D = D.view();
  in.delta_bias = bias.view();
  in.z = z.view();
  in.cu_seqlens = cu.view();
  in.chunk = chunk;
  Tensor<float, Cuda> saved(selective_scan_saved_shape(in));  // fp32 states
  const SelectiveScanSizes s = validate_selective_scan_inputs(in);
  Params<bfloat16> p = make_params<bfloat16>(in, s);
  p.out = out.data();
  p.saved = saved.data();
  p.saved_in = saved.data();
  p.dout = dout.data();
  p.du = du.data();
  p.ddelta = ddelta.data();
  p.dz = dz.data();
  prepare<bfloat16, N>(p, nullptr);
  const int64_t W = p.dim * N + 2 * p.dim, wpg = 2 * p.bpg;
  p.ws_par = static_cast<float*>(cuda::detail::scratch(3, static_cast<std::size_t>(p.slots * W) * sizeof(float)));
  p.ws_bc = static_cast<float*>(
      cuda::detail::scratch(4, static_cast<std::size_t>(p.tokens * p.ngroups * wpg * 2 * N) * sizeof(float) + 4));
  const dim3 grid(static_cast<unsigned>(p.slots), static_cast<unsigned>(p.ngroups * p.bpg));
  const BwdSetup setup = bwd_setup<bfloat16, N>();
  constexpr int S = split_lanes<N>();
  int sms = 1;
  MAMBATRACK_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const unsigned seq_rows = static_cast<unsigned>(std::min<int64_t>(
      p.batch, (static_cast<int64_t>(setup.seq_blocks_per_sm) * sms + grid.y - 1) / grid.y));
  const unsigned seq_split_rows = static_cast<unsigned>(std::min<int64_t>(
      p.batch, (static_cast<int64_t>(setup.seq_split_blocks_per_sm) * sms + grid.y - 1) / grid.y));
  constexpr std::size_t kSplitSmem = bwd_split_smem_bytes<N, S>();
  const bool tiled_ok = chunk <= kTiledMaxChunk;
  constexpr int St = tiled_lanes<N>();
  const std::size_t tiled_smem = bwd_tiled_smem_bytes<N, St>(chunk);
  // The tiled backward with 4 lanes per channel (4 states each) instead of tiled_lanes<N>(), for comparison.
  const std::size_t tiled_smem4 = bwd_tiled_smem_bytes<N, 4>(chunk);
  MAMBATRACK_CUDA_CHECK(cudaFuncSetAttribute(bwd_tiled<bfloat16, N, 4, false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(bwd_tiled_smem_bytes<N, 4>(kTiledMaxChunk))));
  const unsigned seq_tiled_rows = static_cast<unsigned>(std::min<int64_t>(
      p.batch, (static_cast<int64_t>(setup.seq_tiled_blocks_per_sm[tiled_ok ? chunk : 1]) * sms + grid.y - 1) / grid.y));
  int blocks_bwd_split = 0;
  MAMBATRACK_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_bwd_split, bwd_chunk_split<bfloat16, N, S>,
                                                                      kThreads * S, kSplitSmem));
  const unsigned comb = static_cast<unsigned>((p.batch * p.dim * N + 255) / 256);
  constexpr std::size_t kSmem = bwd_smem_bytes<N>();
  MAMBATRACK_CUDA_CHECK(cudaFuncSetAttribute(bwd_chunk<bfloat16, N>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(kSmem)));
  int blocks_bwd = 0, blocks_fwd = 0;
  MAMBATRACK_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_bwd, bwd_chunk<bfloat16, N>, kThreads, kSmem));
  MAMBATRACK_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_fwd, fwd_chunk<bfloat16, N>, kThreads, 0));
  // The chunked path's passes over 4 saved chunks (grouped_params), with their own slot map.
  Params<bfloat16> q = grouped_params(p, 4);
  int* qmap = nullptr;
  MAMBATRACK_CUDA_CHECK(cudaMalloc(&qmap, static_cast<std::size_t>(2 * q.slots) * sizeof(int)));
  MAMBATRACK_CUDA_CHECK(cudaMemset(qmap, 0xff, static_cast<std::size_t>(q.slots) * sizeof(int)));
  q.slot_seq = qmap;
  q.slot_k = qmap + q.slots;
  map_slots<<<static_cast<unsigned>((q.batch + 127) / 128), 128>>>(q.cu, q.batch, q.tokens, q.chunk, q.slots,
                                                                    q.slot_seq, q.slot_k);
  const dim3 gq(static_cast<unsigned>(q.slots), grid.y);
  struct Item {
    const char* name;
    double ms;
  } items[] = {
      {"prepare (memset + map_slots)", median_ms([&] { prepare<bfloat16, N>(p, nullptr); }, 20, 3)},
      {"fwd_local", median_ms([&] { fwd_local<bfloat16, N><<<grid, kThreads>>>(p); }, 20, 3)},
      {"fwd_combine", median_ms([&] { fwd_combine<bfloat16, N><<<comb, 256>>>(p); }, 20, 3)},
      {"fwd_chunk", median_ms([&] { fwd_chunk<bfloat16, N><<<grid, kThreads>>>(p); }, 20, 3)},
      {"bwd_local", median_ms([&] { bwd_local<bfloat16, N><<<grid, kThreads>>>(p); }, 20, 3)},
      {"bwd_combine", median_ms([&] { bwd_combine<bfloat16, N><<<comb, 256>>>(p); }, 20, 3)},
      {"bwd_chunk", median_ms([&] { bwd_chunk<bfloat16, N><<<grid, kThreads, kSmem>>>(p); }, 20, 3)},
      {"fwd_seq (sequential path)",
       median_ms([&] { fwd_seq<bfloat16, N><<<dim3(static_cast<unsigned>(p.batch), grid.y), kThreads>>>(p); }, 20, 3)},
      {"bwd_seq (sequential path)",
       median_ms([&] { bwd_seq<bfloat16, N><<<dim3(seq_rows, grid.y), kThreads, kSmem>>>(p); }, 20, 3)},
      {"bwd_chunk_split (d_state over lanes)",
       median_ms([&] { bwd_chunk_split<bfloat16, N, S><<<grid, kThreads * S, kSplitSmem>>>(p); }, 20, 3)},
      {"bwd_seq_split (sequential path)",
       median_ms([&] { bwd_seq_split<bfloat16, N, S><<<dim3(seq_split_rows, grid.y), kThreads * S, kSplitSmem>>>(p); },
                 20, 3)},
      {"fwd_local tiled", median_ms([&] { fwd_local<bfloat16, N, true><<<grid, kThreads>>>(p); }, 20, 3)},
      {"fwd_chunk tiled", median_ms([&] { fwd_chunk<bfloat16, N, true><<<grid, kThreads>>>(p); }, 20, 3)},
      {"fwd_seq tiled (sequential path)",
       median_ms([&] { fwd_seq<bfloat16, N, true><<<dim3(static_cast<unsigned>(p.batch), grid.y), kThreads>>>(p); }, 20, 3)},
      {"bwd_tiled (chunked path)", tiled_ok ? median_ms([&] {
         bwd_tiled<bfloat16, N, St, false><<<grid, kThreads * St, tiled_smem>>>(p);
       }, 20, 3) : -1.0},
      {"bwd_tiled (sequential path)", tiled_ok ? median_ms([&] {
         bwd_tiled<bfloat16, N, St, true><<<dim3(seq_tiled_rows, grid.y), kThreads * St, tiled_smem>>>(p);
       }, 20, 3) : -1.0},
      {"bwd_tiled, 4 lanes per channel (chunked)", tiled_ok ? median_ms([&] {
         bwd_tiled<bfloat16, N, 4, false><<<grid, kThreads * 4, tiled_smem4>>>(p);
       }, 20, 3) : -1.0},
      {"fwd_local tiled, passes x4 (grouped)", median_ms([&] { fwd_local<bfloat16, N, true><<<gq, kThreads>>>(q); }, 20, 3)},
      {"fwd_combine, passes x4", median_ms([&] { fwd_combine<bfloat16, N><<<comb, 256>>>(q); }, 20, 3)},
      {"fwd_chunk tiled, passes x4 (saves each chunk)",
       median_ms([&] { fwd_chunk<bfloat16, N, true, true><<<gq, kThreads>>>(q); }, 20, 3)},
      {"bwd_local, passes x4", median_ms([&] { bwd_local<bfloat16, N><<<gq, kThreads>>>(q); }, 20, 3)},
      {"bwd_combine, passes x4", median_ms([&] { bwd_combine<bfloat16, N><<<comb, 256>>>(q); }, 20, 3)},
      {"bwd_tiled (chunked path), passes x4", tiled_ok ? median_ms([&] {
         bwd_tiled<bfloat16, N, St, false><<<gq, kThreads * St, tiled_smem>>>(q);
       }, 20, 3) : -1.0},
      {"bwd_reduce_bc", median_ms([&] {
         bwd_reduce_bc<bfloat16><<<static_cast<unsigned>((L * 2 * N + 255) / 256), 256>>>(p.ws_bc, L, wpg, N,
                                                                                          du.data(), dz.data());
       }, 20, 3)},
  };
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  int blocks_tiled = 0, blocks_fwd_tiled = 0;
  if (tiled_ok)
    MAMBATRACK_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_tiled, bwd_tiled<bfloat16, N, St, false>,
                                                                        kThreads * St, tiled_smem));
  MAMBATRACK_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_fwd_tiled, fwd_chunk<bfloat16, N, true>, kThreads, 0));
  std::printf("\nbreakdown, %s, chunk %lld (%lld slots; blocks/SM: fwd_chunk %d, bwd_chunk %d, bwd_chunk_split %d, "
              "fwd_chunk tiled %d, bwd_tiled %d)\n",
              pr.name, static_cast<long long>(chunk), static_cast<long long>(p.slots), blocks_fwd, blocks_bwd,
              blocks_bwd_split, blocks_fwd_tiled, blocks_tiled);
  for (const Item& it : items) std::printf("  %-46s %8.3f ms\n", it.name, it.ms);
  MAMBATRACK_CUDA_CHECK(cudaFree(qmap));
}

}  // namespace

int main() {
  if (cuda_device_count() == 0) {
    std::printf("bench_scan_cuda: no CUDA device, skipped\n");
    return 0;
  }
  cudaDeviceProp prop{};
  MAMBATRACK_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  const double bw = copy_bandwidth();
  std::printf("bench_scan_cuda: %s (%d SMs, L2 %d MiB), %s\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20, date);
  std::printf("measured device-to-device copy bandwidth: %.0f GB/s (1 GiB cudaMemcpy, read + write)\n", bw * 1e-9);
  const Problem problems[] = {
      {"4096 x 12, d_inner 128", 4096, 12, 128, 8.08, 0.5},
      {"8 x 8192, d_inner 512", 8, 8192, 512, 3.44, 0.8},
      {"64 x 2048, d_inner 1024", 64, 2048, 1024, 13.0, 3.0},
  };
  breakdown(problems[0], 16);
  breakdown(problems[1], 16);
  breakdown(problems[2], 16);
  std::vector<Row> rows;
  using cuda::scan_detail::ScanImpl;
  for (const auto& p : problems)
    for (int64_t chunk : {8, 12, 16, 32, 64}) rows.push_back(run(p, chunk, bw));
  // The tiled backward with 4 lanes per channel instead of 2 (more resident warps), for tuning.
  for (const auto& p : problems)
    for (int64_t chunk : {8, 16})
      rows.push_back(run(p, chunk, bw, cuda::scan_detail::ScanPath::kAuto, cuda::scan_detail::BwdKernel::kAuto,
                         ScanImpl::kTiled, 4));
  for (const auto& p : problems)
    for (int64_t chunk : {8, 16, 32, 64})
      rows.push_back(run(p, chunk, bw, cuda::scan_detail::ScanPath::kAuto, cuda::scan_detail::BwdKernel::kAuto,
                         ScanImpl::kLegacy));
  // The chunked path's passes over single chunks (chunk_group_override() = 1: the earlier
  // launch sequence) and over 2, 4, 8 chunks, on the long-sequence problem; then forced
  // chunked with single-chunk passes on the others.
  for (int64_t chunk : {12, 16})
    for (int group : {1, 2, 4, 8})
      rows.push_back(run(problems[1], chunk, bw, cuda::scan_detail::ScanPath::kAuto,
                         cuda::scan_detail::BwdKernel::kAuto, ScanImpl::kTiled, 0, group));
  for (int64_t chunk : {8})
    rows.push_back(run(problems[1], chunk, bw, cuda::scan_detail::ScanPath::kAuto,
                       cuda::scan_detail::BwdKernel::kAuto, ScanImpl::kTiled, 0, 1));
  for (const Problem* p : {&problems[0], &problems[2]})
    rows.push_back(run(*p, 16, bw, cuda::scan_detail::ScanPath::kChunked, cuda::scan_detail::BwdKernel::kAuto,
                       ScanImpl::kTiled, 0, 1));
  // Both paths forced on every problem, to check (and retune) the automatic choice.
  for (const auto& p : problems)
    for (auto path : {cuda::scan_detail::ScanPath::kChunked, cuda::scan_detail::ScanPath::kSequential})
      for (ScanImpl impl : {ScanImpl::kTiled, ScanImpl::kLegacy})
        rows.push_back(run(p, 16, bw, path, cuda::scan_detail::BwdKernel::kAuto, impl));
  // The per-channel backward kernel (d_state not split over lanes), automatic path.
  for (const auto& p : problems)
    rows.push_back(run(p, p.len <= 16 ? 16 : 32, bw, cuda::scan_detail::ScanPath::kAuto,
                       cuda::scan_detail::BwdKernel::kPerChannel, ScanImpl::kLegacy));
  std::printf("\nselective scan, bf16 inputs, d_state 16, z + D + delta_bias + softplus; median of 30 after 5 warm-up\n");
  std::printf("| problem | chunk | path | kernels | fwd ms | bwd ms | fwd+bwd ms | min MB fwd+bwd | GB/s | %% of copy | floor ms (min bytes / copy) | reference ms | target ms |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    const double bytes = r.bytes_fwd + r.bytes_bwd, gbs = bytes / (r.both * 1e-3) * 1e-9;
    std::printf("| %s | %lld | %s%s | %s | %.3f | %.3f | %.3f | %.1f | %.0f | %.0f%% | %.3f | %.2f | %.1f |\n", r.name,
                static_cast<long long>(r.chunk), r.path, r.group.c_str(), r.impl, r.fwd, r.bwd, r.both, bytes * 1e-6, gbs,
                100.0 * gbs * 1e9 / bw, bytes / bw * 1e3, r.ref, r.target);
  }
  return 0;
}
