// upfirdn2d: upsample by zero insertion, pad (or crop), FIR-filter, downsample, in one pass.
// The filter is float32, accumulation is float32 whatever the input dtype (float32, float16,
// bfloat16). Semantics: bigtrain/ops/upfirdn2d.py (module docstring). Two kernels: the generic one
// (any 2-D filter, any up and down per axis; one thread per output element) and a tiled one for
// separable filters with the resampling StyleGAN2 uses (below it).
#include "common.cuh"

#include <type_traits>

template <typename scalar_t>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ x, const float* __restrict__ f,
                                 scalar_t* __restrict__ y, int64_t planes, int in_h, int in_w, int out_h,
                                 int out_w, int fh, int fw, int upx, int upy, int downx, int downy, int padx0,
                                 int pady0, float gain, bool flip_filter) {
  const int64_t total = planes * out_h * out_w;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)blockDim.x * gridDim.x) {
    const int ox = idx % out_w;
    const int oy = (idx / out_w) % out_h;
    const scalar_t* plane = x + (idx / ((int64_t)out_w * out_h)) * in_h * in_w;
    float acc = 0.f;
    for (int jy = 0; jy < fh; ++jy) {
      const int ky = oy * downy + jy - pady0;  // row on the zero-inserted grid
      if (ky < 0 || ky % upy != 0 || ky / upy >= in_h) continue;
      const float* frow = f + (flip_filter ? jy : fh - 1 - jy) * fw;  // true convolution unless flip_filter
      const scalar_t* xrow = plane + (int64_t)(ky / upy) * in_w;
      for (int jx = 0; jx < fw; ++jx) {
        const int kx = ox * downx + jx - padx0;
        if (kx < 0 || kx % upx != 0 || kx / upx >= in_w) continue;
        acc += static_cast<float>(xrow[kx / upx]) * frow[flip_filter ? jx : fw - 1 - jx];
      }
    }
    y[idx] = static_cast<scalar_t>(acc * gain);
  }
}

// ---------------------------------------------------------------------------------------------
// The specialised path: a separable (1-D) filter, the same up in x and y (1 or 2) and the same down
// (1 or 2), which is every call StyleGAN2 makes (the FIR filter around its transposed and strided
// convolutions, up2 and down2 of the skips, and their adjoints in the backward passes). A block
// computes a TILE x TILE tile of one plane's output: it reads the input window the tile needs into
// shared memory once (as float32; zeros outside the input), filters that along x into a second
// shared array (one row per input row, so inserted zeros are never stored), then along y into the
// output. Each input element is read from global memory about once and each output written once,
// where the generic kernel read each input element taps_x * taps_y times and the two-pass
// separable route wrote and re-read a whole intermediate tensor.
constexpr int SEP_TILE = 32;       // output tile edge
constexpr int SEP_THREADS = 256;   // threads per block (each computes 4-5 outputs per pass)

struct SepParams {
  int64_t planes;
  int in_h, in_w, out_h, out_w, pad_x0, pad_y0, taps, tiles_x, tiles_y;
  float gain;
  bool flip_filter;
};

// floor(a / B) for a compile-time B >= 1 and any sign of a.
template <int B>
__device__ __forceinline__ int floor_div(int a) {
  return a >= 0 ? a / B : -((-a + B - 1) / B);
}

