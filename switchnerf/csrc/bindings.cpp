// Python bindings of the native ops: the only file that talks to pybind11.
#include <torch/extension.h>

#include "ops.h"

// The build passes the source hash (and, for a prebuilt module, the torch version) as
// bare tokens, stringified here, so no quoting has to survive the build tool.
#define SWITCHNERF_STR_(x) #x
#define SWITCHNERF_STR(x) SWITCHNERF_STR_(x)

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "switchnerf native ops (CPU, and CUDA where built with it)";
#ifdef SWITCHNERF_SOURCE_HASH
  m.attr("source_hash") = SWITCHNERF_STR(SWITCHNERF_SOURCE_HASH);
#else
  m.attr("source_hash") = "unknown";
#endif
#ifdef SWITCHNERF_TORCH_VERSION
  m.attr("torch_version") = SWITCHNERF_STR(SWITCHNERF_TORCH_VERSION);
#endif
#ifdef SWITCHNERF_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.def("hash_encode_forward", &switchnerf::hash_encode_forward,
        "Hash encoding forward: (x [N,3], table [R,F], expert_id [N] or None, scale, "
        "resolution, size, offset [E,L]) -> [N, L*F]",
        py::arg("x"), py::arg("table"), py::arg("expert_id"), py::arg("scale"),
        py::arg("resolution"), py::arg("size"), py::arg("offset"));
  m.def("hash_encode_backward", &switchnerf::hash_encode_backward,
        "Hash encoding gradient w.r.t. the table: grad_out [N, L*F] -> [n_rows, n_features] "
        "(added to `out` in place when given, else to a fresh zeroed tensor)",
        py::arg("grad_out"), py::arg("x"), py::arg("expert_id"), py::arg("scale"),
        py::arg("resolution"), py::arg("size"), py::arg("offset"), py::arg("n_rows"),
        py::arg("n_features"), py::arg("out") = py::none());
  m.def("render_weights_forward", &switchnerf::render_weights_forward,
        "Packed volume-rendering weights: -> (weights, transmittance, alphas) [S]",
        py::arg("t_starts"), py::arg("t_ends"), py::arg("sigmas"), py::arg("ray_indices"),
        py::arg("n_rays"));
  m.def("packed_points", &switchnerf::packed_points,
        "Points of packed samples idx: origins[r] + t_mid * dirs[r], r = ray_indices[idx] "
        "-> [m, 3]",
        py::arg("origins"), py::arg("dirs"), py::arg("ray_indices"), py::arg("t_starts"),
        py::arg("t_ends"), py::arg("idx"));
  m.def("top1_softmax", &switchnerf::top1_softmax,
        "Top-1 of softmax(logits [M, E]): -> (first argmax [M], max probability [M])",
        py::arg("logits"));
  m.def("top1_softmax_fast", &switchnerf::top1_softmax_fast,
        "Whether top1_softmax is vectorised for this many experts", py::arg("n_experts"));
  m.def("composite_rays_forward", &switchnerf::composite_rays_forward,
        "Inference compositing: -> (weights [S], sums [N, C] of w * values, opacity [N], "
        "depth [N], best sample [N] or -1, samples per ray [N])",
        py::arg("t_starts"), py::arg("t_ends"), py::arg("sigmas"), py::arg("ray_indices"),
        py::arg("n_rays"), py::arg("values"));
  m.def("render_weights_backward", &switchnerf::render_weights_backward,
        "Gradients of render_weights_forward: -> (grad_sigmas, grad_t_starts, grad_t_ends)",
        py::arg("grad_weights"), py::arg("grad_transmittance"), py::arg("grad_alphas"),
        py::arg("t_starts"), py::arg("t_ends"), py::arg("sigmas"), py::arg("ray_indices"),
        py::arg("transmittance"), py::arg("n_rays"));
  m.def("march_rays_forward", &switchnerf::march_rays_forward,
        "Occupancy-grid ray marching: -> (ray_indices [M], t_starts [M], t_ends [M])",
        py::arg("origins"), py::arg("dirs"), py::arg("near"), py::arg("far"),
        py::arg("binary"), py::arg("step_size"), py::arg("max_samples"));
  m.def("front_to_back_take", &switchnerf::front_to_back_take,
        "Front-to-back round: the next up to k packed samples of every open ray -> idx [m]",
        py::arg("pos"), py::arg("end"), py::arg("k"));
  m.def("front_to_back_update", &switchnerf::front_to_back_update,
        "Front-to-back round: visibility and transmittance update -> (vis [K], ray, pos, "
        "end, tau of the rays left open)",
        py::arg("sigma"), py::arg("dt"), py::arg("idx"), py::arg("ray"), py::arg("pos"),
        py::arg("end"), py::arg("tau"), py::arg("k"), py::arg("alpha_thre"),
        py::arg("early_stop_eps"));
  m.def("mlp_forward", &switchnerf::mlp_forward,
        "Two-layer MLP inference: w2 relu(w1 [x_pre, row_scale * x[x_index]] + b1"
        " + hidden_bias[bias_index]) + b2 -> [M, O]",
        py::arg("x"), py::arg("row_scale"), py::arg("w1"), py::arg("b1"), py::arg("w2"),
        py::arg("b2"), py::arg("hidden_bias") = py::none(), py::arg("bias_index") = py::none(),
        py::arg("x_pre") = py::none(), py::arg("x_index") = py::none());
  m.def("adam_sparse_step", &switchnerf::adam_sparse_step,
        "Lazy Adam step of a hash table [R, F]: rows with a non-zero gradient catch up on "
        "their skipped steps, then step; grad None flushes every row -> rows updated",
        py::arg("param"), py::arg("grad"), py::arg("exp_avg"), py::arg("exp_avg_sq"),
        py::arg("last"), py::arg("step_size"), py::arg("bc2_sqrt"), py::arg("base"),
        py::arg("step"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
        py::arg("max_replay"));
  m.def("adam_dense_step", &switchnerf::adam_dense_step,
        "Dense Adam step in place (torch's fused CPU Adam without weight decay, bit for bit); "
        "zero_grad zeroes the gradient in the same pass",
        py::arg("param"), py::arg("grad"), py::arg("exp_avg"), py::arg("exp_avg_sq"),
        py::arg("step"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
        py::arg("zero_grad"));
}
