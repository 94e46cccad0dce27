// Modulated-weight construction for StyleGAN2's grouped (fused) modulated convolution, in one
// kernel: for each (sample n, output channel o) one block computes
//   a[i,k] = weight[o,i,k] * styles[n,i]
//   d[n,o] = rsqrt(sum_{i,k} a[i,k]^2 + eps)          (if demodulate, else 1)
//   w[n,o,i,k] = a[i,k] * d[n,o]
// reading weight and styles once and writing w once, instead of materialising a and then
// scaling it. The op (modconv_host.cpp) returns (w [N,O,I,kh,kw] in weight's dtype, d [N,O] float32).
// Sums in float32.
#include "common.cuh"

template <typename scalar_t>
__global__ void modulate_kernel(const scalar_t* __restrict__ weight, const scalar_t* __restrict__ styles,
                                scalar_t* __restrict__ out, float* __restrict__ dcoefs, int O, int I, int K,
                                bool demodulate, float eps) {
  const int o = blockIdx.x, n = blockIdx.y;
  const scalar_t* w = weight + (int64_t)o * I * K;
  const scalar_t* s = styles + (int64_t)n * I;
  __shared__ float partial[32];
  float d = 1.f;
  if (demodulate) {
    float sum = 0.f;
    for (int j = threadIdx.x; j < I * K; j += blockDim.x) {
      const float a = static_cast<float>(w[j]) * static_cast<float>(s[j / K]);
      sum += a * a;
    }
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_down_sync(0xffffffff, sum, off);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = sum;
    __syncthreads();
    if (threadIdx.x < 32) {
      float v = threadIdx.x < (blockDim.x + 31) / 32 ? partial[threadIdx.x] : 0.f;
      for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffff, v, off);
      if (threadIdx.x == 0) partial[0] = rsqrtf(v + eps);
    }
    __syncthreads();
    d = partial[0];
  }
  if (threadIdx.x == 0) dcoefs[(int64_t)n * O + o] = d;
  scalar_t* dst = out + ((int64_t)n * O + o) * I * K;
  for (int j = threadIdx.x; j < I * K; j += blockDim.x)
    dst[j] = static_cast<scalar_t>(static_cast<float>(w[j]) * static_cast<float>(s[j / K]) * d);
}

template <typename scalar_t>
void modulate_weight_launch(const scalar_t* weight, const scalar_t* styles, scalar_t* out, float* dcoefs, int64_t N,
                            int64_t O, int64_t I, int64_t K, bool demodulate, float eps, bt_stream_t stream) {
  const dim3 blocks((unsigned)O, (unsigned)N);
  const int threads = 256;
  BT_LAUNCH_SYNC(modulate_kernel<scalar_t>, blocks, threads, stream)(weight, styles, out, dcoefs, (int)O, (int)I,
                                                                     (int)K, demodulate, eps);
}

#define BT_INSTANTIATE(T)                                                                                    \
  template void modulate_weight_launch<T>(const T*, const T*, T*, float*, int64_t, int64_t, int64_t, int64_t, \
                                          bool, float, bt_stream_t);
BT_FOR_EACH_DTYPE(BT_INSTANTIATE)
#undef BT_INSTANTIATE
