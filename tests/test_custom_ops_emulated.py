"""The AVX-512 and AVX2 inner loops, run under emulation (SIMDe) against the scalar path.

The machines the tests run on may lack AVX-512 (or AVX2), so the compiled-op tests can only
compare the paths this CPU has. This test compiles ``binary_kernels.cc`` (it has no TensorFlow
dependency) with the SIMD intrinsics emulated in portable C by the SIMDe headers
(``apt-get install libsimde-dev``) and checks every path against a direct popcount reference:
the blocked GEMM (tile edges, reduction chunks, uneven thread splits) and float32 packing.
Skipped where the compiler does not find the SIMDe headers.
"""

import subprocess
from pathlib import Path

import pytest

from tfcompress.kernels.tf import build as _build

KERNELS = Path(_build.__file__).resolve().parent / "binary_kernels.cc"

CHECK = r"""
// Checks the AVX-512 and AVX2 paths of binary_kernels.cc under SIMDe emulation against generic.
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#define TFC_EMULATED_SIMD 1
// Shims for what SIMDe 0.7.4 lacks (same semantics as the Intel intrinsics).
#ifndef __mmask16
#define __mmask16 simde__mmask16
#endif
#ifndef _mm512_shuffle_i64x2
#define _mm512_shuffle_i64x2(a, b, imm) simde_mm512_shuffle_i32x4(a, b, imm)
#endif
#ifndef _mm512_maskz_loadu_ps
static inline simde__m512 _mm512_maskz_loadu_ps(simde__mmask16 k, const float* p) {
  float buf[16];  // only the selected lanes are read, like the masked load
  for (int i = 0; i < 16; ++i) buf[i] = (k >> i) & 1 ? p[i] : 0.0f;
  return simde_mm512_loadu_ps(buf);
}
#endif
#include BINARY_KERNELS
#include <cmath>
#include <cstdio>
#include <random>
using namespace tfcompress::kernels;
int main() {
  std::mt19937_64 g(7);
  ParallelFor serial = [](int64_t n, int64_t, const std::function<void(int64_t, int64_t)>& f) {
    // uneven split, like a thread pool would do
    f(0, n / 3); f(n / 3, n);
  };
  int64_t shapes[][3] = {{7, 37, 5}, {1, 100, 9}, {13, 333, 11}, {5, 40001, 6}, {9, 70000, 3},
                         {33, 4100, 17}, {4, 64, 4}, {130, 257, 131}, {3, 0, 2}, {300, 520, 260}};
  int fails = 0;
  for (auto& sh : shapes) {
    int64_t m = sh[0], k = sh[1], n = sh[2];
    std::vector<float> ref_out;
    for (Isa isa : {Isa::kGeneric, Isa::kPopcnt, Isa::kAvx2, Isa::kAvx512}) {
      const int64_t lp = RowWords(isa, k), kw = (k + 63) / 64;
      std::mt19937_64 g2(k * 31 + m);
      std::vector<u64> a(m * lp + 1, 0), b(n * lp + 1, 0);
      for (int64_t r = 0; r < m; ++r) for (int64_t w = 0; w < kw; ++w) a[r * lp + w] = g2();
      for (int64_t r = 0; r < n; ++r) for (int64_t w = 0; w < kw; ++w) b[r * lp + w] = g2();
      if (k % 64) { for (int64_t r = 0; r < m; ++r) a[r*lp+kw-1] &= ~0ull >> (64 - k % 64);
                    for (int64_t r = 0; r < n; ++r) b[r*lp+kw-1] &= ~0ull >> (64 - k % 64); }
      std::vector<int64_t> base(m); for (int64_t i = 0; i < m; ++i) base[i] = k + i;
      std::vector<float> out(m * n, -1e9f);
      std::vector<int32_t> outi(m * n, -7);
      PopcountGemm(isa, a.data(), m, b.data(), n, lp, base.data(), 0, out.data(), serial);
      PopcountGemm(isa, a.data(), m, b.data(), n, lp, nullptr, k, outi.data(), serial);
      // direct reference
      bool ok = true;
      for (int64_t i = 0; i < m && ok; ++i) for (int64_t j = 0; j < n; ++j) {
        int64_t pc = 0; for (int64_t w = 0; w < kw; ++w) pc += __builtin_popcountll(a[i*lp+w]^b[j*lp+w]);
        if (out[i*n+j] != (float)(k + i - 2*pc) || outi[i*n+j] != k - 2*pc) { ok = false; break; }
      }
      printf("gemm %-16s m=%lld k=%lld n=%lld %s\n", IsaName(isa), (long long)m, (long long)k, (long long)n, ok ? "ok" : "WRONG");
      fails += !ok;
    }
  }
  // float packing
  std::uniform_real_distribution<float> u(-2, 2);
  for (int64_t k : {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 257}) {
    for (int strict = 0; strict < 2; ++strict) {
      std::vector<float> row(k);
      for (auto& v : row) v = strict ? (u(g) < 0 ? -1.f : 1.f) : u(g);
      if (k > 3) { row[1] = 0.0f; row[2] = -0.0f; row[3] = NAN; }
      if (strict && k > 5) row[k - 2] = 0.5f;
      const int64_t w32 = (k + 31) / 32;
      std::vector<uint32_t> ref(w32 + 1, 0xdead), got(w32 + 1, 0xdead);
      int64_t rbad = PackRowF32(Isa::kGeneric, row.data(), k, strict, ref.data(), w32);
      for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
        std::fill(got.begin(), got.end(), 0xdead);
        int64_t bad = PackRowF32(isa, row.data(), k, strict, got.data(), w32);
        bool ok = bad == rbad && got == ref;
        if (!ok) { printf("pack %s k=%lld strict=%d WRONG (bad %lld vs %lld)\n", IsaName(isa), (long long)k, strict, (long long)bad, (long long)rbad); ++fails; }
      }
    }
  }
  printf("%s\n", fails ? "FAILURES" : "all emulated paths agree");
  return fails != 0;
}
"""


def test_vector_paths_agree_under_emulation(tmp_path):
    cxx = _build._compiler()
    if cxx is None:
        pytest.skip("no C++ compiler")
    source = tmp_path / "emu_check.cc"
    source.write_text(CHECK)
    binary = tmp_path / "emu_check"
    cmd = [cxx, "-O1", "-std=c++17", "-w", f'-DBINARY_KERNELS="{KERNELS}"', str(source), "-o"]
    proc = subprocess.run([*cmd, str(binary)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and "simde/x86/avx512.h" in proc.stderr:
        pytest.skip("SIMDe headers not installed (libsimde-dev)")
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:]
    assert "all emulated paths agree" in run.stdout
    assert run.stdout.count(" ok\n") == 40  # 10 shapes x 4 paths
