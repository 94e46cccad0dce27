// Modulated-weight construction for StyleGAN2's grouped (fused) modulated convolution, in one
// kernel: for each (sample n, output channel o) one block computes
//   a[i,k] = weight[o,i,k] * styles[n,i]
//   d[n,o] = rsqrt(sum_{i,k} a[i,k]^2 + eps)          (if demodulate, else 1)
//   w[n,o,i,k] = a[i,k] * d[n,o]
// reading weight and styles once and writing w once, instead of materialising a and then
// scaling it. Returns (w [N,O,I,kh,kw] in weight's dtype, d [N,O] float32). Sums in float32.
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

std::vector<at::Tensor> modulate_weight(at::Tensor weight, at::Tensor styles, bool demodulate, double eps) {
  TORCH_CHECK(BT_ON_DEVICE(weight) && weight.dim() == 4, "modulate_weight: weight must be [O, I, kh, kw] on CUDA");
  TORCH_CHECK(BT_ON_DEVICE(styles) && styles.dim() == 2 && styles.size(1) == weight.size(1),
              "modulate_weight: styles must be [N, I] on CUDA");
  BT_DEVICE_GUARD(weight);
  weight = weight.contiguous();
  styles = styles.to(weight.scalar_type()).contiguous();
  const int64_t N = styles.size(0), O = weight.size(0), I = weight.size(1), K = weight.size(2) * weight.size(3);
  auto out = at::empty({N, O, I, weight.size(2), weight.size(3)}, weight.options());
  auto dcoefs = at::empty({N, O}, weight.options().dtype(at::kFloat));
  if (N == 0 || O == 0) return {out, dcoefs};
  TORCH_CHECK(N <= 65535, "modulate_weight: at most 65535 samples per call");
  const dim3 blocks((unsigned)O, (unsigned)N);
  const int threads = 256;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, weight.scalar_type(),
                                  "modulate_weight", [&] {
    BT_LAUNCH_SYNC(modulate_kernel<scalar_t>, blocks, threads)(
        weight.data_ptr<scalar_t>(), styles.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), dcoefs.data_ptr<float>(),
        (int)O, (int)I, (int)K, demodulate, (float)eps);
  });
  BT_LAUNCH_CHECK();
  return {out, dcoefs};
}
