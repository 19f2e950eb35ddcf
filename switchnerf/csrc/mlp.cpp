// Inference of the field's small MLPs on the CPU:
//   y = W2 relu(W1 (s * x) + b1 + B[index]) + b2
// for every row, in one pass over the batch with no intermediate tensors in memory. The
// optional per-row hidden bias B[index[r]] ([R, H] rows gathered by index [M]) lets a caller
// fold inputs that are constant along a ray (view-direction encoding, appearance) into one
// bias per ray instead of widening every sample's input.
//
// The torch path (Linear -> ReLU -> Linear, plus the row scale as a separate multiply)
// writes a [M, H] hidden tensor to memory, copies the bias into every output row first and
// runs each step as its own parallel loop; at the field's widths (H = 32..64) that overhead
// costs more than the arithmetic. Here each thread takes blocks of rows; a register-blocked
// micro-kernel computes kRows rows x 16 hidden units at a time (12 vector accumulators,
// within the 16 registers of AVX2), each weight load serving kRows rows. Each output sums
// its inputs i = 0, 1, ... in order (explicit FMA where the CPU has one). Forward only (no
// autograd): training uses torch's layers; results agree with them to float32 rounding.
#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__FMA__) && defined(__AVX__)
#include <immintrin.h>
#endif

#include "checks.h"
#include "ops.h"

