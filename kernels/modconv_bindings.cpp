// Python bindings of modconv.cu's host function (compiled by the C++ compiler, not nvcc).
#include "bindings.h"

std::vector<at::Tensor> modulate_weight(at::Tensor weight, at::Tensor styles, bool demodulate, double eps);

BT_MODULE(modconv, m) {
  m.def("modulate_weight", &modulate_weight, "fused style modulation + demodulation of conv weights (CUDA)");
}
