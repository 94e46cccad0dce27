// upfirdn2d: upsample by zero insertion, pad (or crop), FIR-filter, downsample, in one pass.
// One thread per output element; the filter is float32, accumulation is float32 whatever the
// input dtype (float32, float16, bfloat16). Semantics: bigtrain/ops/upfirdn2d.py (module docstring).
#include "common.cuh"

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

at::Tensor upfirdn2d(at::Tensor x, at::Tensor f, int64_t upx, int64_t upy, int64_t downx, int64_t downy,
                     int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip_filter, double gain) {
  TORCH_CHECK(BT_ON_DEVICE(x) && x.dim() == 4, "upfirdn2d: x must be a 4-D CUDA tensor");
  TORCH_CHECK(BT_ON_DEVICE(f) && f.dim() == 2 && f.scalar_type() == at::kFloat,
              "upfirdn2d: f must be a 2-D float32 CUDA tensor");
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: up and down must be >= 1");
  BT_DEVICE_GUARD(x);
  x = x.contiguous();
  f = f.contiguous();
  const int64_t in_h = x.size(2), in_w = x.size(3), fh = f.size(0), fw = f.size(1);
  const int64_t out_h = (in_h * upy + pady0 + pady1 - fh) / downy + 1;
  const int64_t out_w = (in_w * upx + padx0 + padx1 - fw) / downx + 1;
  TORCH_CHECK(out_h >= 1 && out_w >= 1, "upfirdn2d: empty output");
  auto y = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options());
  const int64_t total = y.numel();
  if (total == 0) return y;
  const int threads = 256;
  const int blocks = (int)std::min<int64_t>((total + threads - 1) / threads, (int64_t)BT_MAX_GRID_BLOCKS);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "upfirdn2d", [&] {
    BT_LAUNCH(upfirdn2d_kernel<scalar_t>, blocks, threads)(
        x.data_ptr<scalar_t>(), f.data_ptr<float>(), y.data_ptr<scalar_t>(), x.size(0) * x.size(1), (int)in_h,
        (int)in_w, (int)out_h, (int)out_w, (int)fh, (int)fw, (int)upx, (int)upy, (int)downx, (int)downy,
        (int)padx0, (int)pady0, (float)gain, flip_filter);
  });
  BT_LAUNCH_CHECK();
  return y;
}
