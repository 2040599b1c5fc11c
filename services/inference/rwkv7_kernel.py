"""A fused CPU kernel for the RWKV-7 decode step's attention core, built on first use.

One decode step of a time-mix layer, after its products (r, k, v, g and the low-rank
pairs' outputs), is a chain of about thirty small elementwise operations around the per-head
N x N state update. On the CPU in fp32 each of them is a separate pass (and, on two threads,
a separate parallel region) over [B, C] rows, and the state update alone is five passes over
the [B, H, N, N] state (12.6 MB per layer at 64 rows of a 768-wide model). `attention_core`
does all of it in one pass: each (row, head) pair reads its N x N state once, updates it in
place and leaves the head's normalised, gated output.

Math, per row and head (the package's `RWKV_x070_TMix_one` after its products):

    a  = sigmoid(a0 + al)                  w  = exp(-exp(-0.5) * sigmoid(w0 + wl))
    kk = normalize(k * k_k)                k' = k * (1 + (a - 1) * k_a)
    v' = v + (v_first - v) * sigmoid(v0 + vl)        (layers > 0; layer 0 keeps v)
    S  = S * w^T + (S @ -kk) (kk * a)^T + v' k'^T     (from the old S)
    y  = group_norm(S @ r) * ln_x_w + ln_x_b          (per head, eps 64e-5)
    out = (y + sum(r * k' * r_k) * v') * g

The same library holds `nucleus_cutoff`, the host sampler's top-p cutoff
(services/inference/sampling.py, `_nucleus_cutoff`), one row per thread; `nucleus_op` hands
it to the sampler once the library is loaded and checked (RWKV-4 nodes, which never load the
library, keep the torch version). Both operators run their rows on torch's own OpenMP
threads (the library links the libgomp that torch ships).

`attention_core_torch` is the same function in torch (the fallback, and the reference the
tests hold the kernel to). `load_kernel` compiles the C++ source with the system compiler
against this torch's headers into a cache directory keyed by the source, torch, the
compiler and the CPU's flags, loads it as a torch operator and checks it against the torch
version on random data; where any of that fails (no compiler, no headers, a wrong result) it
logs why once and returns None, and the callers use the torch version.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import structlog
import torch
from torch.nn import functional as F

__all__ = ["attention_core", "attention_core_torch", "kernel_cache_dir", "load_kernel",
           "nucleus_op"]

log = structlog.get_logger("avatario.inference.rwkv7_kernel")

DECAY_SCALE = -0.606531  # -exp(-0.5), the package's constant
LN_X_EPS = 64e-5
_NAMESPACE = "avatario_rwkv7"
_COMPILE_TIMEOUT_S = 300

_SOURCE = r"""
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <bit>
#include <functional>
#include <vector>

namespace {

// exp(x) in plain arithmetic, so loops over it vectorise (std::exp stays a scalar call):
// x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor series to r^6 (relative error
// below 1e-7), 2^n put straight into the exponent bits. x is clamped to [-87, 88], where
// float stays normal; sigmoid's use of it saturates there anyway.
inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = std::floor(x * 1.44269504f + 0.5f);
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
}

inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

struct Args {
  float* S;
  const float *R, *K, *V, *G, *WL, *AL, *VL, *VF, *V0, *W0, *A0, *KK, *KA, *RK, *LW, *LB;
  float* O;
  int64_t H, C;
  float eps, ds;
};

