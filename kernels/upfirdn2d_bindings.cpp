// Python bindings of upfirdn2d.cu's host function (compiled by the C++ compiler, not nvcc).
#include "bindings.h"

at::Tensor upfirdn2d(at::Tensor x, at::Tensor f, int64_t upx, int64_t upy, int64_t downx, int64_t downy,
                     int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip_filter, double gain);

BT_MODULE(upfirdn2d, m) {
  m.def("upfirdn2d", &upfirdn2d, "upfirdn2d (CUDA)");
}
