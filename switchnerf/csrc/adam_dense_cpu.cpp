// Dense Adam step of a float32 CPU tensor that zeroes the gradient as it reads it
// (adam_dense_step in ops.h). The arithmetic is torch's fused CPU Adam (no weight decay,
// no amsgrad, no maximize), operation for operation in float32, so the two agree bit for
// bit (compiled with -ffp-contract=off: torch's two FMAs are written out):
//   m <- fma(1 - b1, g - m, m)          (m.lerp_(g, 1 - b1): 1 - b1 < 0.5)
//   v <- fma((1 - b2) * g, g, v * b2)     (v.mul_(b2).addcmul_(g, g, value=1 - b2))
//   p <- p + (-step_size * m) / (sqrt(v) / bc2_sqrt + eps),
//   step_size = lr / (1 - b1^t),  bc2_sqrt = sqrt(1 - b2^t)   (both in float64, then float32).
// Zeroing the gradient in the same pass saves the separate memset of a fresh gradient at
// the next step (the caller hands the zeroed tensor back to the backward that fills it).
#include <algorithm>
#include <cmath>

#include "checks.h"
#include "ops.h"

namespace switchnerf {
namespace {

constexpr int64_t kBlock = 1 << 14;  // values per OpenMP work item (64 KiB of each stream)

void adam_dense_kernel(float* __restrict__ p, float* __restrict__ g, float* __restrict__ m,
                       float* __restrict__ v, int64_t n, float c1, float b2, float c2,
                       float neg_step_size, float bc2_sqrt, float eps, bool zero_grad) {
  const int64_t n_blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n_blocks > 1)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    const int64_t begin = blk * kBlock, end = std::min(n, begin + kBlock);
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const float gi = g[i];
      const float mi = std::fma(c1, gi - m[i], m[i]);
      const float vi = std::fma(c2 * gi, gi, v[i] * b2);
      m[i] = mi;
      v[i] = vi;
      p[i] = p[i] + neg_step_size * mi / (std::sqrt(vi) / bc2_sqrt + eps);
    }
    if (zero_grad) std::fill(g + begin, g + end, 0.0f);
  }
}

}  // namespace

void adam_dense_step(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& exp_avg,
                     const at::Tensor& exp_avg_sq, int64_t step, double lr, double beta1,
                     double beta2, double eps, bool zero_grad) {
  const char* op = "adam_dense_step";
  const at::Device cpu(at::kCPU);
  check_tensor(param, op, "param", at::kFloat, param.dim(), cpu);
  const int64_t n = param.numel();
  for (const auto& [t, name] :
       {std::pair{&grad, "grad"}, {&exp_avg, "exp_avg"}, {&exp_avg_sq, "exp_avg_sq"}}) {
    check_tensor(*t, op, name, at::kFloat, t->dim(), cpu);
    TORCH_CHECK(t->numel() == n, op, ": argument '", name, "' has shape ", shape_str(*t),
                ", expected ", n, " values (as param ", shape_str(param), ")");
  }
  TORCH_CHECK(step >= 1, op, ": step is ", step, ", expected >= 1 (the step being taken)");
  TORCH_CHECK(beta1 > 0.5 && beta1 < 1 && beta2 >= 0 && beta2 < 1, op, ": betas (", beta1,
              ", ", beta2, ") must be in (0.5, 1) and [0, 1) (torch's lerp form for 1 - b1 < 0.5)");
  if (n == 0) return;
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  adam_dense_kernel(param.data_ptr<float>(), grad.data_ptr<float>(), exp_avg.data_ptr<float>(),
                    exp_avg_sq.data_ptr<float>(), n, static_cast<float>(1.0 - beta1),
                    static_cast<float>(beta2), static_cast<float>(1.0 - beta2),
                    static_cast<float>(-(lr / bc1)),
                    static_cast<float>(std::sqrt(bc2)), static_cast<float>(eps), zero_grad);
}

}  // namespace switchnerf
