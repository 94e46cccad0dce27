// bias_act: y = clamp(act(u) * gain, -clamp, clamp) with u = x * s + a + b, elementwise, with the
// first and second derivatives as further modes so that autograd can differentiate twice (R1 and
// path-length regularization need second-order gradients):
//   mode 0: y                              (forward)
//   mode 1: dy * d y/d u                   (backward; also the gradient of mode 1 w.r.t. dy)
//   mode 2: ddx * dy * d2 y/d u2           (gradient of mode 1 w.r.t. u)
// b (bias, over one dimension), s and a are optional. s and a are the modulated convolution's
// epilogue (StyleGAN2's demodulation coefficients and noise), for 4-D x with the bias over the
// channels only: s is [N, C] (one factor per sample and channel), a is [N or 1, 1, H, W] (one value
// per pixel, the same for every channel; a_nstride is H*W, or 0 when all samples share it).
// Applying them here saves the two full passes over the activations (a multiply, an add) that
// precede bias_act otherwise, and the intermediate saved for the backward. For the same 4-D x the
// bias may also be per sample, [N, C] (b_nstride C, else 0): with s, any affine map per sample and
// channel, which is what batch norm and a conditional gain and bias after it come to (BigGAN's
// conditional BN + ReLU in one pass).
// b, s and a are float32 whatever x's dtype: they are small, and a folded batch norm's scale and
// shift are large and cancel where a channel's mean is large against its spread (a constant channel:
// 1/sqrt(eps) times its value), which they would not survive rounded to 16 bits.
// Activation ids follow bigtrain/ops/bias_act.py's CUDA_ACT_IDS. Math in float32.
#include "common.cuh"

struct ActDerivs { float f, d1, d2; };

__device__ __forceinline__ ActDerivs activate(int act, float u, float alpha) {
  switch (act) {
    case 1: return u > 0.f || isnan(u) ? ActDerivs{u, 1.f, 0.f} : ActDerivs{0.f, 0.f, 0.f};  // relu; NaN stays NaN
    case 2: return u > 0.f ? ActDerivs{u, 1.f, 0.f} : ActDerivs{alpha * u, alpha, 0.f};  // lrelu
    case 3: { const float t = tanhf(u); return {t, 1.f - t * t, -2.f * t * (1.f - t * t)}; }  // tanh
    case 4: { const float s = 1.f / (1.f + expf(-u)); return {s, s * (1.f - s), s * (1.f - s) * (1.f - 2.f * s)}; }
    // elu and selu at u == 0 exactly, as torch: the first derivative is the negative side's, the
    // second is 0 (torch's double backward masks with u < 0).
    case 5: { if (u > 0.f) return {u, 1.f, 0.f}; const float e = expf(u); return {expm1f(u), e, u < 0.f ? e : 0.f}; }
    case 6: {  // selu
      const float scale = 1.0507009873554805f, a = 1.6732632423543772f;
      if (u > 0.f) return {scale * u, scale, 0.f};
      const float e = expf(u);
      return {scale * a * expm1f(u), scale * a * e, u < 0.f ? scale * a * e : 0.f};
    }
    case 7: {  // softplus, beta 1, threshold 20 (as torch)
      if (u > 20.f) return {u, 1.f, 0.f};
      const float s = 1.f / (1.f + expf(-u));
      return {log1pf(expf(u)), s, s * (1.f - s)};
    }
    case 8: {  // swish / silu
      const float s = 1.f / (1.f + expf(-u));
      return {u * s, s * (1.f + u * (1.f - s)), s * (1.f - s) * (2.f + u * (1.f - 2.f * s))};
    }
    default: return {u, 1.f, 0.f};  // linear
  }
}

// VEC consecutive elements per thread and step, loaded and stored as one vector: the host picks
// VEC = 4 when every pointer is aligned to it, the element count is a multiple of it and the bias
// stride is either a multiple of it (NCHW conv layers: one bias lookup per vector) or 1 (the bias
// runs along the innermost dimension: channels_last activations and [N, C] dense layers; a lookup
// per element), else VEC = 1. index_t is int when the element count allows it: 64-bit division is
// a long subroutine on a GPU, and the bias lookup divides.
template <typename scalar_t, int VEC>
struct alignas(sizeof(scalar_t) * VEC) Vec {
  scalar_t v[VEC];
};

// The bias, scale and addend of a vector's VEC elements starting at element i (0, 1 and 0 where
// absent). The bias of sample nn and channel c is b[nn * b_nstride + c] (b_nstride 0: shared by the
// samples). With any of them, b_stride and b_size describe the channel dimension: b_stride is H*W
// for NCHW (the vector then lies in one plane: the host takes VEC = 4 only when b_stride is a
// multiple of 4) or 1 when the channels are innermost (channels_last, [N, C] dense layers, 1x1
// planes: the vector may cross channels, pixels and samples). Divisions once per vector; the
// channels-innermost walk steps channel, pixel and sample with carries.
template <typename index_t, int VEC>
__device__ __forceinline__ void lookups(const float* __restrict__ b, const float* __restrict__ s,
                                        const float* __restrict__ a, index_t i, index_t b_stride, index_t b_size,
                                        index_t hw, index_t a_nstride, index_t b_nstride, float* bias, float* sc,
                                        float* ad) {
  if (b == nullptr && s == nullptr && a == nullptr) {
#pragma unroll
    for (int k = 0; k < VEC; ++k) bias[k] = 0.f, sc[k] = 1.f, ad[k] = 0.f;
  } else if (b_stride == 1) {
    index_t c = i % b_size, nn = 0, p = 0;
    if (s != nullptr || a != nullptr || b_nstride != 0) {
      const index_t pix = i / b_size;
      nn = pix / hw;
      p = pix - nn * hw;
    }
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      bias[k] = b ? b[nn * b_nstride + c] : 0.f;
      sc[k] = s ? s[nn * b_size + c] : 1.f;
      ad[k] = a ? a[nn * a_nstride + p] : 0.f;
      if (++c == b_size) {
        c = 0;
        if (++p == hw) p = 0, ++nn;
      }
    }
  } else {
    const index_t plane = i / b_stride, c = plane % b_size, nn = plane / b_size, p = i - plane * b_stride;
    const float bk = b ? b[nn * b_nstride + c] : 0.f, sk = s ? s[nn * b_size + c] : 1.f;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      bias[k] = bk;
      sc[k] = sk;
      ad[k] = a ? a[nn * a_nstride + p + k] : 0.f;
    }
  }
}

