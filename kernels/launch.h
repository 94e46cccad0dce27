// The interface between a kernel's two halves: the device side (<kernel>.cu, compiled by nvcc: the
// CUDA kernels and a launcher per path, on raw pointers) and the host side (<kernel>_host.cpp,
// compiled by the C++ compiler: the tensor checks, allocation, dtype dispatch and the Python
// binding). Each launcher is defined in its .cu for float, double, c10::Half and c10::BFloat16
// (BT_FOR_EACH_DTYPE) and launches on the stream it is given. Nothing of ATen reaches nvcc, which
// parses every header for the device as well as the host: ATen's tensor headers cost a kernel's
// .cu about 27 of its 30 s (dev-cpu, one core), this header and c10's two number types about 1.
#pragma once
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cstdint>

#ifdef BIGTRAIN_CPU_EMULATION
using bt_stream_t = void*;  // the emulation runs a launch to completion; there is no stream
#else
#include <cuda_runtime_api.h>
using bt_stream_t = cudaStream_t;
#endif

#define BT_FOR_EACH_DTYPE(M) M(float) M(double) M(c10::Half) M(c10::BFloat16)

// ---- upfirdn2d (semantics: bigtrain/ops/upfirdn2d.py)
constexpr int UPFIRDN_MAX_TAPS = 16;  // widest 1-D filter the separable paths take

struct UpfirdnParams {
  int64_t batch, channels;
  int in_h, in_w, out_h, out_w;
  int upx, upy, downx, downy, pad_x0, pad_y0;
  int fh, fw;  // the filter's taps per axis (a 1-D filter runs along both: fh == fw, its length)
  float gain;
  bool flip_filter;
};

// Whether the separable paths take these arguments (bigtrain/ops/_cuda.py asks the same).
inline bool upfirdn2d_separable_supported(int64_t taps, int64_t upx, int64_t upy, int64_t downx, int64_t downy) {
  return taps >= 1 && taps <= UPFIRDN_MAX_TAPS && upx == upy && downx == downy && upx <= 2 && downx <= 2 &&
         (upx == 1 || downx == 1);
}

// Any 2-D filter, any factors; NCHW in and out.
template <typename scalar_t>
void upfirdn2d_generic(const scalar_t* x, const float* f, scalar_t* y, const UpfirdnParams& p, bt_stream_t stream);
// A 1-D filter the separable paths take; NCHW (the tiled kernel) or channels_last in and out.
template <typename scalar_t>
void upfirdn2d_separable(const scalar_t* x, const float* f, scalar_t* y, const UpfirdnParams& p, bool channels_last,
                         bt_stream_t stream);

// ---- bias_act: mode 0 forward, 1 backward, 2 double backward (bias_act.cu)
template <typename scalar_t>
struct BiasActArgs {
  const scalar_t *x, *dy, *ddx;  // dy, ddx: null where the mode does not use them
  const float *b, *s, *a;        // float32 whatever x's dtype; null where absent
  scalar_t* out;
  int64_t n;                  // elements
  int64_t b_stride, b_size;   // elements between channels (1: channels innermost) and channels
  int64_t hw, a_nstride;      // with s, a or a per-sample b: pixels per plane; a's elements per sample (0: shared)
  int64_t b_nstride;          // b's elements per sample: C for a per-sample bias [N, C], 0 when shared
  int act, mode;
  float alpha, gain, clamp;
};
template <typename scalar_t>
void bias_act_launch(const BiasActArgs<scalar_t>& p, bt_stream_t stream);

// ---- modconv: w[n,o] = weight[o] * styles[n] * d[n,o] (modconv.cu)
constexpr int64_t MODCONV_MAX_SAMPLES = 65535;  // the grid's y dimension
template <typename scalar_t>
void modulate_weight_launch(const scalar_t* weight, const scalar_t* styles, scalar_t* out, float* dcoefs, int64_t N,
                            int64_t O, int64_t I, int64_t K, bool demodulate, float eps, bt_stream_t stream);
