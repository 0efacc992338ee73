#!/usr/bin/env python3
# Writes a host-compilable copy of the CUDA selective-scan kernels of ops/cuda/selective_scan.cuh
# into the directory given (argv[1]) as scan_kern.hpp: CUDA includes replaced by emu.hpp and
# scan_emu_extra.hpp, dynamic shared memory by the emulator's per-block buffer, static shared
# arrays by block-shared host buffers, inline-asm prefetches dropped, the host launch code cut off
# (scan_emu.cpp replays the launch sequences). Build with MAMBATRACK_SCAN_EXPF_DECAY,
# MAMBATRACK_SCAN_PORTABLE_BF16_STORE, MAMBATRACK_SCAN_PRECISE_GATE (the portable variants of the
# three inline-asm helpers) and MAMBATRACK_SCAN_NO_L2_PREFETCH.
import os, re, sys
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'include', 'mambatrack', 'ops', 'cuda')
s = open(os.path.join(root, 'selective_scan.cuh')).read()
for inc in ['#include <cuda_runtime.h>\n', '#include "mambatrack/core/cuda_memory.cuh"\n',
            '#include "mambatrack/ops/cuda/kernel_util.cuh"\n']:
    assert inc in s, inc
    s = s.replace(inc, '')
s = s.replace('#pragma once\n', '#pragma once\n#include "emu.hpp"\n#include "scan_emu_extra.hpp"\n', 1)
s, n = re.subn(r'extern __shared__ (?:__align__\(16\) )?float smem\[\];', 'float* smem = emu::g_smem;', s)
assert n >= 4, n
ids = {'sB': 0, 'sC': 1}
s, n = re.subn(r'__shared__ (?:__align__\(16\) )?float (\w+)\[[^\]]+\];',
               lambda m: 'float* %s = scan_emu::static_smem(%d);' % (m.group(1), ids[m.group(1)]), s)
assert n >= 6, n
old = 'asm volatile("prefetch.global.L2 [%0];" ::"l"(q));'
assert old in s
s = s.replace(old, '(void)q;')
cut = s.index('// Slot map and the chunk-state workspaces')
s = s[:cut] + '}  // namespace scan_detail\n}  // namespace mambatrack::cuda\n'
open(os.path.join(sys.argv[1], 'scan_kern.hpp'), 'w').write(s)
