// Packed volume-rendering weights (nerfacc 0.5's render_weight_from_density), CPU kernels.
// Torch-free: the host part (render_weights.cpp) checks arguments and allocates.
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
#pragma once

#include <cstdint>
#include <vector>

namespace switchnerf {

// Packed samples: S samples of n_rays rays, ray[s] sorted (a ray's samples contiguous).
struct PackedArgs {
  const float* t_starts = nullptr;  // [S]
  const float* t_ends = nullptr;    // [S]
  const float* sigmas = nullptr;    // [S]
  const int64_t* ray = nullptr;     // [S]
  int64_t n_samples = 0;            // S
  int64_t n_rays = 0;
};

// Index of a sample out of range or out of order (any one of them), or -1 when ray[] is
// sorted with values in [0, n_rays).
int64_t first_bad_ray_index(const PackedArgs& a);

// Start of each ray's chunk: begin[r] .. begin[r + 1] (n_rays + 1 values). ray[] must be valid.
std::vector<int64_t> chunk_bounds(const PackedArgs& a);

// weights, transmittance, alphas: [S] each.
void render_weights_forward_cpu(const PackedArgs& a, const std::vector<int64_t>& begin,
                                float* weights, float* transmittance, float* alphas);

// Inference compositing in one pass per ray (no gradients): the weights w as
// render_weights_forward computes them, and per ray r the sums over its samples s, in
// sample order, of w * values[s, c] (sums [N, C]), of w (opacity [N]) and of
// w * (t_start + t_end) / 2 (depth [N]); best [N]: the ray's first sample of the highest
// positive weight, -1 when none has a positive weight; count [N]: its samples.
void composite_rays_cpu(const PackedArgs& a, const std::vector<int64_t>& begin,
                        const float* values, int64_t n_values, float* weights, float* sums,
                        float* opacity, float* depth, int64_t* best, int64_t* count);

// Gradients w.r.t. sigmas, t_starts, t_ends ([S] each) from the gradients of the three
// outputs and the forward's transmittance.
void render_weights_backward_cpu(const PackedArgs& a, const std::vector<int64_t>& begin,
                                 const float* grad_weights, const float* grad_transmittance,
                                 const float* grad_alphas, const float* transmittance,
                                 float* grad_sigmas, float* grad_t_starts, float* grad_t_ends);

}  // namespace switchnerf
