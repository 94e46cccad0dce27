// bias_act's host side (compiled by the C++ compiler, not nvcc): checks, layout, allocation, dtype
// dispatch to bias_act.cu's launcher, and the Python binding.
#include "host.h"

// x: input; b: bias (undefined, 1-D over dimension `dim`, or per sample [N, C] for a 4-D x with dim
// 1); s, a: the modulated convolution's epilogue (undefined, or for a 4-D x with dim 1: s [N, C], a
// [N or 1, 1, H, W]); dy, ddx: as the
// mode needs (else undefined). A 4-D x in channels_last layout with the bias over dimension 1
// (channels) is processed in that layout, and the output keeps it: the channels are then the
// innermost dimension in memory.
at::Tensor bias_act(at::Tensor x, c10::optional<at::Tensor> b, c10::optional<at::Tensor> s,
                    c10::optional<at::Tensor> a, c10::optional<at::Tensor> dy, c10::optional<at::Tensor> ddx,
                    int64_t dim, int64_t act, int64_t mode, double alpha, double gain, double clamp) {
  TORCH_CHECK(BT_ON_DEVICE(x), "bias_act: x must be a CUDA tensor");
  TORCH_CHECK(mode >= 0 && mode <= 2, "bias_act: mode must be 0, 1 or 2");
  BT_DEVICE_GUARD(x);
  const bool nhwc = x.dim() == 4 && dim == 1 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  const auto layout = nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  x = x.contiguous(layout);
  // An optional operand on x's device, in `dtype`, contiguous in `fmt`.
  auto operand = [&](const c10::optional<at::Tensor>& t, const char* name, at::ScalarType dtype,
                     at::MemoryFormat fmt) {
    if (!t.has_value() || !t->defined()) return at::Tensor();
    TORCH_CHECK(t->device() == x.device(), "bias_act: ", name, " must be on x's device (", x.device(), "), not ",
                t->device());
    return t->to(dtype).contiguous(fmt);
  };
  // The bias, scale and addend in float32 whatever x's dtype (bias_act.cu says why).
  const auto plain = at::MemoryFormat::Contiguous;
  const auto f32 = at::ScalarType::Float;
  at::Tensor bt = operand(b, "b", f32, plain), st = operand(s, "s", f32, plain), at_ = operand(a, "a", f32, plain);
  int64_t b_stride = 1, b_size = 1, hw = 1, a_nstride = 0, b_nstride = 0;
  const bool b_per_sample = bt.defined() && bt.dim() == 2;
  if (b_per_sample) {
    TORCH_CHECK(x.dim() == 4 && dim == 1 && bt.size(0) == x.size(0) && bt.size(1) == x.size(1),
                "bias_act: a 2-D b must be [N, C] for a 4-D x with dim 1");
  } else if (bt.defined()) {
    TORCH_CHECK(bt.dim() == 1 && bt.size(0) == x.size(dim), "bias_act: b must be 1-D with x.shape[dim] entries");
  }
  if (st.defined() || at_.defined() || b_per_sample) {
    TORCH_CHECK(x.dim() == 4 && dim == 1, "bias_act: s and a need a 4-D x with the bias over dimension 1");
    hw = x.size(2) * x.size(3);
    if (st.defined())
      TORCH_CHECK(st.dim() == 2 && st.size(0) == x.size(0) && st.size(1) == x.size(1), "bias_act: s must be [N, C]");
    if (at_.defined()) {
      TORCH_CHECK(at_.dim() == 4 && (at_.size(0) == 1 || at_.size(0) == x.size(0)) && at_.size(1) == 1 &&
                      at_.size(2) == x.size(2) && at_.size(3) == x.size(3),
                  "bias_act: a must be [N or 1, 1, H, W]");
      a_nstride = at_.size(0) == 1 ? 0 : hw;
    }
  }
  if (b_per_sample) b_nstride = x.size(1);
  if (bt.defined() || st.defined() || at_.defined()) {
    b_size = x.size(dim);
    if (!nhwc)  // channels_last: the channels are innermost, b_stride 1
      for (int64_t d = dim + 1; d < x.dim(); ++d) b_stride *= x.size(d);
  }
  at::Tensor dyt, ddxt;
  if (mode >= 1) {
    TORCH_CHECK(dy.has_value() && dy->sizes() == x.sizes(), "bias_act: mode >= 1 needs dy shaped like x");
    dyt = operand(dy, "dy", x.scalar_type(), layout);
  }
  if (mode == 2) {
    TORCH_CHECK(ddx.has_value() && ddx->sizes() == x.sizes(), "bias_act: mode 2 needs ddx shaped like x");
    ddxt = operand(ddx, "ddx", x.scalar_type(), layout);
  }
  auto out = at::empty_like(x, at::TensorOptions(), layout);
  const int64_t n = x.numel();
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "bias_act", [&] {
    auto ptr = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    auto fptr = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; };
    const BiasActArgs<scalar_t> p{x.data_ptr<scalar_t>(), ptr(dyt), ptr(ddxt), fptr(bt), fptr(st), fptr(at_),
                                  out.data_ptr<scalar_t>(), n, b_stride, b_size, hw, a_nstride, b_nstride, (int)act,
                                  (int)mode, (float)alpha, (float)gain, (float)clamp};
    bias_act_launch<scalar_t>(p, BT_STREAM());
  });
  BT_LAUNCH_CHECK();
  return out;
}

BT_MODULE(bias_act, m) {
  m.def("bias_act", &bias_act, "(x * s + a + bias) -> activation -> gain -> clamp, and its derivatives (CUDA)");
}
