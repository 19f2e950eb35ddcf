// Host part of the field's MLP inference: boundary checks, weight layout (transposed,
// padded), and the CPU kernel of mlp_cpu.cpp (semantics in mlp.h).
#include "checks.h"
#include "mlp.h"
#include "ops.h"

namespace switchnerf {

at::Tensor mlp_forward(const at::Tensor& x, const c10::optional<at::Tensor>& row_scale,
                       const at::Tensor& w1, const c10::optional<at::Tensor>& b1,
                       const at::Tensor& w2, const c10::optional<at::Tensor>& b2,
                       const c10::optional<at::Tensor>& hidden_bias,
                       const c10::optional<at::Tensor>& bias_index,
                       const c10::optional<at::Tensor>& x_pre,
                       const c10::optional<at::Tensor>& x_index) {
  const char* op = "mlp_forward";
  const at::Device cpu(at::kCPU);
  TORCH_CHECK(x.defined() && x.scalar_type() == at::kFloat && x.dim() == 2 && x.device() == cpu,
              op, ": argument 'x' must be a 2-d float32 CPU tensor, got ",
              x.defined() ? shape_str(x) : std::string("undefined"));
  TORCH_CHECK(x.size(1) <= 1 || x.stride(1) == 1, op,
              ": argument 'x' must have contiguous rows (stride 1 along dimension 1), got "
              "strides ", x.strides());
  const int64_t ldx = x.size(0) <= 1 ? x.size(1) : x.stride(0);
  TORCH_CHECK(ldx >= x.size(1), op, ": argument 'x' has rows ", ldx, " floats apart, ",
              "expected at least its ", x.size(1), " columns");
  const int64_t* xip = nullptr;
  int64_t M = x.size(0);
  if (x_index.has_value()) {
    check_tensor(*x_index, op, "x_index", at::kLong, 1, cpu);
    M = x_index->size(0);
    if (M > 0) {
      const int64_t lo = x_index->min().item<int64_t>(), hi = x_index->max().item<int64_t>();
      TORCH_CHECK(lo >= 0 && hi < x.size(0), op, ": 'x_index' holds values in [", lo, ", ",
                  hi, "], expected [0, ", x.size(0), ") (rows of x)");
    }
    xip = x_index->data_ptr<int64_t>();
  }
  check_tensor(w1, op, "w1", at::kFloat, 2, cpu);
  check_tensor(w2, op, "w2", at::kFloat, 2, cpu);
  const int64_t H = w1.size(0), O = w2.size(0);
  int64_t P = 0;
  const float* prep = nullptr;
  if (x_pre.has_value()) {
    check_tensor(*x_pre, op, "x_pre", at::kFloat, 2, cpu);
    check_size(*x_pre, op, "x_pre", 0, M, "rows of the output");
    P = x_pre->size(1);
    prep = x_pre->data_ptr<float>();
  }
  const int64_t I = P + x.size(1);
  check_size(w1, op, "w1", 1, I, "input width of x_pre and x together");
  check_size(w2, op, "w2", 1, H, "rows of w1 (hidden width)");
  const float* scale = nullptr;
  if (row_scale.has_value()) {
    check_tensor(*row_scale, op, "row_scale", at::kFloat, 1, cpu);
    check_size(*row_scale, op, "row_scale", 0, M, "rows of the output");
    scale = row_scale->data_ptr<float>();
  }
  const float* b1p = nullptr;
  if (b1.has_value()) {
    check_tensor(*b1, op, "b1", at::kFloat, 1, cpu);
    check_size(*b1, op, "b1", 0, H, "rows of w1");
    b1p = b1->data_ptr<float>();
  }
  TORCH_CHECK(hidden_bias.has_value() == bias_index.has_value(), op,
              ": 'hidden_bias' and 'bias_index' go together (both or neither)");
  const float* biasp = nullptr;
  const int64_t* indexp = nullptr;
  if (hidden_bias.has_value()) {
    check_tensor(*hidden_bias, op, "hidden_bias", at::kFloat, 2, cpu);
    check_size(*hidden_bias, op, "hidden_bias", 1, H, "rows of w1 (hidden width)");
    check_tensor(*bias_index, op, "bias_index", at::kLong, 1, cpu);
    check_size(*bias_index, op, "bias_index", 0, M, "rows of the output");
    if (M > 0) {
      const int64_t lo = bias_index->min().item<int64_t>();
      const int64_t hi = bias_index->max().item<int64_t>();
      TORCH_CHECK(lo >= 0 && hi < hidden_bias->size(0), op, ": 'bias_index' holds values in [",
                  lo, ", ", hi, "], expected [0, ", hidden_bias->size(0),
                  ") (rows of hidden_bias)");
    }
    biasp = hidden_bias->data_ptr<float>();
    indexp = bias_index->data_ptr<int64_t>();
  }
  const int64_t OP = (O + 7) / 8 * 8;  // output columns padded to whole vectors
  at::Tensor w2t = at::zeros({H, OP}, w2.options());
  w2t.narrow(1, 0, O).copy_(w2.t());
  at::Tensor b2p = at::zeros({OP}, w2.options());
  if (b2.has_value()) {
    check_tensor(*b2, op, "b2", at::kFloat, 1, cpu);
    check_size(*b2, op, "b2", 0, O, "rows of w2");
    b2p.narrow(0, 0, O).copy_(*b2);
  }
  const at::Tensor w1t = w1.t().contiguous();  // [I, H]
  at::Tensor y = at::empty({M, O}, x.options());
  const MlpLayers L{w1t.data_ptr<float>(), b1p, biasp, indexp, w2t.data_ptr<float>(),
                   b2p.data_ptr<float>(), I, H, O, OP, P, ldx, xip};
  if (M > 0) mlp_forward_cpu(L, prep, x.data_ptr<float>(), scale, y.data_ptr<float>(), M);
  return y;
}

std::tuple<at::Tensor, at::Tensor> top1_softmax(const at::Tensor& logits) {
  const char* op = "top1_softmax";
  check_tensor(logits, op, "logits", at::kFloat, 2, at::Device(at::kCPU));
  const int64_t M = logits.size(0), E = logits.size(1);
  TORCH_CHECK(E >= 1, op, ": logits has ", E, " columns, expected at least 1 expert");
  at::Tensor id = at::empty({M}, logits.options().dtype(at::kLong));
  at::Tensor value = at::empty({M}, logits.options());
  if (M > 0)
    top1_softmax_cpu(logits.data_ptr<float>(), M, E, id.data_ptr<int64_t>(),
                     value.data_ptr<float>());
  return {id, value};
}

bool top1_softmax_fast(int64_t n_experts) { return top1_softmax_vectorised(n_experts); }

}  // namespace switchnerf
