// Packed compositing on the CPU: volume-rendering weights from densities and their
// gradient, with nerfacc 0.5's semantics (render_weight_from_density).
//
// Per ray, over its contiguous samples i with tau_i = sigma_i * (t_end_i - t_start_i):
//   alpha_i = 1 - exp(-tau_i),  T_i = exp(-sum_{j<i} tau_j),  w_i = T_i * alpha_i.
// T is accumulated in float64 per ray (as a running product of exp(-tau_j), which
// equals exp of the float64 exclusive sum to float64 rounding).
//
// Backward, with gT'_i = gT_i + gW_i * alpha_i and gA'_i = gA_i + gW_i * T_i:
//   dL/dtau_k = gA'_k * exp(-tau_k) - sum_{i>k in the ray} gT'_i * T_i
// (a suffix sum per ray), then dL/dsigma = dL/dtau * dt and dL/dt_end = -dL/dt_start =
// dL/dtau * sigma.
#include <algorithm>
#include <cmath>
#include <vector>

#include "checks.h"
#include "ops.h"

namespace switchnerf {
namespace {

// Start of each ray's chunk in sorted ray_indices [S]: begin[r] .. begin[r + 1].
std::vector<int64_t> chunk_bounds(const int64_t* ray, int64_t n_samples, int64_t n_rays,
                                  const char* op) {
  int64_t bad = -1;  // a sample out of order or out of range (any one of them)
#pragma omp parallel for if (n_samples > 65536)
  for (int64_t s = 0; s < n_samples; ++s) {
    const bool ok = ray[s] >= 0 && ray[s] < n_rays && (s == 0 || ray[s - 1] <= ray[s]);
    if (!ok) {
#pragma omp atomic write
      bad = s;
    }
  }
  if (bad >= 0) {
    const int64_t s = bad, r = ray[bad];
    TORCH_CHECK(r >= 0 && r < n_rays, op, ": ray_indices[", s, "] = ", r,
                " is outside [0, n_rays = ", n_rays, ")");
    TORCH_CHECK(false, op, ": ray_indices must be sorted (samples of a ray contiguous); ",
                "ray_indices[", s - 1, "] = ", ray[s - 1], " > ray_indices[", s, "] = ", r);
  }
  std::vector<int64_t> begin(n_rays + 1, n_samples);
#pragma omp parallel for if (n_rays > 4096)
  for (int64_t r = 0; r < n_rays; ++r)
    begin[r] = std::lower_bound(ray, ray + n_samples, r) - ray;
  return begin;
}

void check_packed(const char* op, const at::Tensor& t_starts, const at::Tensor& t_ends,
                  const at::Tensor& sigmas, const at::Tensor& ray_indices, int64_t n_rays) {
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
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> render_weights_forward(
    const at::Tensor& t_starts, const at::Tensor& t_ends, const at::Tensor& sigmas,
    const at::Tensor& ray_indices, int64_t n_rays) {
  const char* op = "render_weights_forward";
  check_packed(op, t_starts, t_ends, sigmas, ray_indices, n_rays);
  const int64_t S = t_starts.size(0);
  at::Tensor weights = at::empty({S}, sigmas.options());        // [S]
  at::Tensor transmittance = at::empty({S}, sigmas.options());  // [S]
  at::Tensor alphas = at::empty({S}, sigmas.options());         // [S]
  if (S == 0) return {weights, transmittance, alphas};
  const std::vector<int64_t> begin =
      chunk_bounds(ray_indices.data_ptr<int64_t>(), S, n_rays, op);
  const float* ts = t_starts.data_ptr<float>();
  const float* te = t_ends.data_ptr<float>();
  const float* sg = sigmas.data_ptr<float>();
  float* w = weights.data_ptr<float>();
  float* tr = transmittance.data_ptr<float>();
  float* al = alphas.data_ptr<float>();
#pragma omp parallel for schedule(dynamic, 256) if (S > 32768)
  for (int64_t r = 0; r < n_rays; ++r) {
    double trans = 1.0;  // exp(-exclusive sum), as a float64 running product
    for (int64_t s = begin[r]; s < begin[r + 1]; ++s) {
      const float tau = sg[s] * (te[s] - ts[s]);
      const double e = std::exp(-double(tau));
      const float a = 1.0f - float(e);  // the float32 exp rounded as torch's, then 1 - it
      const float T = float(trans);
      al[s] = a;
      tr[s] = T;
      w[s] = T * a;
      trans *= e;
    }
  }
  return {weights, transmittance, alphas};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> render_weights_backward(
    const at::Tensor& grad_weights, const at::Tensor& grad_transmittance,
    const at::Tensor& grad_alphas, const at::Tensor& t_starts, const at::Tensor& t_ends,
    const at::Tensor& sigmas, const at::Tensor& ray_indices, const at::Tensor& transmittance,
    int64_t n_rays) {
  const char* op = "render_weights_backward";
  check_packed(op, t_starts, t_ends, sigmas, ray_indices, n_rays);
  const int64_t S = t_starts.size(0);
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
  const std::vector<int64_t> begin =
      chunk_bounds(ray_indices.data_ptr<int64_t>(), S, n_rays, op);
  const float* ts = t_starts.data_ptr<float>();
  const float* te = t_ends.data_ptr<float>();
  const float* sg = sigmas.data_ptr<float>();
  const float* tr = transmittance.data_ptr<float>();
  const float* gw = grad_weights.data_ptr<float>();
  const float* gt = grad_transmittance.data_ptr<float>();
  const float* ga = grad_alphas.data_ptr<float>();
  float* gs = grad_sigmas.data_ptr<float>();
  float* gts = grad_t_starts.data_ptr<float>();
  float* gte = grad_t_ends.data_ptr<float>();
#pragma omp parallel for schedule(dynamic, 256) if (S > 32768)
  for (int64_t r = 0; r < n_rays; ++r) {
    double suffix = 0.0;  // sum over later samples of the ray of gT'_i * T_i
    for (int64_t s = begin[r + 1] - 1; s >= begin[r]; --s) {
      const float dt = te[s] - ts[s];
      const float tau = sg[s] * dt;
      const float e = float(std::exp(-double(tau)));
      const float a = 1.0f - e;
      const float T = tr[s];
      const float g_alpha = ga[s] + gw[s] * T;
      const float g_trans = gt[s] + gw[s] * a;
      const float g_tau = float(double(g_alpha * e) - suffix);
      suffix += double(g_trans) * double(T);
      gs[s] = g_tau * dt;
      gte[s] = g_tau * sg[s];
      gts[s] = -gte[s];
    }
  }
  return {grad_sigmas, grad_t_starts, grad_t_ends};
}

}  // namespace switchnerf