// TAPS > 0: that many taps, loops unrolled; TAPS == 0: p.taps (<= UPFIRDN_MAX_TAPS) taps. The launch
// bounds hold the 4-tap kernels to 64 registers (4 blocks per multiprocessor) without spilling; the
// run-time-taps kernels, with 16-tap register windows, to 128.
template <typename scalar_t, int UP, int DOWN, int TAPS>
__global__ void __launch_bounds__(SEP_THREADS, TAPS > 0 ? 4 : 2)
    upfirdn2d_sep_kernel(const scalar_t* __restrict__ x, const float* __restrict__ f, scalar_t* __restrict__ y,
                         SepParams p) {
  constexpr int T = TAPS > 0 ? TAPS : UPFIRDN_MAX_TAPS;  // bound used for the shared arrays
  // A tile reads SPAN consecutive upsampled-grid positions per axis; starting at phase p < UP
  // from an input sample, they cover floor((p + SPAN - 1) / UP) + 1 input samples, at most IN.
  constexpr int SPAN = (SEP_TILE - 1) * DOWN + T;
  constexpr int IN = (SPAN + UP - 2) / UP + 1;
  constexpr int LOADS = (IN * IN + SEP_THREADS - 1) / SEP_THREADS;  // window elements per thread
  constexpr int LOAD_BATCH = LOADS < 6 ? LOADS : 6;                    // ... loaded at once
  constexpr int VY = 4;                                                // output rows per thread, y pass
  constexpr int WY = (VY - 1) * DOWN + T;                              // positions those rows read
  static_assert(SEP_TILE % VY == 0, "the y pass splits a tile's columns into VY-row strips");
  __shared__ float s_in[IN][IN];           // the input window
  __shared__ float s_row[IN][SEP_TILE];    // filtered along x: one row per input row
  const int taps = TAPS > 0 ? TAPS : p.taps;
  // Correlation weights: w[j] multiplies upsampled-grid position o * DOWN - pad + j. The whole
  // gain goes on x so that a negative gain works.
  float wx[T], wy[T];
#pragma unroll
  for (int j = 0; j < T; ++j) {
    const float fj = j < taps ? f[p.flip_filter ? j : taps - 1 - j] : 0.f;
    wx[j] = fj * p.gain;
    wy[j] = fj;
  }
  const int64_t tiles_per_plane = (int64_t)p.tiles_x * p.tiles_y;
  const int64_t work = p.planes * tiles_per_plane;
  for (int64_t item = blockIdx.x; item < work; item += gridDim.x) {
    const int64_t plane = item / tiles_per_plane;
    const int tile = (int)(item - plane * tiles_per_plane);
    const int ox0 = (tile % p.tiles_x) * SEP_TILE, oy0 = (tile / p.tiles_x) * SEP_TILE;
    // First upsampled-grid position the tile reads, the input sample at or before it, and the
    // position's phase relative to that sample (0 <= phase < UP).
    const int kx0 = ox0 * DOWN - p.pad_x0, ky0 = oy0 * DOWN - p.pad_y0;
    const int ix0 = floor_div<UP>(kx0), iy0 = floor_div<UP>(ky0);
    const int phase_x = kx0 - ix0 * UP, phase_y = ky0 - iy0 * UP;
    const scalar_t* src = x + plane * p.in_h * p.in_w;
    // The window's loads are issued in batches of up to LOAD_BATCH before any is stored: a thread
    // keeps several reads in flight instead of one (a GPU needs many bytes in flight per
    // multiprocessor to reach its memory bandwidth, and 2-byte elements bring little each); the
    // batch bounds the registers this takes, and so the blocks a multiprocessor can hold.
#pragma unroll
    for (int l0 = 0; l0 < LOADS; l0 += LOAD_BATCH) {
      float v[LOAD_BATCH];
#pragma unroll
      for (int l = 0; l < LOAD_BATCH; ++l) {
        const int i = threadIdx.x + (l0 + l) * SEP_THREADS, r = i / IN, c = i % IN, iy = iy0 + r, ix = ix0 + c;
        v[l] = (l0 + l < LOADS && i < IN * IN && iy >= 0 && iy < p.in_h && ix >= 0 && ix < p.in_w)
                   ? static_cast<float>(src[(int64_t)iy * p.in_w + ix]) : 0.f;
      }
#pragma unroll
      for (int l = 0; l < LOAD_BATCH; ++l) {
        const int i = threadIdx.x + (l0 + l) * SEP_THREADS;
        if (l0 + l < LOADS && i < IN * IN) s_in[i / IN][i % IN] = v[l];
      }
    }
    __syncthreads();
    // Along x. Output column c reads positions c * DOWN + phase_x + j of the window; with UP = 2
    // only those on input samples (even offsets) are nonzero.
    for (int i = threadIdx.x; i < IN * SEP_TILE; i += SEP_THREADS) {
      const int r = i / SEP_TILE, c = i % SEP_TILE, k = c * DOWN + phase_x;
      float acc = 0.f;
#pragma unroll
      for (int j = 0; j < T; ++j)
        if ((TAPS > 0 || j < taps) && (k + j) % UP == 0) {
          BT_EMU_CHECK((k + j) / UP < IN);
          acc += wx[j] * s_in[r][(k + j) / UP];
        }
      s_row[r][c] = acc;
    }
    __syncthreads();
    // Along y, into the output: VY consecutive rows of one column per thread, from one window
    // of positions held in registers (VY outputs read (VY - 1) * DOWN + taps positions, not
    // VY * taps); a warp's lanes take consecutive columns, so shared memory serves them at once
    // and the output writes are coalesced.
    scalar_t* dst = y + plane * p.out_h * p.out_w;
    for (int i = threadIdx.x; i < SEP_TILE * SEP_TILE / VY; i += SEP_THREADS) {
      const int r0 = (i / SEP_TILE) * VY, c = i % SEP_TILE, ox = ox0 + c, k = r0 * DOWN + phase_y;
      if (ox >= p.out_w) continue;
      float win[WY];
#pragma unroll
      for (int m = 0; m < WY; ++m) {
        win[m] = 0.f;
        if ((TAPS > 0 || m < (VY - 1) * DOWN + taps) && (k + m) % UP == 0) {
          BT_EMU_CHECK((k + m) / UP < IN);
          win[m] = s_row[(k + m) / UP][c];
        }
      }
#pragma unroll
      for (int h = 0; h < VY; ++h) {
        const int oy = oy0 + r0 + h;
        float acc = 0.f;
#pragma unroll
        for (int j = 0; j < T; ++j)  // taps past the filter's are skipped: 0 * Inf would be NaN
          if (TAPS > 0 || j < taps) acc += wy[j] * win[h * DOWN + j];
        if (oy < p.out_h) dst[(int64_t)oy * p.out_w + ox] = static_cast<scalar_t>(acc);
      }
    }
    __syncthreads();  // the next tile overwrites s_in and s_row
  }
}

