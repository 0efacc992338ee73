#!/bin/sh
# Host emulation of the CUDA SSD and gated RMSNorm kernels, for machines without a GPU: every
# CUDA thread is a std::thread, __syncthreads a std::barrier, shared memory an exact-size
# NaN-filled buffer per block, scratch buffers exact-size NaN-filled vectors, all under
# AddressSanitizer/UBSan. It runs the same launch sequence as ssd_fwd/ssd_bwd against the double
# reference (float storage). Not part of the CMake build (C++20, slow: about a minute, pass
# "big" to ssd_emu for the headdim 64 / d_state 128 case, several minutes more).
#   sh tests/cuda/emulation/run.sh [big]
set -e
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
cp "$here/emu.hpp" "$here/ssd_emu.cpp" "$here/gated_rmsnorm_emu.cpp" "$work/"
python3 "$here/make_kernels.py" "$work"
flags="-std=c++20 -O1 -g -fsanitize=address,undefined -pthread -I$work -I$here/../../../include"
g++ $flags "$work/gated_rmsnorm_emu.cpp" -o "$work/gated_rmsnorm_emu"
g++ $flags "$work/ssd_emu.cpp" -o "$work/ssd_emu"
"$work/gated_rmsnorm_emu"
"$work/ssd_emu" "$@"
rm -rf "$work"
