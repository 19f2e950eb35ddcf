// Checked host entry points of the native ops (the functions the bindings expose).
// Each one checks device, dtype, layout and shape of its arguments, allocates the
// outputs and runs the CPU or CUDA kernel.
#pragma once

#include <torch/extension.h>

#include <tuple>

namespace switchnerf {

// Hash encoding (hash_encode.cpp). expert_id: [N] int64 or None (every point uses grid 0).
// x [N, 3] f32, table [R, F] f32, scale [E, L] f32, resolution/size [E, L] i32,
// offset [E, L] i64. Returns [N, L * F] f32.
at::Tensor hash_encode_forward(const at::Tensor& x, const at::Tensor& table,
                               const c10::optional<at::Tensor>& expert_id,
                               const at::Tensor& scale, const at::Tensor& resolution,
                               const at::Tensor& size, const at::Tensor& offset);

// Gradient of the hash encoding w.r.t. the table: grad_out [N, L * F] -> [n_rows, F].
// With `out` ([n_rows, F] float32, contiguous, on x's device) the gradient is added to
// `out` in place and `out` is returned (no allocation); else a zeroed tensor is allocated.
at::Tensor hash_encode_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                const c10::optional<at::Tensor>& expert_id,
                                const at::Tensor& scale, const at::Tensor& resolution,
                                const at::Tensor& size, const at::Tensor& offset,
                                int64_t n_rows, int64_t n_features,
                                const c10::optional<at::Tensor>& out);

// Packed volume-rendering weights (render_weights.cpp), CPU. Samples of a ray are contiguous and rays
// appear in ascending order. Returns (weights, transmittance, alphas), each [S].
std::tuple<at::Tensor, at::Tensor, at::Tensor> render_weights_forward(
    const at::Tensor& t_starts, const at::Tensor& t_ends, const at::Tensor& sigmas,
    const at::Tensor& ray_indices, int64_t n_rays);

// Points of packed samples (front_to_back.cpp), CPU: origins/dirs [N, 3] f32, ray_indices
// i64 [M], t_starts/t_ends f32 [M], idx i64 [m] -> [m, 3] f32,
// origins[r] + 0.5 * (t_start + t_end) * dirs[r] for r = ray_indices[idx].
at::Tensor packed_points(const at::Tensor& origins, const at::Tensor& dirs,
                         const at::Tensor& ray_indices, const at::Tensor& t_starts,
                         const at::Tensor& t_ends, const at::Tensor& idx);

// Top-1 of softmax(logits [M, E] f32) (mlp.cpp), CPU: (first argmax i64 [M],
// 1 / sum_e exp(logits_e - max) f32 [M]); top1_softmax_fast(E): whether it is vectorised
// for E (else it is slower than torch's, which callers should then use).
std::tuple<at::Tensor, at::Tensor> top1_softmax(const at::Tensor& logits);
bool top1_softmax_fast(int64_t n_experts);

// Inference compositing of packed samples (render_weights.cpp), CPU, no gradients:
// values [S, C] f32. Returns (weights [S], sums [N, C] of w * values, opacity [N],
// depth [N] of w * t_mid, best [N] i64: each ray's first sample of the highest positive
// weight or -1, count [N] i64: samples per ray).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
composite_rays_forward(
    const at::Tensor& t_starts, const at::Tensor& t_ends, const at::Tensor& sigmas,
    const at::Tensor& ray_indices, int64_t n_rays, const at::Tensor& values);

// Gradients of render_weights_forward w.r.t. (sigmas, t_starts, t_ends), each [S].
std::tuple<at::Tensor, at::Tensor, at::Tensor> render_weights_backward(
    const at::Tensor& grad_weights, const at::Tensor& grad_transmittance,
    const at::Tensor& grad_alphas, const at::Tensor& t_starts, const at::Tensor& t_ends,
    const at::Tensor& sigmas, const at::Tensor& ray_indices, const at::Tensor& transmittance,
    int64_t n_rays);