template <typename scalar_t, int UP, int DOWN>
void launch_sep(const scalar_t* x, const float* f, scalar_t* y, const SepParams& p, bt_stream_t stream) {
  // 4 taps (StyleGAN2's [1, 3, 3, 1]) unrolled; any other width up to UPFIRDN_MAX_TAPS at run time.
  const auto kernel = p.taps == 4 ? upfirdn2d_sep_kernel<scalar_t, UP, DOWN, 4>
                                  : upfirdn2d_sep_kernel<scalar_t, UP, DOWN, 0>;
  const int64_t blocks = std::min<int64_t>(p.planes * p.tiles_x * p.tiles_y, (int64_t)BT_MAX_GRID_BLOCKS);
  BT_LAUNCH_SYNC(kernel, blocks, SEP_THREADS, stream)(x, f, y, p);
}

// ---------------------------------------------------------------------------------------------
// channels_last (NHWC) inputs with the tiled kernel's filters and factors: the channels are
// innermost in memory, so a thread takes VEC consecutive channels of one output pixel (16 bytes:
// 4 float32 or 8 float16/bfloat16 channels, where the channel count and the pointers allow it; else
// one channel) and a warp's loads and stores are contiguous without a shared-memory tile. Each
// thread reads the (taps / UP)^2 input pixels its output pixel needs, through the cache (the
// threads of the neighbouring pixels read most of them again), and writes its output once.
template <typename scalar_t, int N>
struct alignas(sizeof(scalar_t) * N) ChannelVec {
  scalar_t v[N];
};

