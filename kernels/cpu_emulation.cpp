// The three kernels' own source, device and host sides with their bindings, built with the C++ compiler
// for the CPU emulation (cpu_emulation.h) as one module with a submodule per kernel. Built by
// bigtrain.ops._build.build_emulation(); used by `bigtrain kernels --check --emulate` and the tests.
#define BIGTRAIN_CPU_EMULATION
// The host side's headers first, so that none of them is read after cpu_emulation.h has defined
// __shared__, __device__ and the rest as macros.
#include "host.h"

#include "upfirdn2d.cu"
#include "bias_act.cu"
#include "modconv.cu"
#include "upfirdn2d_host.cpp"
#include "bias_act_host.cpp"
#include "modconv_host.cpp"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  auto upfirdn2d_module = m.def_submodule("upfirdn2d");
  bt_register_upfirdn2d(upfirdn2d_module);
  auto bias_act_module = m.def_submodule("bias_act");
  bt_register_bias_act(bias_act_module);
  auto modconv_module = m.def_submodule("modconv");
  bt_register_modconv(modconv_module);
}
