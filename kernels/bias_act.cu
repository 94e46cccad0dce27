// bias_act: y = clamp(act(x + b) * gain, -clamp, clamp), elementwise, with the first and second
// derivatives as further modes so that autograd can differentiate twice (R1 and path-length
// regularization need second-order gradients):
//   mode 0: y                              (forward)
//   mode 1: dy * d y/d x                   (backward; also the gradient of mode 1 w.r.t. dy)
//   mode 2: ddx * dy * d2 y/d x2           (gradient of mode 1 w.r.t. x)
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

template <typename scalar_t>
__global__ void bias_act_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                                const scalar_t* __restrict__ dy, const scalar_t* __restrict__ ddx,
                                scalar_t* __restrict__ out, int64_t n, int64_t b_stride, int64_t b_size, int act,
                                int mode, float alpha, float gain, float clamp) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
    float u = static_cast<float>(x[i]);
    if (b != nullptr) u += static_cast<float>(b[(i / b_stride) % b_size]);
    const ActDerivs a = activate(act, u, alpha);
    const float z = a.f * gain;
    // clamp passes the gradient where -clamp <= z <= clamp, as torch.clamp does.
    const bool inside = clamp < 0.f || (z >= -clamp && z <= clamp);
    float r;
    // Written with comparisons, not fminf/fmaxf, so that NaN passes through as torch.clamp does.
    if (mode == 0) r = clamp < 0.f ? z : (z < -clamp ? -clamp : (z > clamp ? clamp : z));
    else if (mode == 1) r = inside ? static_cast<float>(dy[i]) * a.d1 * gain : 0.f;
    else r = inside ? static_cast<float>(ddx[i]) * static_cast<float>(dy[i]) * a.d2 * gain : 0.f;
    out[i] = static_cast<scalar_t>(r);
  }
}

// x: input; b: bias (undefined or 1-D over dimension `dim`); dy, ddx: as the mode needs (else undefined).
at::Tensor bias_act(at::Tensor x, c10::optional<at::Tensor> b, c10::optional<at::Tensor> dy,
                    c10::optional<at::Tensor> ddx, int64_t dim, int64_t act, int64_t mode, double alpha,
                    double gain, double clamp) {
  TORCH_CHECK(BT_ON_DEVICE(x), "bias_act: x must be a CUDA tensor");
  TORCH_CHECK(mode >= 0 && mode <= 2, "bias_act: mode must be 0, 1 or 2");
  BT_DEVICE_GUARD(x);
  x = x.contiguous();
  at::Tensor bt, dyt, ddxt;
  int64_t b_stride = 1, b_size = 1;
  if (b.has_value() && b->defined()) {
    bt = b->to(x.scalar_type()).contiguous();
    TORCH_CHECK(bt.dim() == 1 && bt.size(0) == x.size(dim), "bias_act: b must be 1-D with x.shape[dim] entries");
    b_size = bt.size(0);
    for (int64_t d = dim + 1; d < x.dim(); ++d) b_stride *= x.size(d);
  }
  if (mode >= 1) {
    TORCH_CHECK(dy.has_value() && dy->sizes() == x.sizes(), "bias_act: mode >= 1 needs dy shaped like x");
    dyt = dy->to(x.scalar_type()).contiguous();
  }
  if (mode == 2) {
    TORCH_CHECK(ddx.has_value() && ddx->sizes() == x.sizes(), "bias_act: mode 2 needs ddx shaped like x");
    ddxt = ddx->to(x.scalar_type()).contiguous();
  }
  auto out = at::empty_like(x);
  const int64_t n = x.numel();
  if (n == 0) return out;
  const int threads = 256;
  const int blocks = (int)std::min<int64_t>((n + threads - 1) / threads, (int64_t)BT_MAX_GRID_BLOCKS);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "bias_act", [&] {
    BT_LAUNCH(bias_act_kernel<scalar_t>, blocks, threads)(
        x.data_ptr<scalar_t>(), bt.defined() ? bt.data_ptr<scalar_t>() : nullptr,
        dyt.defined() ? dyt.data_ptr<scalar_t>() : nullptr, ddxt.defined() ? ddxt.data_ptr<scalar_t>() : nullptr,
        out.data_ptr<scalar_t>(), n, b_stride, b_size, (int)act, (int)mode, (float)alpha, (float)gain, (float)clamp);
  });
  BT_LAUNCH_CHECK();
  return out;
}
