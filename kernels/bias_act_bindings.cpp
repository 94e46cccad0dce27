// Python bindings of bias_act.cu's host function (compiled by the C++ compiler, not nvcc).
#include "bindings.h"

at::Tensor bias_act(at::Tensor x, c10::optional<at::Tensor> b, c10::optional<at::Tensor> dy,
                    c10::optional<at::Tensor> ddx, int64_t dim, int64_t act, int64_t mode, double alpha,
                    double gain, double clamp);

BT_MODULE(bias_act, m) {
  m.def("bias_act", &bias_act, "bias + activation + gain + clamp and its derivatives (CUDA)");
}