// One (row, head) pair u = b * H + h; NT is the head size where it is known at compile time
// (the loops then unroll into whole vectors), 0 where it is only known at run time (n).
template <int64_t NT>
void head_unit(const Args& A, int64_t u, int64_t n, float* __restrict buf) {
  const int64_t N = NT ? NT : n;
  const int64_t h = u % A.H, o = (u / A.H) * A.C + h * N, c0 = h * N;
  float *__restrict nkk = buf, *__restrict kka = nkk + N, *__restrict kf = kka + N;
  float *__restrict vv = kf + N, *__restrict ww = vv + N, *__restrict y = ww + N;
  const float *__restrict rr = A.R + o, *__restrict k0 = A.K + o, *__restrict v_ = A.V + o;
  const float *__restrict wl = A.WL + o, *__restrict al = A.AL + o;
  const float *__restrict w0 = A.W0 + c0, *__restrict a0 = A.A0 + c0, *__restrict kk = A.KK + c0;
  const float *__restrict ka = A.KA + c0;
  float ss = 0.f;
  for (int64_t j = 0; j < N; ++j) {
    const float t = k0[j] * kk[j];
    nkk[j] = t;
    ss += t * t;
  }
  const float inv = 1.0f / std::max(std::sqrt(ss), 1e-12f);
  for (int64_t j = 0; j < N; ++j) {
    const float a = sigmoid(a0[j] + al[j]);
    const float kn = nkk[j] * inv;
    nkk[j] = -kn;
    kka[j] = kn * a;
    kf[j] = k0[j] * (1.0f + (a - 1.0f) * ka[j]);
    ww[j] = fast_exp(A.ds * sigmoid(w0[j] + wl[j]));
  }
  if (A.VL != nullptr) {
    const float *__restrict vl = A.VL + o, *__restrict vf = A.VF + o, *__restrict v0 = A.V0 + c0;
    for (int64_t j = 0; j < N; ++j) vv[j] = v_[j] + (vf[j] - v_[j]) * sigmoid(v0[j] + vl[j]);
  } else {
    for (int64_t j = 0; j < N; ++j) vv[j] = v_[j];
  }
  float* __restrict s = A.S + u * N * N;
  float mean = 0.f;
  int64_t i = 0;
  for (; i + 4 <= N; i += 4) {  // four state rows at a time: independent reductions overlap
    float *__restrict r0 = s + i * N, *__restrict r1 = r0 + N, *__restrict r2 = r1 + N;
    float* __restrict r3 = r2 + N;
    float sa0 = 0.f, sa1 = 0.f, sa2 = 0.f, sa3 = 0.f;
#pragma omp simd reduction(+ : sa0, sa1, sa2, sa3)
    for (int64_t j = 0; j < N; ++j) {
      sa0 += r0[j] * nkk[j];
      sa1 += r1[j] * nkk[j];
      sa2 += r2[j] * nkk[j];
      sa3 += r3[j] * nkk[j];
    }
    const float v0 = vv[i], v1 = vv[i + 1], v2 = vv[i + 2], v3 = vv[i + 3];
    float y0 = 0.f, y1 = 0.f, y2 = 0.f, y3 = 0.f;
#pragma omp simd reduction(+ : y0, y1, y2, y3)
    for (int64_t j = 0; j < N; ++j) {
      const float t0 = r0[j] * ww[j] + sa0 * kka[j] + v0 * kf[j];
      const float t1 = r1[j] * ww[j] + sa1 * kka[j] + v1 * kf[j];
      const float t2 = r2[j] * ww[j] + sa2 * kka[j] + v2 * kf[j];
      const float t3 = r3[j] * ww[j] + sa3 * kka[j] + v3 * kf[j];
      r0[j] = t0;
      r1[j] = t1;
      r2[j] = t2;
      r3[j] = t3;
      y0 += t0 * rr[j];
      y1 += t1 * rr[j];
      y2 += t2 * rr[j];
      y3 += t3 * rr[j];
    }
    y[i] = y0;
    y[i + 1] = y1;
    y[i + 2] = y2;
    y[i + 3] = y3;
    mean += (y0 + y1) + (y2 + y3);
  }
  for (; i < N; ++i) {
    float* __restrict row = s + i * N;
    float sa = 0.f;
#pragma omp simd reduction(+ : sa)
    for (int64_t j = 0; j < N; ++j) sa += row[j] * nkk[j];
    const float vi = vv[i];
    float acc = 0.f;
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < N; ++j) {
      const float t = row[j] * ww[j] + sa * kka[j] + vi * kf[j];
      row[j] = t;
      acc += t * rr[j];
    }
    y[i] = acc;
    mean += acc;
  }
  mean /= static_cast<float>(N);
  float var = 0.f, bonus = 0.f;
  const float* __restrict rk = A.RK + c0;
  for (int64_t i = 0; i < N; ++i) {
    const float d = y[i] - mean;
    var += d * d;
    bonus += rr[i] * kf[i] * rk[i];
  }
  const float rstd = 1.0f / std::sqrt(var / static_cast<float>(N) + A.eps);
  const float *__restrict lw = A.LW + c0, *__restrict lb = A.LB + c0, *__restrict g = A.G + o;
  float* __restrict out = A.O + o;
  for (int64_t i = 0; i < N; ++i)
    out[i] = ((y[i] - mean) * rstd * lw[i] + lb[i] + bonus * vv[i]) * g[i];
}

