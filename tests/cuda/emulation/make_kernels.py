#!/usr/bin/env python3
# Writes host-compilable copies of the CUDA kernels of ops/cuda/ssd.cuh and gated_rmsnorm.cuh
# into the directory given (argv[1]): CUDA includes replaced by emu.hpp, dynamic shared memory by
# the emulator's per-block buffer, and the host launch code (<<< >>>) cut off.
import sys, os
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'include', 'mambatrack', 'ops', 'cuda')
out = sys.argv[1]
incs = ['#include <cuda_runtime.h>\n', '#include <cuda_bf16.h>\n', '#include <mma.h>\n', '#include "mambatrack/core/cuda_memory.cuh"\n',
        '#include "mambatrack/ops/cuda/kernel_util.cuh"\n']

s = open(os.path.join(root, 'ssd.cuh')).read()
for inc in incs:
    s = s.replace(inc, '')
s = s.replace('#pragma once\n', '#pragma once\n#include "emu.hpp"\n', 1)
s = s.replace('extern __shared__ float smem[];', 'float* smem = emu::g_smem;')
assert s.count('extern __shared__ __align__(128) unsigned char ssd_smem[];') == 6
s = s.replace('extern __shared__ __align__(128) unsigned char ssd_smem[];',
              'unsigned char* ssd_smem = reinterpret_cast<unsigned char*>(emu::g_smem);')
a = s.index('inline std::size_t smem_limit() {'); b = s.index('\n}\n', a) + 3
s = s[:a] + 'inline std::size_t smem_limit() { return emu::kSmemLimit; }\n' + s[b:]
# Few blocks, so that the grid-stride loops over slots and (sequence, head) pairs run.
assert 'kOuterBlocks = 4096, kPassBlocks = 1024' in s
s = s.replace('kOuterBlocks = 4096, kPassBlocks = 1024', 'kOuterBlocks = 8, kPassBlocks = 3')
s = s[:s.index('// Scratch (id ')] + '}  // namespace ssd_cuda_detail\n}  // namespace mambatrack::cuda\n'
open(os.path.join(out, 'ssd_kern.hpp'), 'w').write(s)

s = open(os.path.join(root, 'gated_rmsnorm.cuh')).read()
for inc in incs:
    s = s.replace(inc, '')
s = s.replace('#pragma once\n', '#pragma once\n#include "emu.hpp"\ninline float rsqrtf(float x) { return 1.0f / sqrtf(x); }\n', 1)
s = s[:s.index('template <class T>\nconstexpr void check_type')] + '}  // namespace grn_detail\n}  // namespace mambatrack::cuda\n'
open(os.path.join(out, 'grn_kern.hpp'), 'w').write(s)
