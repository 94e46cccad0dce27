// What every kernel's bindings file (.cpp) includes: pybind11 and torch's tensor casters, and
// BT_MODULE(name, m) { ... }, which is the extension's module on a GPU and, for the CPU emulation
// (cpu_emulation.cpp), a function that fills the emulation module's submodule `name`.
#pragma once
#include <torch/python.h>

#ifdef BIGTRAIN_CPU_EMULATION
#define BT_MODULE(name, m) void bt_register_##name(pybind11::module_& m)
#else
#define BT_MODULE(name, m) PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
#endif
