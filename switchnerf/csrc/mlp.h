// Inference of the field's small MLPs, CPU kernel (torch-free; the host part mlp.cpp checks
// the arguments, transposes and pads the weights):
//   y = W2 relu(W1 [p, s * x] + b1 + B[index]) + b2
// for every row (p: optional unscaled leading input columns, s: optional row scale), in one
// pass over the batch with no intermediate tensors in memory. The optional per-row hidden
// bias B[index[r]] ([R, H] rows gathered by index [M]) lets a caller fold inputs that are
// constant along a ray (view-direction encoding, appearance) into one bias per ray instead
// of widening every sample's input.
//
// The torch path (Linear -> ReLU -> Linear, plus the row scale as a separate multiply)
// writes a [M, H] hidden tensor to memory, copies the bias into every output row first and
// runs each step as its own parallel loop; at the field's widths (H = 32..64) that overhead
// costs more than the arithmetic. Here each thread takes blocks of rows; a register-blocked
// micro-kernel computes kRows rows x 16 hidden units at a time (12 vector accumulators,
// within the 16 registers of AVX2), each weight load serving kRows rows. Each output sums
// its inputs i = 0, 1, ... in order (explicit FMA where the CPU has one). Forward only (no
// autograd): training uses torch's layers; results agree with them to float32 rounding.
#pragma once

#include <cstdint>

namespace switchnerf {

struct MlpLayers {
  const float* w1t;    // [I, H]  (W1 transposed)
  const float* b1;     // [H] or null
  const float* bias;   // [R, H] per-row hidden bias rows, or null
  const int64_t* bias_index;  // [M], with bias
  const float* w2t;    // [H, OP] (W2 transposed, columns zero-padded to OP)
  const float* b2;     // [OP] zero-padded (never null)
  int64_t I, H, O, OP;
  int64_t P;           // leading input columns read from x_pre, unscaled (0: none)
  int64_t ldx;         // floats from one row of x to the next (>= I - P)
  const int64_t* x_index = nullptr;  // [M]: output row r reads row x_index[r] of x; null: r
};

// y [M, O] = W2 relu(W1 [x_pre, scale * x] + b1 + bias[bias_index]) + b2 for x_pre
// [M, P] (null when P = 0), x rows of I - P floats, L.ldx apart (row r, or row
// L.x_index[r]), and an optional scale [M] (null: 1); OpenMP over blocks of rows.
void mlp_forward_cpu(const MlpLayers& L, const float* x_pre, const float* x, const float* scale,
                     float* y, int64_t M);

// Top-1 of softmax(logits) per row, logits [M, E]: id[r] the first argmax, value[r] =
// 1 / sum_e exp(logits[r, e] - max). With AVX2 and E = 8 one vector per row and a
// polynomial exp (Cephes' expf: within 2 ulp, so value within 1e-6 relative of torch's);
// otherwise std::exp per value. OpenMP over rows.
void top1_softmax_cpu(const float* logits, int64_t M, int64_t E, int64_t* id, float* value);

// Whether top1_softmax_cpu takes the vectorised path for E experts.
bool top1_softmax_vectorised(int64_t E);

}  // namespace switchnerf
