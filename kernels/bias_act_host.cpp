// bias_act's host side (compiled by the C++ compiler, not nvcc): checks, layout, allocation, dtype
// dispatch to bias_act.cu's launcher, and the Python binding.
#include "host.h"

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
    TORCH_CHECK(b->device() == x.device(), "bias_act: b must be on x's device (", x.device(), "), not ",
                b->device());
    bt = b->to(x.scalar_type()).contiguous();
    TORCH_CHECK(bt.dim() == 1 && bt.size(0) == x.size(dim), "bias_act: b must be 1-D with x.shape[dim] entries");
    b_size = bt.size(0);
    if (!nhwc)  // channels_last: the channels are innermost, b_stride 1
      for (int64_t d = dim + 1; d < x.dim(); ++d) b_stride *= x.size(d);
  }
  if (mode >= 1) {
    TORCH_CHECK(dy.has_value() && dy->sizes() == x.sizes(), "bias_act: mode >= 1 needs dy shaped like x");
    TORCH_CHECK(dy->device() == x.device(), "bias_act: dy must be on x's device (", x.device(), "), not ",
                dy->device());
    dyt = dy->to(x.scalar_type()).contiguous(layout);
  }
  if (mode == 2) {
    TORCH_CHECK(ddx.has_value() && ddx->sizes() == x.sizes(), "bias_act: mode 2 needs ddx shaped like x");
    TORCH_CHECK(ddx->device() == x.device(), "bias_act: ddx must be on x's device (", x.device(), "), not ",
                ddx->device());
    ddxt = ddx->to(x.scalar_type()).contiguous(layout);
  }
  auto out = at::empty_like(x, at::TensorOptions(), layout);
  const int64_t n = x.numel();
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "bias_act", [&] {
    bias_act_launch<scalar_t>(x.data_ptr<scalar_t>(), bt.defined() ? bt.data_ptr<scalar_t>() : nullptr,
                              dyt.defined() ? dyt.data_ptr<scalar_t>() : nullptr,
                              ddxt.defined() ? ddxt.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), n,
                              b_stride, b_size, (int)act, (int)mode, (float)alpha, (float)gain, (float)clamp,
                              BT_STREAM());
  });
  BT_LAUNCH_CHECK();
  return out;
}

BT_MODULE(bias_act, m) {
  m.def("bias_act", &bias_act, "bias + activation + gain + clamp and its derivatives (CUDA)");
}
