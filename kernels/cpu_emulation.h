// The little of CUDA that bigtrain's kernels use, emulated on the CPU, so that their own source
// (host and device code) runs without a GPU: `bigtrain kernels --check --emulate` and the tests
// check the kernels' indexing and arithmetic against the PyTorch reference with it.
//
// A launch runs the grid's blocks one after another. A block's threads run one after another
// (BT_LAUNCH), or, for kernels that synchronise (BT_LAUNCH_SYNC), as fibers (ucontext) on the
// calling thread, with __syncthreads a barrier of the block and __shfl_down_sync an exchange
// between the 32 threads of a warp: each fiber in turn runs until it waits at a barrier or ends,
// and a barrier opens once all its threads wait there. (Fibers, not an OS thread per CUDA thread:
// the parity table's upfirdn2d rows ran 2.5x faster.) Threads that wait at different barriers (a
// __syncthreads that some threads skip) are reported as a deadlock instead of hanging, and an
// exception in one thread (a failed check) ends the others at their next barrier; the launch
// reports it. Grids are capped at BT_MAX_GRID_BLOCKS = 3 blocks, so every grid-stride loop goes
// round several times. __shared__ variables are statics: one launch runs at a time, and unlike a
// GPU's shared memory they start at zero and keep their values from block to block. None of this
// says anything about speed, the GPU's memory model or its half-precision arithmetic.
#pragma once
#include <algorithm>
#include <cmath>
#include <math.h>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include <sys/mman.h>
#include <ucontext.h>

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

struct Aborted {};  // thrown in a waiting fiber once another thread of its block has failed

// A reusable barrier for n of a block's fibers.
struct Barrier {
  explicit Barrier(unsigned n_) : n(n_) {}
  void wait();  // below, with the block
  const unsigned n;
  unsigned count = 0;
  unsigned long gen = 0;
};

struct Warp {
  explicit Warp(unsigned n) : size(n), barrier(n) {}
  const unsigned size;
  Barrier barrier;
  float lanes[32];
};

// A fiber's stack, with a guard page below it (an overflow faults instead of writing over the
// next stack). Kept for later launches: one launch runs at a time.
constexpr size_t kStackBytes = 256 * 1024, kGuardBytes = 4096;
inline char* fiber_stack(unsigned i) {
  static std::vector<char*> stacks;
  while (stacks.size() <= i) {
    void* p = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TORCH_CHECK(p != MAP_FAILED, "emulation: no memory for a fiber's stack");
    TORCH_CHECK(mprotect(p, kGuardBytes, PROT_NONE) == 0, "emulation: cannot protect a fiber's guard page");
    stacks.push_back(static_cast<char*>(p) + kGuardBytes);
  }
  return stacks[i];
}

struct Fiber {
  ucontext_t context;
  bool started = false, done = false;
  Barrier* waiting = nullptr;  // the barrier it waits at, and that barrier's generation then
  unsigned long gen = 0;
};

struct Block {
  explicit Block(unsigned n, const std::function<void()>& body_) : barrier(n), fibers(n), body(&body_) {
    for (unsigned w = 0; w < n; w += 32) warps.emplace_back(std::make_unique<Warp>(std::min(32u, n - w)));
  }
  Barrier barrier;
  std::vector<std::unique_ptr<Warp>> warps;
  std::vector<Fiber> fibers;
  const std::function<void()>* body;
  ucontext_t scheduler;
  unsigned current = 0;  // the fiber running
  std::exception_ptr error;
};

// The block whose fibers run on the calling thread; null while threads run one after another.
inline thread_local Block* current_block = nullptr;

inline void Barrier::wait() {
  Block& b = *current_block;
  if (b.error) throw Aborted{};
  if (++count == n) {  // the last to arrive opens it and goes on
    count = 0;
    ++gen;
    return;
  }
  Fiber& f = b.fibers[b.current];
  f.waiting = this;
  f.gen = gen;
  swapcontext(&f.context, &b.scheduler);
  if (b.error) throw Aborted{};
}

inline void fiber_main() {
  Block& b = *current_block;
  try {
    (*b.body)();
  } catch (const Aborted&) {
  } catch (...) {
    if (!b.error) b.error = std::current_exception();
  }
  b.fibers[b.current].done = true;
}  // returns to the scheduler (uc_link)

inline unsigned linear_thread() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }

// One block of a synchronising kernel: its fibers in turn until every one has ended.
inline void run_fibers(dim3 block, const std::function<void()>& body) {
  const unsigned n = block.x * block.y * block.z;
  Block state(n, body);
  current_block = &state;
  struct Reset {
    ~Reset() { current_block = nullptr; }
  } reset;  // however this returns: a later plain launch must not see this block
  unsigned finished = 0;
  while (finished < n) {
    bool ran = false;
    for (unsigned t = 0; t < n; ++t) {
      Fiber& f = state.fibers[t];
      if (f.done || (f.waiting && f.waiting->gen == f.gen && !state.error)) continue;
      if (!f.started) {
        f.started = true;
        if (state.error) {  // nothing to unwind: it never ran
          f.done = true;
          ++finished;
          continue;
        }
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = fiber_stack(t);
        f.context.uc_stack.ss_size = kStackBytes;
        f.context.uc_link = &state.scheduler;
        makecontext(&f.context, fiber_main, 0);
      }
      f.waiting = nullptr;
      state.current = t;
      threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
      swapcontext(&state.scheduler, &f.context);
      ran = true;
      if (f.done) ++finished;
    }
    if (!ran && !state.error)  // every thread left waits at a barrier that cannot open
      state.error = std::make_exception_ptr(std::runtime_error(
          "emulation: deadlock: the block's threads wait at different barriers (a __syncthreads or "
          "__shfl_down_sync that some threads of the block or warp do not reach)"));
  }
  if (state.error) std::rethrow_exception(state.error);
}

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
        blockIdx = dim3(bx, by, bz);
        if (concurrent) {
          run_fibers(block, body);
          continue;
        }
        for (unsigned t = 0; t < nthreads; ++t) {
          threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
          body();
        }
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
