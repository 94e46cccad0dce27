// The little of CUDA that bigtrain's kernels use, emulated on the CPU, so that their own source
// (host and device code) runs without a GPU: `bigtrain kernels --check --emulate` and the tests
// check the kernels' indexing and arithmetic against the PyTorch reference with it.
//
// A launch runs the grid's blocks one after another. A block's threads run one after another
// (BT_LAUNCH), or, for kernels that synchronise (BT_LAUNCH_SYNC), as one OS thread each, with
// __syncthreads a barrier of the block and __shfl_down_sync an exchange between the 32 threads
// of a warp. Grids are capped at BT_MAX_GRID_BLOCKS = 3 blocks, so every grid-stride loop goes
// round several times. __shared__ variables are statics: one launch runs at a time, and unlike a
// GPU's shared memory they start at zero and keep their values from block to block. An exception
// in one thread of a block (a failed check) breaks the block's barriers, so the launch reports it
// instead of hanging. None of this says anything about speed, the GPU's memory model or its
// half-precision arithmetic.
#pragma once
#include <algorithm>
#include <cmath>
#include <math.h>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <vector>

#include <c10/util/Exception.h>  // TORCH_CHECK

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

// CUDA's device math, from the C library (expf, tanhf, ... are there already).
using std::isnan;
inline float rsqrtf(float v) { return 1.f / std::sqrt(v); }

namespace bt_emu {

// A reusable barrier that can be broken: then every waiter, present and future, throws.
class Barrier {
 public:
  explicit Barrier(unsigned n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(m_);
    if (broken_) throw std::runtime_error("emulation: another thread of this block failed");
    const unsigned long gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return gen != gen_ || broken_; });
    if (gen == gen_) throw std::runtime_error("emulation: another thread of this block failed");
  }
  void break_all() {
    const std::lock_guard<std::mutex> lock(m_);
    broken_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  const unsigned n_;
  unsigned count_ = 0;
  unsigned long gen_ = 0;
  bool broken_ = false;
};

struct Warp {
  explicit Warp(unsigned n) : size(n), barrier(n) {}
  const unsigned size;
  Barrier barrier;
  float lanes[32];
};

struct Block {
  explicit Block(unsigned n) : barrier(n) {
    for (unsigned w = 0; w < n; w += 32) warps.emplace_back(std::make_unique<Warp>(std::min(32u, n - w)));
  }
  Barrier barrier;
  std::vector<std::unique_ptr<Warp>> warps;
  void break_all() {
    barrier.break_all();
    for (auto& w : warps) w->barrier.break_all();
  }
};

// The block the calling thread belongs to; null while threads run one after another.
inline thread_local Block* current_block = nullptr;

inline unsigned linear_thread() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }

inline void run(dim3 grid, dim3 block, bool concurrent, const std::function<void()>& body) {
  static std::mutex one_launch;
  const std::lock_guard<std::mutex> launch_guard(one_launch);
  const unsigned nthreads = block.x * block.y * block.z;
  TORCH_CHECK(nthreads >= 1 && nthreads <= 1024, "emulated launch: ", nthreads, " threads per block");
  TORCH_CHECK(!concurrent || nthreads % 32 == 0,
              "emulated launch: a kernel that synchronises needs whole warps (a multiple of 32 threads per block)");
  gridDim = grid;
  blockDim = block;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        const dim3 b(bx, by, bz);
        if (!concurrent) {
          blockIdx = b;
          for (unsigned t = 0; t < nthreads; ++t) {
            threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            body();
          }
          continue;
        }
        Block state(nthreads);
        std::exception_ptr error;
        std::mutex error_mutex;
        auto fail = [&](std::exception_ptr e) {
          {
            const std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = e;
          }
          state.break_all();
        };
        std::vector<std::thread> threads;
        threads.reserve(nthreads);
        try {
          for (unsigned t = 0; t < nthreads; ++t)
            threads.emplace_back([&, t] {
              blockIdx = b;
              threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
              current_block = &state;
              try {
                body();
              } catch (...) {
                fail(std::current_exception());
              }
            });
        } catch (...) {  // no more threads to be had: stop the ones started
          fail(std::current_exception());
        }
        for (auto& th : threads) th.join();
        if (error) std::rethrow_exception(error);
      }
}

template <typename... Params>
struct Launch {
  void (*kernel)(Params...);
  dim3 grid, block;
  bool concurrent;
  template <typename... Args>
  void operator()(Args... args) const {
    run(grid, block, concurrent, [&] { kernel(args...); });
  }
};

template <typename... Params>
Launch<Params...> launch(void (*kernel)(Params...), dim3 grid, dim3 block, bool concurrent) {
  return {kernel, grid, block, concurrent};
}

}  // namespace bt_emu

inline void __syncthreads() {
  TORCH_CHECK(bt_emu::current_block, "emulation: a kernel that calls __syncthreads must launch with BT_LAUNCH_SYNC");
  bt_emu::current_block->barrier.wait();
}

// Lane i gets lane i + delta's value; lanes past the warp's end keep their own, as on a GPU.
template <typename T>
inline T __shfl_down_sync(unsigned /*mask: every lane takes part here*/, T v, unsigned delta) {
  static_assert(std::is_same<T, float>::value, "emulation: __shfl_down_sync is emulated for float only");
  TORCH_CHECK(bt_emu::current_block, "emulation: a kernel that shuffles must launch with BT_LAUNCH_SYNC");
  const unsigned t = bt_emu::linear_thread(), lane = t % 32;
  bt_emu::Warp& warp = *bt_emu::current_block->warps[t / 32];
  warp.lanes[lane] = v;
  warp.barrier.wait();
  const T r = lane + delta < 32 ? warp.lanes[lane + delta] : v;
  warp.barrier.wait();
  return r;
}

// The stream is ignored: a launch runs to completion before it returns.
#define BT_LAUNCH(kernel, grid, block, stream) bt_emu::launch(kernel, grid, block, false)
#define BT_LAUNCH_SYNC(kernel, grid, block, stream) bt_emu::launch(kernel, grid, block, true)
#define BT_MAX_GRID_BLOCKS 3
#define BT_EMU_CHECK(cond) TORCH_CHECK(cond, "emulation: index check failed: " #cond)
