// modconv's host side (compiled by the C++ compiler, not nvcc): checks, allocation, dtype dispatch
// to modconv.cu's launcher, and the Python binding.
#include "host.h"

// Returns (w [N,O,I,kh,kw] in weight's dtype, d [N,O] float32).
std::vector<at::Tensor> modulate_weight(at::Tensor weight, at::Tensor styles, bool demodulate, double eps) {
  TORCH_CHECK(BT_ON_DEVICE(weight) && weight.dim() == 4, "modulate_weight: weight must be [O, I, kh, kw] on CUDA");
  TORCH_CHECK(BT_ON_DEVICE(styles) && styles.dim() == 2 && styles.size(1) == weight.size(1),
              "modulate_weight: styles must be [N, I] on CUDA");
  TORCH_CHECK(styles.device() == weight.device(), "modulate_weight: styles must be on weight's device (",
              weight.device(), "), not ", styles.device());
  BT_DEVICE_GUARD(weight);
  weight = weight.contiguous();
  styles = styles.to(weight.scalar_type()).contiguous();
  const int64_t N = styles.size(0), O = weight.size(0), I = weight.size(1), K = weight.size(2) * weight.size(3);
  auto out = at::empty({N, O, I, weight.size(2), weight.size(3)}, weight.options());
  auto dcoefs = at::empty({N, O}, weight.options().dtype(at::kFloat));
  if (N == 0 || O == 0) return {out, dcoefs};
  TORCH_CHECK(N <= MODCONV_MAX_SAMPLES, "modulate_weight: at most ", MODCONV_MAX_SAMPLES, " samples per call");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, weight.scalar_type(),
                                  "modulate_weight", [&] {
    modulate_weight_launch<scalar_t>(weight.data_ptr<scalar_t>(), styles.data_ptr<scalar_t>(),
                                     out.data_ptr<scalar_t>(), dcoefs.data_ptr<float>(), N, O, I, K, demodulate,
                                     (float)eps, BT_STREAM());
  });
  BT_LAUNCH_CHECK();
  return {out, dcoefs};
}

BT_MODULE(modconv, m) {
  m.def("modulate_weight", &modulate_weight, "fused style modulation + demodulation of conv weights (CUDA)");
}
