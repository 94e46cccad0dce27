// bias_act: y = clamp(act(x + b) * gain, -clamp, clamp), elementwise, with the first and second
// derivatives as further modes so that autograd can differentiate twice (R1 and path-length
// regularization need second-order gradients):
//   mode 0: y                              (forward)
//   mode 1: dy * d y/d x                   (backward; also the gradient of mode 1 w.r.t. dy)
//   mode 2: ddx * dy * d2 y/d x2           (gradient of mode 1 w.r.t. x)
// Activation ids follow bigtrain/ops/bias_act.py's CUDA_ACT_IDS. Math in float32.
#include "common.cuh"

#include <type_traits>

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

template <typename scalar_t, typename index_t, int VEC>
__global__ void bias_act_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                                const scalar_t* __restrict__ dy, const scalar_t* __restrict__ ddx,
                                scalar_t* __restrict__ out, index_t n, index_t b_stride, index_t b_size, int act,
                                int mode, float alpha, float gain, float clamp) {
  using V = Vec<scalar_t, VEC>;
  const index_t step = (index_t)blockDim.x * gridDim.x * VEC;
  for (index_t i = ((index_t)blockIdx.x * blockDim.x + threadIdx.x) * VEC; i < n; i += step) {
    float bias[VEC];
    if (b == nullptr) {
#pragma unroll
      for (int k = 0; k < VEC; ++k) bias[k] = 0.f;
    } else if (VEC > 1 && b_stride == 1) {
      const index_t c0 = i % b_size;
#pragma unroll
      for (int k = 0; k < VEC; ++k) bias[k] = static_cast<float>(b[(c0 + k) % b_size]);
    } else {
      const float bk = static_cast<float>(b[(i / b_stride) % b_size]);
#pragma unroll
      for (int k = 0; k < VEC; ++k) bias[k] = bk;
    }
    const V xv = *reinterpret_cast<const V*>(x + i);
    V dyv, ddxv, outv;
    if (mode >= 1) dyv = *reinterpret_cast<const V*>(dy + i);
    if (mode == 2) ddxv = *reinterpret_cast<const V*>(ddx + i);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const ActDerivs a = activate(act, static_cast<float>(xv.v[k]) + bias[k], alpha);
      const float z = a.f * gain;
      // clamp passes the gradient where -clamp <= z <= clamp, as torch.clamp does.
      const bool inside = clamp < 0.f || (z >= -clamp && z <= clamp);
      float r;
      // Written with comparisons, not fminf/fmaxf, so that NaN passes through as torch.clamp does.
      if (mode == 0) r = clamp < 0.f ? z : (z < -clamp ? -clamp : (z > clamp ? clamp : z));
      else if (mode == 1) r = inside ? static_cast<float>(dyv.v[k]) * a.d1 * gain : 0.f;
      else r = inside ? static_cast<float>(ddxv.v[k]) * static_cast<float>(dyv.v[k]) * a.d2 * gain : 0.f;
      outv.v[k] = static_cast<scalar_t>(r);
    }
    *reinterpret_cast<V*>(out + i) = outv;
  }
}

template <typename scalar_t, typename index_t, int VEC>
void launch_bias_act(const scalar_t* x, const scalar_t* b, const scalar_t* dy, const scalar_t* ddx, scalar_t* out,
                     int64_t n, int64_t b_stride, int64_t b_size, int act, int mode, float alpha, float gain,
                     float clamp) {
  const int threads = 256;
  const int blocks = (int)std::min<int64_t>((n / VEC + threads - 1) / threads, (int64_t)BT_MAX_GRID_BLOCKS);
  const auto kernel = bias_act_kernel<scalar_t, index_t, VEC>;
  BT_LAUNCH(kernel, blocks, threads)(x, b, dy, ddx, out, (index_t)n, (index_t)b_stride, (index_t)b_size, act, mode, alpha, gain, clamp);
}

// x: input; b: bias (undefined or 1-D over dimension `dim`); dy, ddx: as the mode needs (else undefined).
// A 4-D x in channels_last layout with the bias over dimension 1 (channels) is processed in that
// layout, and the output keeps it: the channels are then the innermost dimension in memory.
at::Tensor bias_act(at::Tensor x, c10::optional<at::Tensor> b, c10::optional<at::Tensor> dy,
                    c10::optional<at::Tensor> ddx, int64_t dim, int64_t act, int64_t mode, double alpha,
                    double gain, double clamp) {
  TORCH_CHECK(BT_ON_DEVICE(x), "bias_act: x must be a CUDA tensor");
  TORCH_CHECK(mode >= 0 && mode <= 2, "bias_act: mode must be 0, 1 or 2");
  BT_DEVICE_GUARD(x);
  const bool nhwc = x.dim() == 4 && dim == 1 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  const auto layout = nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  x = x.contiguous(layout);
  at::Tensor bt, dyt, ddxt;
  int64_t b_stride = 1, b_size = 1;
  if (b.has_value() && b->defined()) {
    bt = b->to(x.scalar_type()).contiguous();
    TORCH_CHECK(bt.dim() == 1 && bt.size(0) == x.size(dim), "bias_act: b must be 1-D with x.shape[dim] entries");
    b_size = bt.size(0);
    if (!nhwc)  // channels_last: the channels are innermost, b_stride 1
      for (int64_t d = dim + 1; d < x.dim(); ++d) b_stride *= x.size(d);
  }
  if (mode >= 1) {
    TORCH_CHECK(dy.has_value() && dy->sizes() == x.sizes(), "bias_act: mode >= 1 needs dy shaped like x");
    dyt = dy->to(x.scalar_type()).contiguous(layout);
  }
  if (mode == 2) {
    TORCH_CHECK(ddx.has_value() && ddx->sizes() == x.sizes(), "bias_act: mode 2 needs ddx shaped like x");
    ddxt = ddx->to(x.scalar_type()).contiguous(layout);
  }
  auto out = at::empty_like(x, at::TensorOptions(), layout);
  const int64_t n = x.numel();
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "bias_act", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* bp = bt.defined() ? bt.data_ptr<scalar_t>() : nullptr;
    const scalar_t* dyp = dyt.defined() ? dyt.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ddxp = ddxt.defined() ? ddxt.data_ptr<scalar_t>() : nullptr;
    scalar_t* outp = out.data_ptr<scalar_t>();
    auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % (4 * sizeof(scalar_t)) == 0; };
    const bool vec4 = n % 4 == 0 && (!bp || b_stride % 4 == 0 || b_stride == 1) && aligned(xp) && aligned(outp) && (!dyp || aligned(dyp)) &&
                      (!ddxp || aligned(ddxp));
    // int indices while i + one grid's step stays below 2^31.
    const bool small = n <= (int64_t(1) << 30);
    auto run = [&](auto index_zero, auto vec) {
      launch_bias_act<scalar_t, decltype(index_zero), decltype(vec)::value>(
          xp, bp, dyp, ddxp, outp, n, b_stride, b_size, (int)act, (int)mode, (float)alpha, (float)gain, (float)clamp);
    };
    using One = std::integral_constant<int, 1>;
    using Four = std::integral_constant<int, 4>;
    if (vec4 && small) run(0, Four());
    else if (vec4) run(int64_t(0), Four());
    else if (small) run(0, One());
    else run(int64_t(0), One());
  });
  BT_LAUNCH_CHECK();
  return out;
}
