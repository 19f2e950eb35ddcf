// Boundary checks shared by the native ops: every public entry point checks
// device, dtype, layout and shape of its arguments with a message that names
// the argument, what it is and what was expected.
#pragma once

#include <torch/extension.h>

#include <sstream>
#include <string>

namespace switchnerf {

inline std::string shape_str(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

// `name` must be a float32/int32/... tensor on `device`, contiguous, with `dim` dimensions.
inline void check_tensor(const at::Tensor& t, const char* op, const char* name,
                         at::ScalarType dtype, int64_t dim, const at::Device& device) {
  TORCH_CHECK(t.defined(), op, ": argument '", name, "' is undefined");
  TORCH_CHECK(t.scalar_type() == dtype, op, ": argument '", name, "' has dtype ",
              t.scalar_type(), ", expected ", dtype);
  TORCH_CHECK(t.dim() == dim, op, ": argument '", name, "' has shape ", shape_str(t),
              ", expected ", dim, " dimensions");
  TORCH_CHECK(t.device() == device, op, ": argument '", name, "' is on ", t.device(),
              ", expected ", device, " (all arguments must be on the same device)");
  TORCH_CHECK(t.is_contiguous(), op, ": argument '", name,
              "' is not contiguous (call .contiguous() first)");
}

inline void check_size(const at::Tensor& t, const char* op, const char* name, int64_t d,
                       int64_t expected, const char* what) {
  TORCH_CHECK(t.size(d) == expected, op, ": argument '", name, "' has shape ", shape_str(t),
              ", expected size ", expected, " in dimension ", d, " (", what, ")");
}

// `name` must be a 1-d tensor as check_tensor says, of n values (`what` says what they are).
inline void check_values(const at::Tensor& t, const char* op, const char* name,
                         at::ScalarType dtype, int64_t n, const at::Device& device,
                         const char* what) {
  check_tensor(t, op, name, dtype, 1, device);
  check_size(t, op, name, 0, n, what);
}

}  // namespace switchnerf