// Occupancy-grid ray marching (march.cpp), CPU. origins/dirs [N, 3] f32 in the grid's
// unit-cube frame, near (base, stratified offset included) and far [N] f32, binary
// [R0, R1, R2] bool; max_samples < 0 means no limit. Returns (ray_indices i64 [M],
// t_starts f32 [M], t_ends f32 [M]) sorted by ray.
std::tuple<at::Tensor, at::Tensor, at::Tensor> march_rays_forward(
    const at::Tensor& origins, const at::Tensor& dirs, const at::Tensor& base,
    const at::Tensor& far, const at::Tensor& binary, double step_size, int64_t max_samples);

// Front-to-back round bookkeeping (front_to_back.cpp), CPU; semantics in front_to_back.h.
// pos, end [A] i64 of the open rays (0 <= pos < end). take: -> idx i64 [m], the next up to
// k packed samples of every open ray, concatenated.
at::Tensor front_to_back_take(const at::Tensor& pos, const at::Tensor& end, int64_t k);

// update: sigma [m] f32 of the samples take gave (idx [m]), dt [M] f32 of all packed
// samples, the open rays' ray/pos/end [A] i64 and tau [A] f64 -> (vis i64 [K], the round
// positions of the visible samples; ray, pos, end, tau of the rays left open).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> front_to_back_update(
    const at::Tensor& sigma, const at::Tensor& dt, const at::Tensor& idx, const at::Tensor& ray,
    const at::Tensor& pos, const at::Tensor& end, const at::Tensor& tau, int64_t k,
    double alpha_thre, double early_stop_eps);

// Two-layer MLP inference (mlp.cpp), CPU:
//   y = w2 relu(w1 [x_pre, row_scale * x[x_index]] + b1 + hidden_bias[bias_index]) + b2.
// x [N, I - P] (rows may be strided: stride 1 along dimension 1), x_index int64 [M] (rows of
// x to read; None: M = N, row r), row_scale [M] or None, x_pre [M, P] (unscaled leading
// columns) or None, w1 [H, I], b1 [H] or None, w2 [O, H], b2 [O] or None, hidden_bias
// [R, H] and bias_index int64 [M] (values in [0, R)) or both None; float32. Returns [M, O].
at::Tensor mlp_forward(const at::Tensor& x, const c10::optional<at::Tensor>& row_scale,
                       const at::Tensor& w1, const c10::optional<at::Tensor>& b1,
                       const at::Tensor& w2, const c10::optional<at::Tensor>& b2,
                       const c10::optional<at::Tensor>& hidden_bias,
                       const c10::optional<at::Tensor>& bias_index,
                       const c10::optional<at::Tensor>& x_pre,
                       const c10::optional<at::Tensor>& x_index);

// Lazy Adam step for a hash table (adam_sparse.cpp), CPU: param/exp_avg/exp_avg_sq [R, F]
// f32, grad [R, F] f32 or None (flush every row to `step`), last [R] i64, step_size and
// bc2_sqrt [K] f64 for steps base + 1 .. base + K. Semantics in adam_sparse.h. Returns the
// number of rows updated.
int64_t adam_sparse_step(const at::Tensor& param, const c10::optional<at::Tensor>& grad,
                         const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
                         const at::Tensor& last, const at::Tensor& step_size,
                         const at::Tensor& bc2_sqrt, int64_t base, int64_t step, double beta1,
                         double beta2, double eps, int64_t max_replay);

// Dense Adam step (adam_dense_cpu.cpp), CPU, in place: param, grad, exp_avg, exp_avg_sq
// contiguous float32 of equal numel; `step` is the step being taken (1, 2, ...). torch's
// fused CPU Adam without weight decay, amsgrad or maximize, bit for bit; with `zero_grad`
// the gradient is zeroed in the same pass.
void adam_dense_step(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& exp_avg,
                     const at::Tensor& exp_avg_sq, int64_t step, double lr, double beta1,
                     double beta2, double eps, bool zero_grad);

}  // namespace switchnerf