template <typename scalar_t, typename index_t, int VEC>
__global__ void bias_act_kernel(const scalar_t* __restrict__ x, const float* __restrict__ b,
                                const float* __restrict__ s, const float* __restrict__ a,
                                const scalar_t* __restrict__ dy, const scalar_t* __restrict__ ddx,
                                scalar_t* __restrict__ out, index_t n, index_t b_stride, index_t b_size, index_t hw,
                                index_t a_nstride, index_t b_nstride, int act, int mode, float alpha, float gain,
                                float clamp) {
  using V = Vec<scalar_t, VEC>;
  const index_t step = (index_t)blockDim.x * gridDim.x * VEC;
  for (index_t i = ((index_t)blockIdx.x * blockDim.x + threadIdx.x) * VEC; i < n; i += step) {
    float bias[VEC], sc[VEC], ad[VEC];
    lookups<index_t, VEC>(b, s, a, i, b_stride, b_size, hw, a_nstride, b_nstride, bias, sc, ad);
    const V xv = *reinterpret_cast<const V*>(x + i);
    V dyv, ddxv, outv;
    if (mode >= 1) dyv = *reinterpret_cast<const V*>(dy + i);
    if (mode == 2) ddxv = *reinterpret_cast<const V*>(ddx + i);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const ActDerivs d = activate(act, static_cast<float>(xv.v[k]) * sc[k] + ad[k] + bias[k], alpha);
      const float z = d.f * gain;
      // clamp passes the gradient where -clamp <= z <= clamp, as torch.clamp does.
      const bool inside = clamp < 0.f || (z >= -clamp && z <= clamp);
      float r;
      // Written with comparisons, not fminf/fmaxf, so that NaN passes through as torch.clamp does.
      if (mode == 0) r = clamp < 0.f ? z : (z < -clamp ? -clamp : (z > clamp ? clamp : z));
      else if (mode == 1) r = inside ? static_cast<float>(dyv.v[k]) * d.d1 * gain : 0.f;
      else r = inside ? static_cast<float>(ddxv.v[k]) * static_cast<float>(dyv.v[k]) * d.d2 * gain : 0.f;
      outv.v[k] = static_cast<scalar_t>(r);
    }
    *reinterpret_cast<V*>(out + i) = outv;
  }
}

template <typename scalar_t, typename index_t, int VEC>
void launch_bias_act(const BiasActArgs<scalar_t>& p, bt_stream_t stream) {
  const int threads = 256;
  const int blocks = (int)std::min<int64_t>((p.n / VEC + threads - 1) / threads, (int64_t)BT_MAX_GRID_BLOCKS);
  const auto kernel = bias_act_kernel<scalar_t, index_t, VEC>;
  BT_LAUNCH(kernel, blocks, threads, stream)(p.x, p.b, p.s, p.a, p.dy, p.ddx, p.out, (index_t)p.n,
                                             (index_t)p.b_stride, (index_t)p.b_size, (index_t)p.hw,
                                             (index_t)p.a_nstride, (index_t)p.b_nstride, p.act, p.mode, p.alpha,
                                             p.gain, p.clamp);
}

// Picks the vector width and the index type (above) for these pointers and sizes; b, s, a, dy and
// ddx may be null where the call does not use them (b: no bias).
template <typename scalar_t>
void bias_act_launch(const BiasActArgs<scalar_t>& p, bt_stream_t stream) {
  auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % (4 * sizeof(scalar_t)) == 0; };
  const bool indexed = p.b || p.s || p.a;  // something looked up per channel or pixel
  const bool vec4 = p.n % 4 == 0 && (!indexed || p.b_stride % 4 == 0 || p.b_stride == 1) && aligned(p.x) &&
                    aligned(p.out) && (!p.dy || aligned(p.dy)) && (!p.ddx || aligned(p.ddx));
  // int indices while i + one grid's step stays below 2^31.
  const bool small = p.n <= (int64_t(1) << 30);
  if (vec4 && small)
    launch_bias_act<scalar_t, int, 4>(p, stream);
  else if (vec4)
    launch_bias_act<scalar_t, int64_t, 4>(p, stream);
  else if (small)
    launch_bias_act<scalar_t, int, 1>(p, stream);
  else
    launch_bias_act<scalar_t, int64_t, 1>(p, stream);
}

#define BT_INSTANTIATE(T) template void bias_act_launch<T>(const BiasActArgs<T>&, bt_stream_t);
BT_FOR_EACH_DTYPE(BT_INSTANTIATE)
#undef BT_INSTANTIATE
