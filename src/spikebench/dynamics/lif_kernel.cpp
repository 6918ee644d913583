// The forward recursion of one LIF layer without recurrent weights, all T steps in one call: the
// compiled form of spikebench.dynamics.lif._advance for that case (see spikebench.dynamics.fused).
//
// Per neuron, with c[t] the input current, v the potential and z the previous step's spike:
//   soft reset:    v = fma(alpha, v, c[t]) - theta * z      (torch.add(c, v, alpha=alpha), then sub_)
//   reset to zero: v = fma(alpha * v, 1 - z, c[t])          (addcmul_ with (1 - z) in {0, 1})
//   z = v >= theta
// which is, operation for operation, what the PyTorch loop computes, so potentials and spikes are the
// same bit for bit. Currents are float32 or bf16 (taken into float32 exactly, by a shift); a
// time-constant input is one [B, N] frame read at every step. Spikes are written as float32 or bf16
// (exactly 0 or 1); the potentials of every step into `vs` when given (the backward pass reads them).
// Neurons are independent, so blocks of them run in parallel on torch's intra-op threads, each block
// through all T steps while its potentials stay in cache.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>

namespace {

constexpr int64_t kBlock = 512;   // neurons per block
constexpr int64_t kGrain = 64;    // blocks per thread at least (32,768 neurons, ATen's grain size)
constexpr uint16_t kBf16One = 0x3F80;

inline float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

template <bool kBf16In, bool kBf16Out, bool kSoft, bool kKeepV>
void run(const void* currents, int64_t c_step, float* __restrict v, float* __restrict z, void* spikes,
         float* __restrict vs, int64_t steps, int64_t n, float alpha, float theta) {
  at::parallel_for(0, (n + kBlock - 1) / kBlock, kGrain, [&](int64_t b0, int64_t b1) {
    for (int64_t i0 = b0 * kBlock, i1 = std::min(n, b1 * kBlock); i0 < i1; i0 += kBlock) {
      const int64_t end = std::min(i1, i0 + kBlock);
      for (int64_t t = 0; t < steps; ++t) {
        const uint16_t* __restrict ch = static_cast<const uint16_t*>(currents) + t * c_step;
        const float* __restrict cf = static_cast<const float*>(currents) + t * c_step;
        uint16_t* __restrict zh = static_cast<uint16_t*>(spikes) + t * n;
        float* __restrict zf = static_cast<float*>(spikes) + t * n;
        float* __restrict vt = kKeepV ? vs + t * n : nullptr;
#pragma omp simd
        for (int64_t i = i0; i < end; ++i) {
          const float c = kBf16In ? bf16_to_float(ch[i]) : cf[i];
          float x;
          if (kSoft) {
            x = std::fma(alpha, v[i], c);
            x = x - theta * z[i];
          } else {
            x = std::fma(alpha * v[i], 1.0f - z[i], c);
          }
          const bool s = x >= theta;
          v[i] = x;
          z[i] = s ? 1.0f : 0.0f;
          if (kBf16Out) {
            zh[i] = s ? kBf16One : uint16_t(0);
          } else {
            zf[i] = s ? 1.0f : 0.0f;
          }
          if (kKeepV) vt[i] = x;
        }
      }
    }
  });
}

template <bool kBf16In, bool kBf16Out>
void dispatch(bool soft, bool keep_v, const void* c, int64_t c_step, float* v, float* z, void* spikes,
              float* vs, int64_t steps, int64_t n, float alpha, float theta) {
  if (soft && keep_v) run<kBf16In, kBf16Out, true, true>(c, c_step, v, z, spikes, vs, steps, n, alpha, theta);
  if (soft && !keep_v) run<kBf16In, kBf16Out, true, false>(c, c_step, v, z, spikes, vs, steps, n, alpha, theta);
  if (!soft && keep_v) run<kBf16In, kBf16Out, false, true>(c, c_step, v, z, spikes, vs, steps, n, alpha, theta);
  if (!soft && !keep_v) run<kBf16In, kBf16Out, false, false>(c, c_step, v, z, spikes, vs, steps, n, alpha, theta);
}

// currents: [T, B, N] or one time-constant frame [B, N], float32 or bf16, contiguous; v, z: the state
// [B, N], float32, contiguous, advanced in place; spikes: [T, B, N], float32 or bf16, contiguous,
// written; vs: [T, B, N] float32, written when given. Only element counts matter (any [B, ...] shape
// of the state), and currents of one state's size are one frame read at every step.
void lif_forward(const at::Tensor& currents, at::Tensor v, at::Tensor z, at::Tensor spikes,
                 std::optional<at::Tensor> vs, double alpha, double theta, bool soft) {
  TORCH_CHECK(currents.device().is_cpu() && currents.is_contiguous(), "lif_forward: contiguous CPU currents");
  TORCH_CHECK(v.scalar_type() == at::kFloat && z.scalar_type() == at::kFloat && v.is_contiguous() &&
                  z.is_contiguous() && v.numel() == z.numel(),
              "lif_forward: float32 contiguous state");
  const int64_t n = v.numel();
  const int64_t steps = spikes.size(0);
  TORCH_CHECK(spikes.is_contiguous() && spikes.numel() == steps * n, "lif_forward: spikes [T, B, N]");
  const bool constant = currents.numel() == n;
  TORCH_CHECK(constant || currents.numel() == steps * n, "lif_forward: currents [T, B, N] or [B, N]");
  const bool bf16_in = currents.scalar_type() == at::kBFloat16;
  const bool bf16_out = spikes.scalar_type() == at::kBFloat16;
  TORCH_CHECK(bf16_in || currents.scalar_type() == at::kFloat, "lif_forward: float32 or bf16 currents");
  TORCH_CHECK(bf16_out || spikes.scalar_type() == at::kFloat, "lif_forward: float32 or bf16 spikes");
  float* vs_ptr = nullptr;
  if (vs.has_value()) {
    TORCH_CHECK(vs->scalar_type() == at::kFloat && vs->is_contiguous() && vs->numel() == steps * n,
                "lif_forward: vs [T, B, N] float32");
    vs_ptr = vs->data_ptr<float>();
  }
  const int64_t c_step = constant ? 0 : n;
  const float a = static_cast<float>(alpha), th = static_cast<float>(theta);
  const void* c = currents.data_ptr();
  void* out = spikes.data_ptr();
  float* vp = v.data_ptr<float>();
  float* zp = z.data_ptr<float>();
  const bool keep_v = vs_ptr != nullptr;
  if (bf16_in && bf16_out) dispatch<true, true>(soft, keep_v, c, c_step, vp, zp, out, vs_ptr, steps, n, a, th);
  if (bf16_in && !bf16_out) dispatch<true, false>(soft, keep_v, c, c_step, vp, zp, out, vs_ptr, steps, n, a, th);
  if (!bf16_in && bf16_out) dispatch<false, true>(soft, keep_v, c, c_step, vp, zp, out, vs_ptr, steps, n, a, th);
  if (!bf16_in && !bf16_out) dispatch<false, false>(soft, keep_v, c, c_step, vp, zp, out, vs_ptr, steps, n, a, th);
}

}  // namespace

TORCH_LIBRARY(spikebench, m) {
  m.def("lif_forward(Tensor currents, Tensor(a!) v, Tensor(b!) z, Tensor(c!) spikes, Tensor(d!)? vs, "
        "float alpha, float theta, bool soft) -> ()",
        &lif_forward);
}
