// Host part of the packed volume-rendering weights: boundary checks, allocation, and the
// CPU kernels of render_weights_cpu.cpp (semantics in render_weights.h).
#include <vector>

#include "checks.h"
#include "ops.h"
#include "render_weights.h"

namespace switchnerf {
namespace {

PackedArgs check_packed(const char* op, const at::Tensor& t_starts, const at::Tensor& t_ends,
                        const at::Tensor& sigmas, const at::Tensor& ray_indices,
                        int64_t n_rays) {
  const at::Device cpu(at::kCPU);
  check_tensor(t_starts, op, "t_starts", at::kFloat, 1, cpu);
  const int64_t S = t_starts.size(0);
  check_tensor(t_ends, op, "t_ends", at::kFloat, 1, cpu);
  check_size(t_ends, op, "t_ends", 0, S, "one value per sample");
  check_tensor(sigmas, op, "sigmas", at::kFloat, 1, cpu);
  check_size(sigmas, op, "sigmas", 0, S, "one value per sample");
  check_tensor(ray_indices, op, "ray_indices", at::kLong, 1, cpu);
  check_size(ray_indices, op, "ray_indices", 0, S, "one value per sample");
  TORCH_CHECK(n_rays >= 0, op, ": n_rays is ", n_rays, ", expected >= 0");
  PackedArgs a;
  a.t_starts = t_starts.data_ptr<float>();
  a.t_ends = t_ends.data_ptr<float>();
  a.sigmas = sigmas.data_ptr<float>();
  a.ray = ray_indices.data_ptr<int64_t>();
  a.n_samples = S;
  a.n_rays = n_rays;
  return a;
}

// Chunk bounds of valid packed samples; a clear error naming the first bad index otherwise.
std::vector<int64_t> checked_bounds(const char* op, const PackedArgs& a) {
  const int64_t bad = first_bad_ray_index(a);
  if (bad >= 0) {
    const int64_t r = a.ray[bad];
    TORCH_CHECK(r >= 0 && r < a.n_rays, op, ": ray_indices[", bad, "] = ", r,
                " is outside [0, n_rays = ", a.n_rays, ")");
    TORCH_CHECK(false, op, ": ray_indices must be sorted (samples of a ray contiguous); ",
                "ray_indices[", bad - 1, "] = ", a.ray[bad - 1], " > ray_indices[", bad,
                "] = ", r);
  }
  return chunk_bounds(a);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> render_weights_forward(
    const at::Tensor& t_starts, const at::Tensor& t_ends, const at::Tensor& sigmas,
    const at::Tensor& ray_indices, int64_t n_rays) {
  const char* op = "render_weights_forward";
  const PackedArgs a = check_packed(op, t_starts, t_ends, sigmas, ray_indices, n_rays);
  at::Tensor weights = at::empty({a.n_samples}, sigmas.options());        // [S]
  at::Tensor transmittance = at::empty({a.n_samples}, sigmas.options());  // [S]
  at::Tensor alphas = at::empty({a.n_samples}, sigmas.options());         // [S]
  if (a.n_samples == 0) return {weights, transmittance, alphas};
  render_weights_forward_cpu(a, checked_bounds(op, a), weights.data_ptr<float>(),
                             transmittance.data_ptr<float>(), alphas.data_ptr<float>());
  return {weights, transmittance, alphas};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
composite_rays_forward(
    const at::Tensor& t_starts, const at::Tensor& t_ends, const at::Tensor& sigmas,
    const at::Tensor& ray_indices, int64_t n_rays, const at::Tensor& values) {
  const char* op = "composite_rays_forward";
  const PackedArgs a = check_packed(op, t_starts, t_ends, sigmas, ray_indices, n_rays);
  check_tensor(values, op, "values", at::kFloat, 2, at::Device(at::kCPU));
  check_size(values, op, "values", 0, a.n_samples, "one row per sample");
  const int64_t C = values.size(1);
  at::Tensor weights = at::empty({a.n_samples}, sigmas.options());  // [S]
  at::Tensor sums = at::zeros({n_rays, C}, sigmas.options());        // [N, C]
  at::Tensor opacity = at::zeros({n_rays}, sigmas.options());        // [N]
  at::Tensor depth = at::zeros({n_rays}, sigmas.options());          // [N]
  at::Tensor best = at::full({n_rays}, -1, ray_indices.options());   // [N]
  at::Tensor count = at::zeros({n_rays}, ray_indices.options());     // [N]
  if (a.n_samples == 0) return {weights, sums, opacity, depth, best, count};
  composite_rays_cpu(a, checked_bounds(op, a), values.data_ptr<float>(), C,
                     weights.data_ptr<float>(), sums.data_ptr<float>(),
                     opacity.data_ptr<float>(), depth.data_ptr<float>(),
                     best.data_ptr<int64_t>(), count.data_ptr<int64_t>());
  return {weights, sums, opacity, depth, best, count};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> render_weights_backward(
    const at::Tensor& grad_weights, const at::Tensor& grad_transmittance,
    const at::Tensor& grad_alphas, const at::Tensor& t_starts, const at::Tensor& t_ends,
    const at::Tensor& sigmas, const at::Tensor& ray_indices, const at::Tensor& transmittance,
    int64_t n_rays) {
  const char* op = "render_weights_backward";
  const PackedArgs a = check_packed(op, t_starts, t_ends, sigmas, ray_indices, n_rays);
  const int64_t S = a.n_samples;
  const at::Device cpu(at::kCPU);
  check_tensor(grad_weights, op, "grad_weights", at::kFloat, 1, cpu);
  check_size(grad_weights, op, "grad_weights", 0, S, "one value per sample");
  check_tensor(grad_transmittance, op, "grad_transmittance", at::kFloat, 1, cpu);
  check_size(grad_transmittance, op, "grad_transmittance", 0, S, "one value per sample");
  check_tensor(grad_alphas, op, "grad_alphas", at::kFloat, 1, cpu);
  check_size(grad_alphas, op, "grad_alphas", 0, S, "one value per sample");
  check_tensor(transmittance, op, "transmittance", at::kFloat, 1, cpu);
  check_size(transmittance, op, "transmittance", 0, S, "one value per sample");
  at::Tensor grad_sigmas = at::empty({S}, sigmas.options());    // [S]
  at::Tensor grad_t_starts = at::empty({S}, sigmas.options());  // [S]
  at::Tensor grad_t_ends = at::empty({S}, sigmas.options());    // [S]
  if (S == 0) return {grad_sigmas, grad_t_starts, grad_t_ends};
  render_weights_backward_cpu(a, checked_bounds(op, a), grad_weights.data_ptr<float>(),
                              grad_transmittance.data_ptr<float>(),
                              grad_alphas.data_ptr<float>(), transmittance.data_ptr<float>(),
                              grad_sigmas.data_ptr<float>(), grad_t_starts.data_ptr<float>(),
                              grad_t_ends.data_ptr<float>());
  return {grad_sigmas, grad_t_starts, grad_t_ends};
}

}  // namespace switchnerf