struct NhwcParams {
  int64_t batch, pixels;  // pixels: batch * out_h * out_w
  int channels, in_h, in_w, out_h, out_w, pad_x0, pad_y0, taps;
  float gain;
  bool flip_filter;
};

template <typename scalar_t, int UP, int DOWN, int TAPS, int VEC>
__global__ void __launch_bounds__(256)
    upfirdn2d_nhwc_kernel(const scalar_t* __restrict__ x, const float* __restrict__ f, scalar_t* __restrict__ y,
                          NhwcParams p) {
  using V = ChannelVec<scalar_t, VEC>;
  constexpr int T = TAPS > 0 ? TAPS : UPFIRDN_MAX_TAPS;
  const int taps = TAPS > 0 ? TAPS : p.taps;
  // Correlation weights, as the tiled kernel's: w[j] multiplies upsampled-grid position
  // o * DOWN - pad + j.
  float w[T];
#pragma unroll
  for (int j = 0; j < T; ++j) w[j] = j < taps ? f[p.flip_filter ? j : taps - 1 - j] : 0.f;
  const int vecs = p.channels / VEC;
  const int64_t total = p.pixels * vecs;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)blockDim.x * gridDim.x) {
    const int c = (int)(idx % vecs) * VEC;
    const int64_t pix = idx / vecs;
    const int ox = (int)(pix % p.out_w);
    const int oy = (int)((pix / p.out_w) % p.out_h);
    const int64_t n = pix / ((int64_t)p.out_w * p.out_h);
    BT_EMU_CHECK(n < p.batch);
    const scalar_t* src = x + n * p.in_h * p.in_w * p.channels + c;
    const int ky0 = oy * DOWN - p.pad_y0, kx0 = ox * DOWN - p.pad_x0;
    float acc[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) acc[k] = 0.f;
#pragma unroll
    for (int jy = 0; jy < T; ++jy) {
      const int ky = ky0 + jy;  // taps past the filter's are skipped (0 * Inf would be NaN)
      if ((TAPS == 0 && jy >= taps) || ky % UP != 0 || ky < 0 || ky / UP >= p.in_h) continue;
      const scalar_t* row = src + (int64_t)(ky / UP) * p.in_w * p.channels;
      float racc[VEC];
#pragma unroll
      for (int k = 0; k < VEC; ++k) racc[k] = 0.f;
#pragma unroll
      for (int jx = 0; jx < T; ++jx) {
        const int kx = kx0 + jx;
        if ((TAPS == 0 && jx >= taps) || kx % UP != 0 || kx < 0 || kx / UP >= p.in_w) continue;
        const V v = *reinterpret_cast<const V*>(row + (int64_t)(kx / UP) * p.channels);
#pragma unroll
        for (int k = 0; k < VEC; ++k) racc[k] += w[jx] * static_cast<float>(v.v[k]);
      }
#pragma unroll
      for (int k = 0; k < VEC; ++k) acc[k] += w[jy] * racc[k];
    }
    V out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) out.v[k] = static_cast<scalar_t>(acc[k] * p.gain);
    *reinterpret_cast<V*>(y + pix * p.channels + c) = out;
  }
}

template <typename scalar_t, int UP, int DOWN>
void launch_nhwc(const scalar_t* x, const float* f, scalar_t* y, const NhwcParams& p, bt_stream_t stream) {
  // 16-byte channel vectors for 4-tap filters (every StyleGAN2 call on features); one channel at a
  // time, with the taps a run-time count, for the rest (RGB images, other filters).
  constexpr int VEC = 16 / sizeof(scalar_t) > 0 ? 16 / sizeof(scalar_t) : 1;
  auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  const bool vec = p.taps == 4 && p.channels % VEC == 0 && aligned(x) && aligned(y);
  const int threads = 256;
  const int64_t work = p.pixels * (vec ? p.channels / VEC : p.channels);
  const int64_t blocks = std::min<int64_t>((work + threads - 1) / threads, (int64_t)BT_MAX_GRID_BLOCKS);
  const auto kernel = vec ? upfirdn2d_nhwc_kernel<scalar_t, UP, DOWN, 4, VEC>
                          : upfirdn2d_nhwc_kernel<scalar_t, UP, DOWN, 0, 1>;
  BT_LAUNCH(kernel, blocks, threads, stream)(x, f, y, p);
}

