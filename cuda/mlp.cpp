// Inference of the field's small MLPs on the CPU: y = W2 relu(W1 (s * x) + b1) + b2 for
// every row, in one pass over the batch with no intermediate tensors.
//
// The torch path (Linear -> ReLU -> Linear, plus the row scale as a separate multiply)
// writes a [M, H] hidden tensor to memory, copies the bias into every output row first
// and runs each step as its own parallel loop; at the field's widths (H = 32..64) that
// overhead costs more than the arithmetic. Here each thread takes blocks of rows and
// keeps a row's hidden vector in registers/L1. Forward only (no autograd): training uses
// torch's layers; results agree with them to float32 rounding (summation order differs).
#include <algorithm>
#include <vector>

#include "checks.h"
#include "ops.h"

namespace switchnerf {
namespace {

#if defined(__FMA__) || defined(__aarch64__)
inline float madd(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
#else
inline float madd(float a, float b, float c) { return a * b + c; }
#endif

constexpr int64_t kRowsPerTask = 256;
constexpr int kBlock = 4;  // rows computed together: each weight load serves kBlock rows

// w1t [I, H] (W1 transposed), w2t [H, O]: the inner loops run over contiguous outputs, so
// they vectorise without reordering any sum (each output accumulates i = 0, 1, ... in
// order). HC / OC > 0 fix H / O at compile time (the field's common widths).
template <int HC, int OC>
void mlp_rows(const float* x, const float* scale, const float* w1t, const float* b1,
              const float* w2t, const float* b2, float* y, int64_t begin, int64_t end,
              int64_t I, int64_t h_dyn, int64_t o_dyn, float* hidden) {
  const int64_t H = HC > 0 ? HC : h_dyn;
  const int64_t O = OC > 0 ? OC : o_dyn;
  for (int64_t r0 = begin; r0 < end; r0 += kBlock) {
    const int n = int(std::min<int64_t>(kBlock, end - r0));
    float s[kBlock];
    for (int k = 0; k < kBlock; ++k) s[k] = (k < n && scale) ? scale[r0 + k] : 1.0f;
    for (int k = 0; k < kBlock; ++k)
      for (int64_t j = 0; j < H; ++j) hidden[k * H + j] = b1 ? b1[j] : 0.0f;
    for (int64_t i = 0; i < I; ++i) {
      float xi[kBlock];
      for (int k = 0; k < kBlock; ++k) xi[k] = k < n ? s[k] * x[(r0 + k) * I + i] : 0.0f;
      const float* wi = w1t + i * H;
      for (int64_t j = 0; j < H; ++j) {
        const float w = wi[j];
        for (int k = 0; k < kBlock; ++k) hidden[k * H + j] = madd(w, xi[k], hidden[k * H + j]);
      }
    }
    float out[kBlock * 64];
    const bool small = O <= 64;
    for (int k = 0; k < n; ++k) {
      float* yr = small ? out + k * O : y + (r0 + k) * O;
      for (int64_t o = 0; o < O; ++o) yr[o] = b2 ? b2[o] : 0.0f;
      for (int64_t j = 0; j < H; ++j) {
        const float hj = std::max(hidden[k * H + j], 0.0f);
        const float* wj = w2t + j * O;
        for (int64_t o = 0; o < O; ++o) yr[o] = madd(wj[o], hj, yr[o]);
      }
      if (small)
        for (int64_t o = 0; o < O; ++o) y[(r0 + k) * O + o] = yr[o];
    }
  }
}

using RowsFn = void (*)(const float*, const float*, const float*, const float*, const float*,
                        const float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                        float*);

RowsFn pick(int64_t H, int64_t O) {
#define SWITCHNERF_MLP_CASE(HV, OV) \
  if (H == HV && O == OV) return &mlp_rows<HV, OV>;
  SWITCHNERF_MLP_CASE(64, 16)
  SWITCHNERF_MLP_CASE(64, 3)
  SWITCHNERF_MLP_CASE(32, 8)
  SWITCHNERF_MLP_CASE(64, 8)
  SWITCHNERF_MLP_CASE(32, 16)
  SWITCHNERF_MLP_CASE(32, 3)
#undef SWITCHNERF_MLP_CASE
  return &mlp_rows<0, 0>;
}

}  // namespace

at::Tensor mlp_forward(const at::Tensor& x, const c10::optional<at::Tensor>& row_scale,
                       const at::Tensor& w1, const c10::optional<at::Tensor>& b1,
                       const at::Tensor& w2, const c10::optional<at::Tensor>& b2) {
  const char* op = "mlp_forward";
  const at::Device cpu(at::kCPU);
  check_tensor(x, op, "x", at::kFloat, 2, cpu);
  check_tensor(w1, op, "w1", at::kFloat, 2, cpu);
  check_tensor(w2, op, "w2", at::kFloat, 2, cpu);
  const int64_t M = x.size(0), I = x.size(1), H = w1.size(0), O = w2.size(0);
  check_size(w1, op, "w1", 1, I, "input width of x");
  check_size(w2, op, "w2", 1, H, "rows of w1 (hidden width)");
  const float* scale = nullptr;
  if (row_scale.has_value()) {
    check_tensor(*row_scale, op, "row_scale", at::kFloat, 1, cpu);
    check_size(*row_scale, op, "row_scale", 0, M, "rows of x");
    scale = row_scale->data_ptr<float>();
  }
  const float* b1p = nullptr;
  if (b1.has_value()) {
    check_tensor(*b1, op, "b1", at::kFloat, 1, cpu);
    check_size(*b1, op, "b1", 0, H, "rows of w1");
    b1p = b1->data_ptr<float>();
  }
  const float* b2p = nullptr;
  if (b2.has_value()) {
    check_tensor(*b2, op, "b2", at::kFloat, 1, cpu);
    check_size(*b2, op, "b2", 0, O, "rows of w2");
    b2p = b2->data_ptr<float>();
  }
  const at::Tensor w1t = w1.t().contiguous();  // [I, H]
  const at::Tensor w2t = w2.t().contiguous();  // [H, O]
  at::Tensor y = at::empty({M, O}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* w1p = w1t.data_ptr<float>();
  const float* w2p = w2t.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t n_tasks = (M + kRowsPerTask - 1) / kRowsPerTask;
  const RowsFn rows = pick(H, O);
#pragma omp parallel if (n_tasks > 1)
  {
    std::vector<float> hidden(static_cast<size_t>(kBlock * H));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n_tasks; ++t) {
      const int64_t begin = t * kRowsPerTask, end = std::min(M, begin + kRowsPerTask);
      rows(xp, scale, w1p, b1p, w2p, b2p, yp, begin, end, I, H, O, hidden.data());
    }
  }
  return y;
}

}  // namespace switchnerf
