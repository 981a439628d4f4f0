// An empty Python module so that `import condnet._C` loads the shared library
// and with it the TORCH_LIBRARY registrations. The ops are reached through
// torch.ops.condnet; the CMake build does not compile this file.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
