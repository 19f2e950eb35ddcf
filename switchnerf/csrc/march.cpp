// Host part of the occupancy-grid ray marching: boundary checks, allocation, and the CPU
// kernel of march_cpu.cpp (semantics in march.h).
#include <cmath>

#include "checks.h"
#include "march.h"
#include "ops.h"

namespace switchnerf {

std::tuple<at::Tensor, at::Tensor, at::Tensor> march_rays_forward(
    const at::Tensor& origins, const at::Tensor& dirs, const at::Tensor& base,
    const at::Tensor& far, const at::Tensor& binary, double step_size, int64_t max_samples) {
  const char* op = "march_rays_forward";
  const at::Device cpu(at::kCPU);
  check_tensor(origins, op, "origins", at::kFloat, 2, cpu);
  check_size(origins, op, "origins", 1, 3, "3D ray origins");
  const int64_t N = origins.size(0);
  check_tensor(dirs, op, "dirs", at::kFloat, 2, cpu);
  check_size(dirs, op, "dirs", 0, N, "one direction per ray");
  check_size(dirs, op, "dirs", 1, 3, "3D ray directions");
  check_tensor(base, op, "near", at::kFloat, 1, cpu);
  check_size(base, op, "near", 0, N, "one value per ray");
  check_tensor(far, op, "far", at::kFloat, 1, cpu);
  check_size(far, op, "far", 0, N, "one value per ray");
  check_tensor(binary, op, "grid.binary", at::kBool, 3, cpu);
  TORCH_CHECK(binary.numel() > 0, op, ": the occupancy grid has no cells");
  TORCH_CHECK(step_size > 0.0 && std::isfinite(step_size), op, ": step_size is ", step_size,
              ", expected a finite value > 0");

  MarchArgs a;
  a.origins = origins.data_ptr<float>();
  a.dirs = dirs.data_ptr<float>();
  a.base = base.data_ptr<float>();
  a.far = far.data_ptr<float>();
  a.binary = binary.data_ptr<bool>();
  for (int d = 0; d < 3; ++d) a.resolution[d] = binary.size(d);
  a.n_rays = N;
  a.step = step_size;
  a.max_samples = max_samples;
  const std::vector<MarchBlock> blocks = march_rays_cpu(a);
  const int64_t M = march_blocks_size(blocks);
  at::Tensor ray_indices = at::empty({M}, origins.options().dtype(at::kLong));  // [M]
  at::Tensor t_starts = at::empty({M}, origins.options());                      // [M]
  at::Tensor t_ends = at::empty({M}, origins.options());                        // [M]
  gather_march_blocks_cpu(blocks, ray_indices.data_ptr<int64_t>(), t_starts.data_ptr<float>(),
                          t_ends.data_ptr<float>());
  return {ray_indices, t_starts, t_ends};
}

}  // namespace switchnerf
