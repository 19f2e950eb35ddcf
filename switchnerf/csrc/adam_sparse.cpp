// Host part of the lazy Adam step for hash tables: boundary checks and the CPU kernel of
// adam_sparse_cpu.cpp (semantics in adam_sparse.h).
#include "adam_sparse.h"

#include "checks.h"
#include "ops.h"

namespace switchnerf {

int64_t adam_sparse_step(const at::Tensor& param, const c10::optional<at::Tensor>& grad,
                         const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
                         const at::Tensor& last, const at::Tensor& step_size,
                         const at::Tensor& bc2_sqrt, int64_t base, int64_t step, double beta1,
                         double beta2, double eps, int64_t max_replay) {
  const char* op = "adam_sparse_step";
  const at::Device cpu(at::kCPU);
  check_tensor(param, op, "param", at::kFloat, 2, cpu);
  const int64_t R = param.size(0), F = param.size(1);
  TORCH_CHECK(F >= 1, op, ": param has ", F, " features per row, expected >= 1");
  if (grad.has_value()) {
    check_tensor(*grad, op, "grad", at::kFloat, 2, cpu);
    check_size(*grad, op, "grad", 0, R, "one row per table row");
    check_size(*grad, op, "grad", 1, F, "the table's features");
  }
  for (const auto& [t, name] : {std::pair{&exp_avg, "exp_avg"}, {&exp_avg_sq, "exp_avg_sq"}}) {
    check_tensor(*t, op, name, at::kFloat, 2, cpu);
    check_size(*t, op, name, 0, R, "one row per table row");
    check_size(*t, op, name, 1, F, "the table's features");
  }
  check_tensor(last, op, "last", at::kLong, 1, cpu);
  check_size(last, op, "last", 0, R, "one step per table row");
  check_tensor(step_size, op, "step_size", at::kDouble, 1, cpu);
  check_tensor(bc2_sqrt, op, "bc2_sqrt", at::kDouble, 1, cpu);
  check_size(bc2_sqrt, op, "bc2_sqrt", 0, step_size.size(0), "one value per step");
  TORCH_CHECK(step > base && step - base <= step_size.size(0), op, ": step ", step,
              " is outside the history (steps ", base + 1, "..", base + step_size.size(0), ")");
  TORCH_CHECK(max_replay >= 0, op, ": max_replay is ", max_replay, ", expected >= 0");
  TORCH_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, op, ": betas (", beta1,
              ", ", beta2, ") must be in [0, 1)");
  AdamSparseArgs a;
  a.param = param.data_ptr<float>();
  a.grad = grad.has_value() ? grad->data_ptr<float>() : nullptr;
  a.exp_avg = exp_avg.data_ptr<float>();
  a.exp_avg_sq = exp_avg_sq.data_ptr<float>();
  a.last = last.data_ptr<int64_t>();
  a.step_size = step_size.data_ptr<double>();
  a.bc2_sqrt = bc2_sqrt.data_ptr<double>();
  a.rows = R;
  a.features = F;
  a.base = base;
  a.step = step;
  a.beta1 = beta1;
  a.beta2 = beta2;
  a.eps = eps;
  a.max_replay = max_replay;
  if (R == 0) return 0;
  const int64_t updated = adam_sparse_step_cpu(a);
  TORCH_CHECK(updated >= 0, op, ": row ", -1 - updated, " was last updated at step ",
              a.last[-1 - updated], ", before the history starts (step ", base + 1, ")");
  return updated;
}

}  // namespace switchnerf