void check(const at::Tensor& t, int64_t numel, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(),
              name, " must be a contiguous float32 CPU tensor");
  TORCH_CHECK(t.numel() == numel, name, " has ", t.numel(), " elements, expected ", numel);
}

// state [B, H, N, N] (updated in place); r k v g wl al [B, C]; vl v_first [B, C] or empty
// (layer 0); w0 a0 k_k k_a r_k ln_w ln_b [C], v0 [C] or empty. Returns out [B, C].
at::Tensor attention_core(at::Tensor state, at::Tensor r, at::Tensor k, at::Tensor v,
                          at::Tensor g, at::Tensor wl, at::Tensor al, at::Tensor vl,
                          at::Tensor v_first, at::Tensor w0, at::Tensor a0, at::Tensor v0,
                          at::Tensor k_k, at::Tensor k_a, at::Tensor r_k, at::Tensor ln_w,
                          at::Tensor ln_b, double eps, double decay_scale) {
  TORCH_CHECK(state.dim() == 4 && state.size(2) == state.size(3), "state must be [B, H, N, N]");
  const int64_t B = state.size(0), H = state.size(1), N = state.size(2), C = H * N;
  check(state, B * C * N, "state");
  for (auto* p : {&r, &k, &v, &g, &wl, &al}) check(*p, B * C, "a [B, C] input");
  if (vl.numel() > 0) {
    check(vl, B * C, "vl");
    check(v_first, B * C, "v_first");
    check(v0, C, "v0");
  }
  for (auto* p : {&w0, &a0, &k_k, &k_a, &r_k, &ln_w, &ln_b}) check(*p, C, "a [C] parameter");
  at::Tensor out = r.new_empty({B, C});
  const bool residual = vl.numel() > 0;
  Args A;
  A.S = state.data_ptr<float>();
  A.R = r.data_ptr<float>();
  A.K = k.data_ptr<float>();
  A.V = v.data_ptr<float>();
  A.G = g.data_ptr<float>();
  A.WL = wl.data_ptr<float>();
  A.AL = al.data_ptr<float>();
  A.VL = residual ? vl.data_ptr<float>() : nullptr;
  A.VF = residual ? v_first.data_ptr<float>() : nullptr;
  A.V0 = residual ? v0.data_ptr<float>() : nullptr;
  A.W0 = w0.data_ptr<float>();
  A.A0 = a0.data_ptr<float>();
  A.KK = k_k.data_ptr<float>();
  A.KA = k_a.data_ptr<float>();
  A.RK = r_k.data_ptr<float>();
  A.LW = ln_w.data_ptr<float>();
  A.LB = ln_b.data_ptr<float>();
  A.O = out.data_ptr<float>();
  A.H = H;
  A.C = C;
  A.eps = static_cast<float>(eps);
  A.ds = static_cast<float>(decay_scale);
  at::parallel_for(0, B * H, 4, [&A, N](int64_t begin, int64_t end) {
    std::vector<float> buf(6 * N);
    for (int64_t u = begin; u < end; ++u) {
      if (N == 64) {
        head_unit<64>(A, u, N, buf.data());
      } else {
        head_unit<0>(A, u, N, buf.data());
      }
    }
  });
  return out;
}

