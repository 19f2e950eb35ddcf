// Host part of the hash encoding: boundary checks, allocation, CPU/CUDA dispatch.
#include "hash_encode.h"

#include "checks.h"
#include "ops.h"

#ifdef SWITCHNERF_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace switchnerf {
namespace {

struct Checked {
  HashEncodeArgs args;
  at::Device device = at::kCPU;
};

Checked check_inputs(const char* op, const at::Tensor& x,
                     const c10::optional<at::Tensor>& expert_id, const at::Tensor& scale,
                     const at::Tensor& resolution, const at::Tensor& size,
                     const at::Tensor& offset, int64_t n_rows, int64_t n_features) {
  const at::Device dev = x.device();
  check_tensor(x, op, "x", at::kFloat, 2, dev);
  check_size(x, op, "x", 1, 3, "3D positions");
  const int64_t N = x.size(0);
  check_tensor(scale, op, "levels.scale", at::kFloat, 2, dev);
  const int64_t E = scale.size(0), L = scale.size(1);
  TORCH_CHECK(E >= 1, op, ": levels describe no grid (levels.scale has shape ",
              shape_str(scale), ")");
  check_tensor(resolution, op, "levels.resolution", at::kInt, 2, dev);
  check_tensor(size, op, "levels.size", at::kInt, 2, dev);
  check_tensor(offset, op, "levels.offset", at::kLong, 2, dev);
  for (const auto* t : {&resolution, &size, &offset}) {
    TORCH_CHECK(t->sizes() == scale.sizes(), op, ": level tensors disagree in shape: scale ",
                shape_str(scale), ", resolution ", shape_str(resolution), ", size ",
                shape_str(size), ", offset ", shape_str(offset));
  }
  TORCH_CHECK(n_features == 1 || n_features == 2 || n_features == 4 || n_features == 8, op,
              ": features per level is ", n_features, "; the native op supports 1, 2, 4 or 8");
  TORCH_CHECK(n_rows >= 0, op, ": table has a negative number of rows");

  Checked c;
  c.device = dev;
  HashEncodeArgs& a = c.args;
  a.n_points = N;
  a.n_grids = E;
  a.n_levels = L;
  a.n_features = n_features;
  a.n_rows = n_rows;
  if (expert_id.has_value() && expert_id->defined()) {
    const at::Tensor& id = *expert_id;
    check_tensor(id, op, "expert_id", at::kLong, 1, dev);
    check_size(id, op, "expert_id", 0, N, "one grid index per point of x");
    // Value checks read the data on the host: on CPU only. A CUDA call never synchronises
    // with the host here; its kernels give an out-of-range expert id zero features and no
    // gradient instead.
    if (N > 0 && dev.is_cpu()) {
      const auto [lo, hi] = at::aminmax(id);
      const int64_t lo_v = lo.item<int64_t>(), hi_v = hi.item<int64_t>();
      TORCH_CHECK(lo_v >= 0 && hi_v < E, op, ": expert_id holds values in [", lo_v, ", ", hi_v,
                  "], expected values in [0, ", E - 1, "] (the levels describe ", E, " grids)");
    }
    a.expert_id = id.data_ptr<int64_t>();
  }
  if (E * L > 0 && dev.is_cpu()) {
    // Level metadata is tiny; check it where it lives. On CUDA it is not copied back (that
    // would synchronise every call): its invariants hold by construction of the LevelTable.
    const at::Tensor& res_c = resolution;
    const at::Tensor& size_c = size;
    const at::Tensor& off_c = offset;
    const int32_t* r = res_c.data_ptr<int32_t>();
    const int32_t* s = size_c.data_ptr<int32_t>();
    const int64_t* o = off_c.data_ptr<int64_t>();
    for (int64_t k = 0; k < E * L; ++k) {
      TORCH_CHECK(r[k] >= 1 && s[k] >= 1 && o[k] >= 0 && o[k] + s[k] <= n_rows, op,
                  ": level ", k % L, " of grid ", k / L, " (resolution ", r[k], ", size ", s[k],
                  ", offset ", o[k], ") does not fit the table of ", n_rows, " rows");
    }
  }
  a.x = x.data_ptr<float>();
  a.scale = scale.data_ptr<float>();
  a.resolution = resolution.data_ptr<int32_t>();
  a.size = size.data_ptr<int32_t>();
  a.offset = offset.data_ptr<int64_t>();
  return c;
}

}  // namespace