// ---------------------------------------------------------------------------------------------
// The launchers (launch.h).
template <typename scalar_t>
void upfirdn2d_generic(const scalar_t* x, const float* f, scalar_t* y, const UpfirdnParams& p, bt_stream_t stream) {
  const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
  const int threads = 256;
  const int blocks = (int)std::min<int64_t>((total + threads - 1) / threads, (int64_t)BT_MAX_GRID_BLOCKS);
  BT_LAUNCH(upfirdn2d_kernel<scalar_t>, blocks, threads, stream)(
      x, f, y, p.batch * p.channels, p.in_h, p.in_w, p.out_h, p.out_w, p.fh, p.fw, p.upx, p.upy, p.downx, p.downy,
      p.pad_x0, p.pad_y0, p.gain, p.flip_filter);
}

// Calls launch(UP, DOWN) with the factors as compile-time constants: up 2, down 2, or neither (the
// host has checked upfirdn2d_separable_supported: upx == upy, downx == downy, not both 2).
template <typename Launch>
void with_factors(const UpfirdnParams& p, const Launch& launch) {
  using One = std::integral_constant<int, 1>;
  using Two = std::integral_constant<int, 2>;
  if (p.upx == 2)
    launch(Two(), One());
  else if (p.downx == 2)
    launch(One(), Two());
  else
    launch(One(), One());
}

template <typename scalar_t>
void upfirdn2d_separable(const scalar_t* x, const float* f, scalar_t* y, const UpfirdnParams& p, bool channels_last,
                         bt_stream_t stream) {
  if (channels_last) {
    NhwcParams q;
    q.batch = p.batch, q.pixels = p.batch * p.out_h * p.out_w, q.channels = (int)p.channels;
    q.in_h = p.in_h, q.in_w = p.in_w, q.out_h = p.out_h, q.out_w = p.out_w;
    q.pad_x0 = p.pad_x0, q.pad_y0 = p.pad_y0, q.taps = p.fw;
    q.gain = p.gain, q.flip_filter = p.flip_filter;
    with_factors(p, [&](auto up, auto down) {
      launch_nhwc<scalar_t, decltype(up)::value, decltype(down)::value>(x, f, y, q, stream);
    });
    return;
  }
  SepParams q;
  q.planes = p.batch * p.channels;
  q.in_h = p.in_h, q.in_w = p.in_w, q.out_h = p.out_h, q.out_w = p.out_w;
  q.pad_x0 = p.pad_x0, q.pad_y0 = p.pad_y0, q.taps = p.fw;
  q.tiles_x = (p.out_w + SEP_TILE - 1) / SEP_TILE, q.tiles_y = (p.out_h + SEP_TILE - 1) / SEP_TILE;
  q.gain = p.gain, q.flip_filter = p.flip_filter;
  with_factors(p, [&](auto up, auto down) {
    launch_sep<scalar_t, decltype(up)::value, decltype(down)::value>(x, f, y, q, stream);
  });
}

#define BT_INSTANTIATE(T)                                                                                   \
  template void upfirdn2d_generic<T>(const T*, const float*, T*, const UpfirdnParams&, bt_stream_t);       \
  template void upfirdn2d_separable<T>(const T*, const float*, T*, const UpfirdnParams&, bool, bt_stream_t);
BT_FOR_EACH_DTYPE(BT_INSTANTIATE)
#undef BT_INSTANTIATE