// Top-p cutoff per row of weights e [n, V] (float32 in [0, 1]) for a mass target [n]
// (float64): the weight at the first rank, in descending order, where the running mass
// reaches the target (services/inference/sampling.py, _nucleus_cutoff). A histogram of the
// mass over the weights' top bits (bin 0 = the heaviest) finds the bin where the mass crosses
// the target; only that bin's tokens are sorted. Rows are independent (one thread each).
// zero_below: also set the weights below the row's cutoff to 0 in place (the sampler's cut).
constexpr int kShift = 19;
// In descending order of c, the first value at which the running sum of c reaches `need`,
// found by a weighted quickselect (three-way partitions, expected linear time) instead of a
// sort; when nothing reaches it (rounding), the smallest value (keep them all); 0 if empty.
float weighted_select(std::vector<float>& c, double need) {
  if (c.empty()) return 0.f;
  float smallest = *std::min_element(c.begin(), c.end());
  auto lo = c.begin(), hi = c.end();
  while (lo != hi) {
    const float a = *lo, b = *(lo + (hi - lo) / 2), d = *(hi - 1);
    const float pivot = std::max(std::min(a, b), std::min(std::max(a, b), d));  // median of 3
    auto gt_end = std::partition(lo, hi, [pivot](float x) { return x > pivot; });
    auto eq_end = std::partition(gt_end, hi, [pivot](float x) { return x == pivot; });
    double gt = 0.0;
    for (auto it = lo; it != gt_end; ++it) gt += *it;
    if (gt >= need) {
      hi = gt_end;
      continue;
    }
    const double eq = static_cast<double>(pivot) * static_cast<double>(eq_end - gt_end);
    if (gt + eq >= need) return pivot;
    need -= gt + eq;
    lo = eq_end;
  }
  return smallest;
}
at::Tensor nucleus_cutoff(at::Tensor e, at::Tensor target, bool zero_below) {
  TORCH_CHECK(e.dim() == 2 && e.is_cpu() && e.scalar_type() == at::kFloat && e.is_contiguous(),
              "e must be a contiguous float32 CPU tensor [n, V]");
  const int64_t n = e.size(0), V = e.size(1);
  TORCH_CHECK(target.is_cpu() && target.scalar_type() == at::kDouble && target.is_contiguous()
              && target.numel() == n, "target must be a contiguous float64 CPU tensor [n]");
  at::Tensor out = e.new_empty({n});
  float* E = e.data_ptr<float>();
  const double* T = target.data_ptr<double>();
  float* O = out.data_ptr<float>();
  const int32_t top = std::bit_cast<int32_t>(1.0f) >> kShift;
  const int64_t nbins = top + 1;
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    // four interleaved histograms: consecutive tokens often share a bin, and one histogram
    // would chain every add to the previous one through memory
    std::vector<double> mass4(4 * nbins);
    std::vector<float> cand;
    for (int64_t r = begin; r < end; ++r) {
      const float* row = E + r * V;
      const int32_t* bits = reinterpret_cast<const int32_t*>(row);
      std::fill(mass4.begin(), mass4.end(), 0.0);
      double* m0 = mass4.data();
      int64_t i = 0;
      // the bin of a weight; anything outside [0, 1] (NaN, negative) lands in the last bin,
      // never outside the histogram
      const auto bin = [top](int32_t b) -> int64_t {
        return std::min<uint32_t>(static_cast<uint32_t>(top - (b >> kShift)),
                                  static_cast<uint32_t>(top));
      };
      for (; i + 4 <= V; i += 4) {
        m0[bin(bits[i])] += row[i];
        m0[nbins + bin(bits[i + 1])] += row[i + 1];
        m0[2 * nbins + bin(bits[i + 2])] += row[i + 2];
        m0[3 * nbins + bin(bits[i + 3])] += row[i + 3];
      }
      for (; i < V; ++i) m0[bin(bits[i])] += row[i];
      const double want = T[r];
      double above = 0.0;
      int64_t k = 0;
      for (;; ++k) {
        const double m = m0[k] + m0[nbins + k] + m0[2 * nbins + k] + m0[3 * nbins + k];
        if (k == nbins - 1 || above + m >= want) break;
        above += m;
      }
      // bin k holds the weights whose top bits are top - k: one integer range of the bits
      const int32_t lo = (top - static_cast<int32_t>(k)) << kShift, hi = lo + (1 << kShift);
      cand.clear();
      for (int64_t j = 0; j < V; ++j)
        if (bits[j] >= lo && bits[j] < hi) cand.push_back(row[j]);
      const float cut = weighted_select(cand, want - above);
      O[r] = cut;
      if (zero_below) {  // the sampler's cut, while the row is still in cache
        float* w = E + r * V;
        for (int64_t j = 0; j < V; ++j) w[j] = w[j] < cut ? 0.f : w[j];
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(avatario_rwkv7, m) {
  m.def("nucleus_cutoff(Tensor(a!) e, Tensor target, bool zero_below) -> Tensor");
  m.def("attention_core(Tensor(a!) state, Tensor r, Tensor k, Tensor v, Tensor g, Tensor wl, "
        "Tensor al, Tensor vl, Tensor v_first, Tensor w0, Tensor a0, Tensor v0, Tensor k_k, "
        "Tensor k_a, Tensor r_k, Tensor ln_w, Tensor ln_b, float eps, float decay_scale) "
        "-> Tensor");
}

TORCH_LIBRARY_IMPL(avatario_rwkv7, CPU, m) {
  m.impl("attention_core", &attention_core);
  m.impl("nucleus_cutoff", &nucleus_cutoff);
}
"""

_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
          "-std=c++20", "-shared",
          "-fPIC", "-w"]


def attention_core_torch(state: torch.Tensor, r: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         g: torch.Tensor, wl: torch.Tensor, al: torch.Tensor,
                         vl: torch.Tensor | None, v_first: torch.Tensor | None, p: Any
                         ) -> torch.Tensor:
    """The attention core in torch for rows [B, C] and the float32 state [B, H, N, N]
    (updated in place); `p` holds the layer's w0 a0 v0 k_k k_a r_k ln_x (as `_Layer7` does).
    Works in any dtype (the state stays float32, as in the package)."""
    rows, h, n = state.shape[0], state.shape[1], state.shape[2]
    a = torch.sigmoid(p.a0 + al)
    kk = F.normalize((k * p.k_k).view(rows, h, n), dim=-1, p=2.0).view(rows, h * n)
    k = k * (1 + (a - 1) * p.k_a)
    if vl is not None:
        assert v_first is not None
        v = v + (v_first - v) * torch.sigmoid(p.v0 + vl)
    w = torch.exp(DECAY_SCALE * torch.sigmoid((p.w0 + wl).float()))
    y = wkv_torch(state, r, w, k, v, -kk, kk * a)
    y = F.group_norm(y, h, weight=p.ln_x[0], bias=p.ln_x[1], eps=LN_X_EPS)
    bonus = (r * k * p.r_k).view(rows, h, n).sum(dim=-1, keepdim=True) * v.view(rows, h, n)
    return (y + bonus.view(rows, h * n)) * g


def wkv_torch(s: torch.Tensor, r: torch.Tensor, w: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor, nkk: torch.Tensor, kka: torch.Tensor) -> torch.Tensor:
    """One token for rows of the float32 state s [R, H, N, N] (updated in place):
    S = S * w + (S @ -kk)(kk * a)^T + v k^T, then the readout S @ r [R, C]. The package
    writes the middle term as `S @ ab` with the rank-one `ab = -kk (kk * a)^T`; the product
    is the same, computed without forming the N x N matrix."""
    rows, h, n = s.shape[0], s.shape[1], s.shape[2]
    sa = torch.matmul(s, nkk.float().view(rows, h, n, 1))  # from the old state
    s.mul_(w.view(rows, h, 1, n))
    s.addcmul_(sa, kka.float().view(rows, h, 1, n))
    s.addcmul_(v.float().view(rows, h, n, 1), k.float().view(rows, h, 1, n))
    st = s if r.dtype == torch.float32 else s.to(dtype=r.dtype)
    return torch.matmul(st, r.view(rows, h, n, 1)).view(rows, h * n)


def attention_core(op: Any, state: torch.Tensor, r: torch.Tensor, k: torch.Tensor,
                   v: torch.Tensor, g: torch.Tensor, wl: torch.Tensor, al: torch.Tensor,
                   vl: torch.Tensor | None, v_first: torch.Tensor | None, p: Any) -> torch.Tensor:
    """`attention_core_torch` through the compiled operator `op` (from `load_kernel`):
    float32 CPU tensors only."""
    empty = _EMPTY
    return op(state, r, k, v, g, wl, al, empty if vl is None else vl,
              empty if v_first is None or vl is None else v_first, p.w0, p.a0,
              empty if p.v0 is None else p.v0, p.k_k, p.k_a, p.r_k, p.ln_x[0], p.ln_x[1],
              LN_X_EPS, DECAY_SCALE)


_EMPTY = torch.empty(0)


def kernel_cache_dir() -> Path:
    """Where built kernels are kept: ~/.cache/avatario/kernels, or the temporary directory
    where the home directory is not writable."""
    home = Path.home() / ".cache" / "avatario" / "kernels"
    try:
        home.mkdir(parents=True, exist_ok=True)
        if os.access(home, os.W_OK):
            return home
    except OSError:
        pass
    tmp = Path(tempfile.gettempdir()) / "avatario-kernels"
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(compiler: str, cache: Path) -> Path:
    """The shared library for this source, torch, compiler and CPU: built once (atomically,
    so concurrent processes never load a half-written file), then reused."""
    from torch.utils import cpp_extension  # noqa: PLC0415 - only where a kernel is built

    lib_dir = Path(torch.__file__).parent / "lib"
    includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}"
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                             timeout=30, check=True).stdout.splitlines()[0]
    key = hashlib.sha256("\n".join([_SOURCE, torch.__version__, version, " ".join(_FLAGS), abi,
                                    platform.machine(), _cpu_flags()]).encode()).hexdigest()[:16]
    target = cache / f"rwkv7_attention_{key}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache) as d:
        src = Path(d) / "rwkv7_attention.cpp"
        src.write_text(_SOURCE)
        out = Path(d) / target.name
        cmd = [compiler, *_FLAGS, abi, *includes, str(src), "-o", str(out), f"-L{lib_dir}",
               "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{lib_dir}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} exited {done.returncode}: {done.stderr[-600:]}")
        os.replace(out, target)
    return target


@functools.cache
def load_kernel(compiler: str = "c++") -> Any | None:
    """The compiled `attention_core` operator, or None (logged once) where it cannot be
    built, loaded or does not agree with `attention_core_torch`."""
    try:
        if shutil.which(compiler) is None:
            raise RuntimeError(f"no C++ compiler {compiler!r} on PATH")
        if not hasattr(torch.ops, _NAMESPACE) or not hasattr(getattr(torch.ops, _NAMESPACE),
                                                             "attention_core"):
            torch.ops.load_library(str(_build(compiler, kernel_cache_dir())))
        op = torch.ops.avatario_rwkv7.attention_core
        problem = self_check(op) or nucleus_self_check(torch.ops.avatario_rwkv7.nucleus_cutoff)
    except Exception as exc:  # noqa: BLE001 - any failure means: use the torch version
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        log.warning("rwkv7_kernel_unavailable", reason=problem[:800],
                    fallback="torch operations (slower decode on the CPU)")
        return None
    log.info("rwkv7_kernel_ready")
    _READY.append(torch.ops.avatario_rwkv7.nucleus_cutoff)
    return op


_READY: list[Any] = []


def nucleus_op() -> Any | None:
    """The compiled top-p cutoff operator once `load_kernel` has built, loaded and checked
    the library in this process, else None. Never compiles: the sampler asks on every step."""
    return _READY[0] if _READY else None


def nucleus_self_check(op: Any) -> str:
    """'' when the compiled top-p cutoff equals the cutoff by definition (sort, float64 sums)
    on flat, peaked, tied and sparse rows, else what differs."""
    from services.inference.sampling import _row_totals, sorted_cutoff  # noqa: PLC0415

    g = torch.Generator().manual_seed(11)
    rows = [torch.randn(3000, generator=g) * scale for scale in (0.5, 2.0, 8.0)]
    rows.append(torch.full((3000,), -1.0).index_fill_(0, torch.tensor([5, 9]), 0.0))
    rows.append(torch.full((3000,), -80.0).index_fill_(0, torch.tensor([7]), 0.0))
    t = torch.stack(rows)
    e = (t - t.amax(dim=1, keepdim=True)).exp()
    for top_p in (0.05, 0.5, 0.7, 0.99):
        target = torch.full((len(rows),), top_p, dtype=torch.float64) * _row_totals(e)
        if not torch.equal(op(e, target, False), sorted_cutoff(e, target)):
            return f"the top-p kernel differs from the sorted cutoff at top_p={top_p}"
    return ""


class _Params:
    __slots__ = ("w0", "a0", "v0", "k_k", "k_a", "r_k", "ln_x")

    def __init__(self, c: int, g: torch.Generator, residual: bool) -> None:
        def rnd(scale: float = 1.0) -> torch.Tensor:
            return torch.randn(c, generator=g) * scale

        self.w0, self.a0, self.k_k, self.k_a, self.r_k = rnd(), rnd(), rnd(), rnd(0.5), rnd()
        self.v0 = rnd() if residual else None
        self.ln_x = (rnd(), rnd())


def self_check(op: Any, rows: int = 3, heads: int = 2, n: int = 16) -> str:
    """'' when `op` agrees with `attention_core_torch` on random data (both layer kinds),
    else what differs."""
    g = torch.Generator().manual_seed(7)
    c = heads * n
    for residual in (False, True):
        p = _Params(c, g, residual)
        x = [torch.randn(rows, c, generator=g) for _ in range(8)]
        r, k, v, gate, wl, al, vl, vf = x
        s = torch.randn(rows, heads, n, n, generator=g)
        s2 = s.clone()
        want = attention_core_torch(s, r, k, v, gate, wl, al, vl if residual else None,
                                    vf if residual else None, p)
        got = attention_core(op, s2, r, k, v, gate, wl, al, vl if residual else None,
                             vf if residual else None, p)
        err = max(float((got - want).abs().max()), float((s2 - s).abs().max()))
        if not err <= 1e-4:
            return f"the kernel differs from the torch version by {err:g} (residual={residual})"
    return ""