namespace switchnerf {
namespace {

typedef float v8 __attribute__((vector_size(32)));

inline float madd(float a, float b, float c) {
#if defined(__FMA__) || defined(__aarch64__)
  return __builtin_fmaf(a, b, c);
#else
  return a * b + c;
#endif
}

// a * b + c, lane by lane, rounded as madd.
inline v8 vmadd(v8 a, v8 b, v8 c) {
#if defined(__FMA__) && defined(__AVX__)
  return (v8)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  v8 r;
  for (int l = 0; l < 8; ++l) r[l] = madd(a[l], b[l], c[l]);
  return r;
#endif
}

inline v8 vload(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void vstore(float* p, v8 v) { std::memcpy(p, &v, sizeof(v)); }

inline v8 vsplat(float a) { return v8{a, a, a, a, a, a, a, a}; }

constexpr int64_t kRowsPerTask = 240;
constexpr int kRows = 6;  // rows computed together by the micro-kernels

struct Layers {
  const float* w1t;    // [I, H]  (W1 transposed)
  const float* b1;     // [H] or null
  const float* bias;   // [R, H] per-row hidden bias rows, or null
  const int64_t* bias_index;  // [M], with bias
  const float* w2t;    // [H, OP] (W2 transposed, columns zero-padded to OP)
  const float* b2;     // [OP] zero-padded (never null)
  int64_t I, H, O, OP;
};

// Scratch of one thread: xs [kRows, I] scaled inputs, hid [kRows, H] hidden activations,
// out [kRows, OP].
struct Scratch {
  std::vector<float> xs, hid, out;
  Scratch(const Layers& L)
      : xs(size_t(kRows * L.I)), hid(size_t(kRows * L.H)), out(size_t(kRows * L.OP)) {}
};

// Hidden pre-activations of kRows rows (rows >= n are zero input and ignored by the caller),
// 16 units at a time: H is a multiple of 16.
void hidden_block(const Layers& L, const float* xs, const float* bias_rows[kRows], float* hid) {
  const int64_t I = L.I, H = L.H;
  for (int64_t j = 0; j < H; j += 16) {
    v8 a[kRows][2];
    const v8 b0 = L.b1 ? vload(L.b1 + j) : vsplat(0.0f);
    const v8 b1 = L.b1 ? vload(L.b1 + j + 8) : vsplat(0.0f);
    for (int r = 0; r < kRows; ++r) {
      a[r][0] = b0;
      a[r][1] = b1;
      if (bias_rows[r]) {
        a[r][0] += vload(bias_rows[r] + j);
        a[r][1] += vload(bias_rows[r] + j + 8);
      }
    }
    const float* w = L.w1t + j;
    for (int64_t i = 0; i < I; ++i, w += H) {
      const v8 w0 = vload(w), w1 = vload(w + 8);
      for (int r = 0; r < kRows; ++r) {
        const v8 x = vsplat(xs[r * I + i]);
        a[r][0] = vmadd(w0, x, a[r][0]);
        a[r][1] = vmadd(w1, x, a[r][1]);
      }
    }
    const v8 zero = vsplat(0.0f);
    for (int r = 0; r < kRows; ++r) {
      vstore(hid + r * H + j, a[r][0] > zero ? a[r][0] : zero);
      vstore(hid + r * H + j + 8, a[r][1] > zero ? a[r][1] : zero);
    }
  }
}

// Outputs of kRows rows from their ReLU'd hidden activations; NV = OP / 8 vectors per row.
template <int NV>
void output_block(const Layers& L, const float* hid, float* out) {
  const int64_t H = L.H, OP = L.OP;
  v8 a[kRows][NV];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < NV; ++v) a[r][v] = vload(L.b2 + 8 * v);
  for (int64_t j = 0; j < H; ++j) {
    v8 w[NV];
    for (int v = 0; v < NV; ++v) w[v] = vload(L.w2t + j * OP + 8 * v);
    for (int r = 0; r < kRows; ++r) {
      const v8 h = vsplat(hid[r * H + j]);
      for (int v = 0; v < NV; ++v) a[r][v] = vmadd(w[v], h, a[r][v]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < NV; ++v) vstore(out + r * OP + 8 * v, a[r][v]);
}

// The general case (any H, O): one row at a time, scalar.
void row_scalar(const Layers& L, const float* xs, const float* bias_row, float* hid, float* y) {
  const int64_t I = L.I, H = L.H, O = L.O, OP = L.OP;
  for (int64_t j = 0; j < H; ++j) hid[j] = (L.b1 ? L.b1[j] : 0.0f) + (bias_row ? bias_row[j] : 0.0f);
  for (int64_t i = 0; i < I; ++i) {
    const float* wi = L.w1t + i * H;
    for (int64_t j = 0; j < H; ++j) hid[j] = madd(wi[j], xs[i], hid[j]);
  }
  for (int64_t o = 0; o < O; ++o) y[o] = L.b2[o];
  for (int64_t j = 0; j < H; ++j) {
    const float hj = std::max(hid[j], 0.0f);
    const float* wj = L.w2t + j * OP;
    for (int64_t o = 0; o < O; ++o) y[o] = madd(wj[o], hj, y[o]);
  }
}

void mlp_rows(const Layers& L, const float* x, const float* scale, float* y, int64_t begin,
              int64_t end, Scratch& s) {
  const int64_t I = L.I, O = L.O, OP = L.OP;
  const bool blocked = L.H % 16 == 0 && OP <= 16;
  for (int64_t r0 = begin; r0 < end; r0 += kRows) {
    const int n = int(std::min<int64_t>(kRows, end - r0));
    const float* bias_rows[kRows];
    for (int r = 0; r < kRows; ++r) {
      bias_rows[r] = (r < n && L.bias) ? L.bias + L.bias_index[r0 + r] * L.H : nullptr;
      const float sr = (r < n && scale) ? scale[r0 + r] : 1.0f;
      for (int64_t i = 0; i < I; ++i) s.xs[r * I + i] = r < n ? sr * x[(r0 + r) * I + i] : 0.0f;
    }
    if (!blocked) {
      for (int r = 0; r < n; ++r)
        row_scalar(L, s.xs.data() + r * I, bias_rows[r], s.hid.data(), y + (r0 + r) * O);
      continue;
    }
    hidden_block(L, s.xs.data(), bias_rows, s.hid.data());
    if (OP == 8)
      output_block<1>(L, s.hid.data(), s.out.data());
    else
      output_block<2>(L, s.hid.data(), s.out.data());
    for (int r = 0; r < n; ++r)
      std::memcpy(y + (r0 + r) * O, s.out.data() + r * OP, sizeof(float) * size_t(O));
  }
}

}  // namespace

at::Tensor mlp_forward(const at::Tensor& x, const c10::optional<at::Tensor>& row_scale,
                       const at::Tensor& w1, const c10::optional<at::Tensor>& b1,
                       const at::Tensor& w2, const c10::optional<at::Tensor>& b2,
                       const c10::optional<at::Tensor>& hidden_bias,
                       const c10::optional<at::Tensor>& bias_index) {
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
  TORCH_CHECK(hidden_bias.has_value() == bias_index.has_value(), op,
              ": 'hidden_bias' and 'bias_index' go together (both or neither)");
  const float* biasp = nullptr;
  const int64_t* indexp = nullptr;
  if (hidden_bias.has_value()) {
    check_tensor(*hidden_bias, op, "hidden_bias", at::kFloat, 2, cpu);
    check_size(*hidden_bias, op, "hidden_bias", 1, H, "rows of w1 (hidden width)");
    check_tensor(*bias_index, op, "bias_index", at::kLong, 1, cpu);
    check_size(*bias_index, op, "bias_index", 0, M, "rows of x");
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
  const Layers L{w1t.data_ptr<float>(), b1p, biasp, indexp, w2t.data_ptr<float>(),
                 b2p.data_ptr<float>(), I, H, O, OP};
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t n_tasks = (M + kRowsPerTask - 1) / kRowsPerTask;
#pragma omp parallel if (n_tasks > 1)
  {
    Scratch s(L);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n_tasks; ++t) {
      const int64_t begin = t * kRowsPerTask, end = std::min(M, begin + kRowsPerTask);
      mlp_rows(L, xp, scale, yp, begin, end, s);
    }
  }
  return y;
}

}  // namespace switchnerf