at::Tensor hash_encode_forward(const at::Tensor& x, const at::Tensor& table,
                               const c10::optional<at::Tensor>& expert_id,
                               const at::Tensor& scale, const at::Tensor& resolution,
                               const at::Tensor& size, const at::Tensor& offset) {
  const char* op = "hash_encode_forward";
  check_tensor(table, op, "table", at::kFloat, 2, x.device());
  Checked c = check_inputs(op, x, expert_id, scale, resolution, size, offset, table.size(0),
                           table.size(1));
  c.args.table = table.data_ptr<float>();
  at::Tensor out = at::empty({c.args.n_points, c.args.n_levels * c.args.n_features},
                             x.options());  // [N, L * F]
  if (c.args.n_points == 0 || c.args.n_levels == 0) return out;
  if (c.device.is_cpu()) {
    hash_encode_forward_cpu(c.args, out.data_ptr<float>());
  } else {
#ifdef SWITCHNERF_WITH_CUDA
    TORCH_CHECK(c.device.is_cuda(), op, ": tensors on ", c.device, " are not supported");
    const c10::cuda::CUDAGuard guard(c.device);
    hash_encode_forward_cuda(c.args, out.data_ptr<float>(),
                             c10::cuda::getCurrentCUDAStream().stream());
#else
    TORCH_CHECK(false, op, ": tensors are on ", c.device,
                " but the native ops were built without CUDA");
#endif
  }
  return out;
}

at::Tensor hash_encode_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                const c10::optional<at::Tensor>& expert_id,
                                const at::Tensor& scale, const at::Tensor& resolution,
                                const at::Tensor& size, const at::Tensor& offset,
                                int64_t n_rows, int64_t n_features,
                                const c10::optional<at::Tensor>& out) {
  const char* op = "hash_encode_backward";
  Checked c = check_inputs(op, x, expert_id, scale, resolution, size, offset, n_rows,
                           n_features);
  check_tensor(grad_out, op, "grad_out", at::kFloat, 2, x.device());
  check_size(grad_out, op, "grad_out", 0, c.args.n_points, "one row per point of x");
  check_size(grad_out, op, "grad_out", 1, c.args.n_levels * n_features, "levels * features");
  at::Tensor grad_table;  // [R, F]
  if (out.has_value()) {
    grad_table = *out;
    check_tensor(grad_table, op, "out", at::kFloat, 2, x.device());
    check_size(grad_table, op, "out", 0, n_rows, "table rows");
    check_size(grad_table, op, "out", 1, n_features, "features per level");
  } else {
    grad_table = at::zeros({n_rows, n_features}, x.options());
  }
  if (c.args.n_points == 0 || c.args.n_levels == 0) return grad_table;
  if (c.device.is_cpu()) {
    hash_encode_backward_cpu(c.args, grad_out.data_ptr<float>(), grad_table.data_ptr<float>());
  } else {
#ifdef SWITCHNERF_WITH_CUDA
    TORCH_CHECK(c.device.is_cuda(), op, ": tensors on ", c.device, " are not supported");
    const c10::cuda::CUDAGuard guard(c.device);
    hash_encode_backward_cuda(c.args, grad_out.data_ptr<float>(), grad_table.data_ptr<float>(),
                              c10::cuda::getCurrentCUDAStream().stream());
#else
    TORCH_CHECK(false, op, ": tensors are on ", c.device,
                " but the native ops were built without CUDA");
#endif
  }
  return grad_table;
}

}  // namespace switchnerf
