// What every kernel file (.cu) includes: the launchers' interface (launch.h: c10's Half and
// BFloat16, no ATen) and the few CUDA constructs the kernels use beyond the language, as macros,
// so that the same source also builds for the CPU emulation (cpu_emulation.cpp), which runs the
// kernels on a machine without a GPU. The host side of each kernel (tensors, checks, dispatch, the
// Python binding) is its _host.cpp (host.h), compiled by the C++ compiler.
#pragma once
#include <algorithm>
#include <cstdint>

#include "launch.h"

#ifdef BIGTRAIN_CPU_EMULATION
#include "cpu_emulation.h"
#else
#include <cuda_runtime.h>

// BT_LAUNCH(kernel<scalar_t>, grid, block, stream)(args...) launches on the stream. Kernels that
// use __syncthreads or warp shuffles launch with BT_LAUNCH_SYNC (the same on a GPU; the CPU
// emulation then runs a block's threads concurrently).
#define BT_LAUNCH(kernel, grid, block, stream) kernel<<<(grid), (block), 0, (stream)>>>
#define BT_LAUNCH_SYNC(kernel, grid, block, stream) BT_LAUNCH(kernel, grid, block, stream)
// The most blocks a grid-stride kernel launches (the emulation uses 3, so its loops go round).
#define BT_MAX_GRID_BLOCKS (65535LL * 8)
// An index check that only the emulation makes (a failed one is an error there; free on a GPU):
// shared-memory bounds, which a CPU would not trap.
#define BT_EMU_CHECK(cond) ((void)0)
#endif
