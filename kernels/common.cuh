// What every kernel file (.cu) includes: ATen's tensor and dispatch headers (not
// torch/extension.h: nvcc parses every header for the device as well as the host, and the whole
// C++ frontend took 110 s a kernel where these take 28 s), and the few CUDA host calls the kernels
// make, as macros, so that the same source also builds for the CPU emulation (cpu_emulation.cpp),
// which runs the kernels' host and device code on a machine without a GPU. The Python bindings
// are in each kernel's .cpp (bindings.h), compiled by the C++ compiler alone.
#pragma once
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#ifdef BIGTRAIN_CPU_EMULATION
#include "cpu_emulation.h"
#else
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

// The tensor is on the device the kernels run on.
#define BT_ON_DEVICE(t) ((t).is_cuda())
// Makes t's GPU current for the rest of the scope.
#define BT_DEVICE_GUARD(t) const c10::cuda::CUDAGuard bt_device_guard((t).device())
// BT_LAUNCH(kernel<scalar_t>, grid, block)(args...) launches on the current stream. Kernels that
// use __syncthreads or warp shuffles launch with BT_LAUNCH_SYNC (the same on a GPU; the CPU
// emulation then runs a block's threads concurrently).
#define BT_LAUNCH(kernel, grid, block) kernel<<<(grid), (block), 0, at::cuda::getCurrentCUDAStream()>>>
#define BT_LAUNCH_SYNC(kernel, grid, block) BT_LAUNCH(kernel, grid, block)
#define BT_LAUNCH_CHECK() C10_CUDA_KERNEL_LAUNCH_CHECK()
// The most blocks a grid-stride kernel launches (the emulation uses 3, so its loops go round).
#define BT_MAX_GRID_BLOCKS (65535LL * 8)
// An index check that only the emulation makes (a failed one is an error there; free on a GPU):
// shared-memory bounds, which a CPU would not trap.
#define BT_EMU_CHECK(cond) ((void)0)
#endif
