// upfirdn2d's host side (compiled by the C++ compiler, not nvcc): checks, output shape and layout,
// allocation, the choice of path and dtype dispatch to upfirdn2d.cu's launchers, and the Python
// binding.
#include "host.h"

at::Tensor upfirdn2d(at::Tensor x, at::Tensor f, int64_t upx, int64_t upy, int64_t downx, int64_t downy,
                     int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip_filter, double gain) {
  TORCH_CHECK(BT_ON_DEVICE(x) && x.dim() == 4, "upfirdn2d: x must be a 4-D CUDA tensor");
  TORCH_CHECK(BT_ON_DEVICE(f) && (f.dim() == 1 || f.dim() == 2) && f.scalar_type() == at::kFloat,
              "upfirdn2d: f must be a 1-D (separable) or 2-D float32 CUDA tensor");
  TORCH_CHECK(f.device() == x.device(), "upfirdn2d: f must be on x's device (", x.device(), "), not ",
              f.device());
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: up and down must be >= 1");
  BT_DEVICE_GUARD(x);
  const bool separable = f.dim() == 1;
  // channels_last in, channels_last out: the NHWC kernel for separable filters; the generic kernel
  // works on an NCHW copy and its output is laid out as the input was.
  const bool channels_last = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  x = channels_last && separable ? x : x.contiguous();
  f = f.contiguous();
  TORCH_CHECK(!separable || upfirdn2d_separable_supported(f.size(0), upx, upy, downx, downy),
              "upfirdn2d: a 1-D filter needs 1 to ", UPFIRDN_MAX_TAPS,
              " taps, equal up (1 or 2) and equal down (1 or 2) on both axes, not both 2");
  const int64_t in_h = x.size(2), in_w = x.size(3), fh = f.size(0), fw = f.size(-1);
  const int64_t out_h = (in_h * upy + pady0 + pady1 - fh) / downy + 1;
  const int64_t out_w = (in_w * upx + padx0 + padx1 - fw) / downx + 1;
  TORCH_CHECK(out_h >= 1 && out_w >= 1, "upfirdn2d: empty output");
  const auto y_layout = channels_last && separable ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  auto y = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options().memory_format(y_layout));
  if (y.numel() == 0) return y;
  UpfirdnParams p;
  p.batch = x.size(0), p.channels = x.size(1);
  p.in_h = (int)in_h, p.in_w = (int)in_w, p.out_h = (int)out_h, p.out_w = (int)out_w;
  p.upx = (int)upx, p.upy = (int)upy, p.downx = (int)downx, p.downy = (int)downy;
  p.pad_x0 = (int)padx0, p.pad_y0 = (int)pady0, p.fh = (int)fh, p.fw = (int)fw;
  p.gain = (float)gain, p.flip_filter = flip_filter;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "upfirdn2d", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    if (separable)
      upfirdn2d_separable<scalar_t>(xp, f.data_ptr<float>(), yp, p, channels_last, BT_STREAM());
    else
      upfirdn2d_generic<scalar_t>(xp, f.data_ptr<float>(), yp, p, BT_STREAM());
  });
  BT_LAUNCH_CHECK();
  return channels_last && !separable ? y.contiguous(at::MemoryFormat::ChannelsLast) : y;
}

BT_MODULE(upfirdn2d, m) {
  m.def("upfirdn2d", &upfirdn2d, "upfirdn2d (CUDA)");
}
