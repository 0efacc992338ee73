#!/bin/sh
# Host emulation of the CUDA SSD, gated RMSNorm and selective-scan kernels, for machines without a
# GPU: every CUDA thread is a std::thread, __syncthreads a std::barrier, shared memory an exact-size
# NaN-filled buffer per block, scratch buffers exact-size NaN-filled vectors, all under
# AddressSanitizer/UBSan. It runs the same launch sequence as ssd_fwd/ssd_bwd against the double
# reference (float storage); scan_emu does the same for the selective scan's launch sequences
# (sequential and chunked path). Not part of the CMake build (C++20, slow: about a minute, pass
# "big" for ssd_emu's headdim 64 / d_state 128 case and scan_emu's 3-channel-block case, several
# minutes more).
#   sh tests/cuda/emulation/run.sh [big]
set -e
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
cp "$here/emu.hpp" "$here/ssd_emu.cpp" "$here/gated_rmsnorm_emu.cpp" "$here/scan_emu.cpp" "$here/scan_emu_extra.hpp" "$work/"
python3 "$here/make_kernels.py" "$work"
python3 "$here/scan_make_kernel.py" "$work"
flags="-std=c++20 -O1 -g -fsanitize=address,undefined -pthread -I$work -I$here/../../../include"
g++ $flags "$work/gated_rmsnorm_emu.cpp" -o "$work/gated_rmsnorm_emu"
g++ $flags "$work/ssd_emu.cpp" -o "$work/ssd_emu"
# The scan kernels with the portable variants of their inline-asm helpers (scan_make_kernel.py).
g++ $flags -DMAMBATRACK_SCAN_EXPF_DECAY -DMAMBATRACK_SCAN_PORTABLE_BF16_STORE -DMAMBATRACK_SCAN_PRECISE_GATE \
  -DMAMBATRACK_SCAN_NO_L2_PREFETCH "$work/scan_emu.cpp" -o "$work/scan_emu"
"$work/gated_rmsnorm_emu"
"$work/scan_emu" "$@"
"$work/ssd_emu" "$@"
rm -rf "$work"
