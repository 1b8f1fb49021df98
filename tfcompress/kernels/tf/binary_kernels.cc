// tfcompress packed-binary inner loops, one per instruction set, with no TensorFlow dependency
// (the ops are in binary_ops.cc, which declares what it uses from here; both go into one library).
//
// Paths, chosen at run time from CPUID (BestIsa) or forced by the ops' "isa" attribute:
//   avx512: VPOPCNTQ on 512-bit XORs, 4x4 output tiles (16 zmm accumulators);
//   avx2:   nibble-lookup popcount (VPSHUFB) on 256-bit XORs, 1x4 tiles, byte counters;
//   popcnt: scalar POPCNT, 2x4 tiles (fits the 16 general registers without spilling);
//   generic: the same C++ without the POPCNT instruction.
// Each path is compiled with a per-function target attribute and the library without -march,
// so one build runs on every x86-64 CPU. All paths compute exact integer counts, so their
// results are bit-identical.
//
// TFC_EMULATED_SIMD (never set by build.py): compile the vector paths against emulated intrinsics
// (SIMDe headers included first) to check them on a CPU that lacks the instructions.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#define TFC_X86 1
#endif

#if defined(TFC_EMULATED_SIMD)
#define TFC_TARGET(isa)
#elif defined(TFC_X86)
#include <immintrin.h>
#define TFC_TARGET(isa) __attribute__((target(isa)))
#endif

namespace tfcompress {
namespace kernels {

typedef uint64_t u64;

// Keep in sync with the declarations in binary_ops.cc.
enum class Isa { kGeneric = 0, kPopcnt = 1, kAvx2 = 2, kAvx512 = 3 };
typedef std::function<void(int64_t, int64_t, const std::function<void(int64_t, int64_t)>&)>
    ParallelFor;

// ---------------------------------------------------------------------------------------------
// ISA selection.

bool CpuSupports(Isa isa) {
#if defined(TFC_EMULATED_SIMD)
  return true;
#elif defined(TFC_X86)
  // libgcc's check includes the OS support for the wider register state (XGETBV).
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vpopcntdq");
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2");
    case Isa::kPopcnt:
      return __builtin_cpu_supports("popcnt");
    default:
      return true;
  }
#else
  return isa == Isa::kGeneric;
#endif
}

Isa BestIsa() {
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kPopcnt})
    if (CpuSupports(isa)) return isa;
  return Isa::kGeneric;
}

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512_vpopcntdq";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kPopcnt:
      return "popcnt";
    default:
      return "generic";
  }
}

// Words per vector of the path: normalised rows are padded with zero words to a multiple.
static int64_t AlignWords(Isa isa) {
  return isa == Isa::kAvx512 ? 8 : isa == Isa::kAvx2 ? 4 : 1;
}

int64_t RowWords(Isa isa, int64_t k) {
  const int64_t words = (k + 63) / 64, align = AlignWords(isa);
  return (words + align - 1) / align * align;
}

// ---------------------------------------------------------------------------------------------
// Micro-kernels. Tile<R, C>(a, b, s, kw, pc): pc[r * C + c] = popcount(a_r ^ b_c) over kw words,
// with the R rows of a and the C rows of b at a stride of s words in the path's packed layout.

static void CopyRows(const u64* src, int64_t src_stride, int64_t rows, int64_t k0, int64_t kw,
                     u64* dst) {
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(dst + r * kw, src + r * src_stride + k0, kw * sizeof(u64));
}

#define TFC_SCALAR_KERNEL(NAME, ATTR)                                                         \
  struct NAME {                                                                               \
    static constexpr int kRows = 2, kCols = 4, kSplit = 1, kAlign = 1;                        \
    template <int R, int C>                                                                   \
    ATTR static void Tile(const u64* a, const u64* b, int64_t s, int64_t kw, int64_t* pc) {   \
      u64 acc[R][C] = {};                                                                     \
      for (int64_t w = 0; w < kw; ++w) {                                                      \
        u64 av[R];                                                                            \
        for (int r = 0; r < R; ++r) av[r] = a[r * s + w];                                     \
        for (int c = 0; c < C; ++c) {                                                         \
          const u64 bc = b[c * s + w];                                                        \
          for (int r = 0; r < R; ++r) acc[r][c] += __builtin_popcountll(av[r] ^ bc);          \
        }                                                                                     \
      }                                                                                       \
      for (int r = 0; r < R; ++r)                                                             \
        for (int c = 0; c < C; ++c) pc[r * C + c] = static_cast<int64_t>(acc[r][c]);          \
    }                                                                                         \
    static void Pack(const u64* src, int64_t stride, int64_t rows, int64_t k0, int64_t kw,    \
                     u64* dst) {                                                              \
      CopyRows(src, stride, rows, k0, kw, dst);                                               \
    }                                                                                         \
  };

TFC_SCALAR_KERNEL(GenericKernel, )
#if defined(TFC_X86)
TFC_SCALAR_KERNEL(PopcntKernel, TFC_TARGET("popcnt"))
#endif

#if defined(TFC_X86)
#define TFC_AVX2 TFC_TARGET("avx2")
#define TFC_AVX512 TFC_TARGET("avx512f,avx512bw,avx512vpopcntdq")

// AVX2 has no vector popcount: a byte's count is LUT[low nibble] + LUT[high nibble], looked up
// 32 bytes at a time with VPSHUFB. Rows are packed "split": every 4 words become a vector of their
// low nibbles then a vector of their high nibbles, since (a ^ b) & 0xF = (a & 0xF) ^ (b & 0xF).
// That takes the shift and the two masks out of the inner loop (6 instead of 8 vector
// instructions per 256-bit pair); the split is done once per block, reused across the tiles.
struct Avx2Kernel {
  static constexpr int kRows = 1, kCols = 4, kSplit = 2, kAlign = 4;
  // Byte counters take <= 8 per step (two lookups of <= 4), so 31 steps stay below 256.
  static constexpr int64_t kByteSteps = 31;

  TFC_AVX2 static inline __m256i Lut() {
    return _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3,
                            1, 2, 2, 3, 2, 3, 3, 4);
  }

  TFC_AVX2 static inline int64_t Sum64(__m256i v) {
    const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
  }

  // One A row against C B rows: 1xC keeps all accumulators and operands in the 16 ymm registers
  // (2xC spills and measured slower on Zen 3); B is streamed through memory operands.
  template <int R, int C>
  TFC_AVX2 static void Tile(const u64* a, const u64* b, int64_t s, int64_t kw, int64_t* pc) {
    const __m256i lut = Lut(), zero = _mm256_setzero_si256();
    const int64_t steps = kw / 4;
    __m256i total[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) total[r][c] = zero;
    for (int64_t v0 = 0; v0 < steps; v0 += kByteSteps) {
      const int64_t v1 = std::min(steps, v0 + kByteSteps);
      __m256i acc[R][C];
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) acc[r][c] = zero;
      for (int64_t v = v0; v < v1; ++v) {
        __m256i lo[R], hi[R];
        for (int r = 0; r < R; ++r) {
          lo[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + r * s + 8 * v));
          hi[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + r * s + 8 * v + 4));
        }
        for (int c = 0; c < C; ++c) {
          const u64* bc = b + c * s + 8 * v;
          const __m256i bl = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bc));
          const __m256i bh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bc + 4));
          for (int r = 0; r < R; ++r) {
            acc[r][c] = _mm256_add_epi8(
                acc[r][c], _mm256_shuffle_epi8(lut, _mm256_xor_si256(lo[r], bl)));
            acc[r][c] = _mm256_add_epi8(
                acc[r][c], _mm256_shuffle_epi8(lut, _mm256_xor_si256(hi[r], bh)));
          }
        }
      }
      // Widen the byte counters: VPSADBW against zero sums each 8 bytes into a 64-bit lane.
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c)
          total[r][c] = _mm256_add_epi64(total[r][c], _mm256_sad_epu8(acc[r][c], zero));
    }
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) pc[r * C + c] = Sum64(total[r][c]);
  }

  TFC_AVX2 static void Pack(const u64* src, int64_t stride, int64_t rows, int64_t k0, int64_t kw,
                            u64* dst) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t r = 0; r < rows; ++r) {
      const u64* in = src + r * stride + k0;
      u64* out = dst + r * 2 * kw;
      for (int64_t v = 0; v < kw / 4; ++v) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + 4 * v));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8 * v), _mm256_and_si256(x, m4));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8 * v + 4),
                            _mm256_and_si256(_mm256_srli_epi16(x, 4), m4));
      }
    }
  }
};

struct Avx512Kernel {
  static constexpr int kRows = 4, kCols = 4, kSplit = 1, kAlign = 8;

  // Four horizontal sums at once: two unpack/add levels inside 128-bit lanes, then 128-bit lane
  // shuffles; about a third of the instructions of four full reductions.
  TFC_AVX512 static inline void Sum4(const __m512i* acc, int64_t* out) {
    const __m512i t0 = _mm512_add_epi64(_mm512_unpacklo_epi64(acc[0], acc[1]),
                                        _mm512_unpackhi_epi64(acc[0], acc[1]));
    const __m512i t1 = _mm512_add_epi64(_mm512_unpacklo_epi64(acc[2], acc[3]),
                                        _mm512_unpackhi_epi64(acc[2], acc[3]));
    // u = [c0 c1 | c0' c1' | c2 c3 | c2' c3'] with each pair summed over half of the lanes.
    const __m512i u = _mm512_add_epi64(_mm512_shuffle_i64x2(t0, t1, 0x88),
                                       _mm512_shuffle_i64x2(t0, t1, 0xDD));
    const __m512i v = _mm512_add_epi64(u, _mm512_shuffle_i64x2(u, u, 0xB1));
    alignas(64) int64_t lanes[8];
    _mm512_store_si512(lanes, v);
    out[0] = lanes[0];
    out[1] = lanes[1];
    out[2] = lanes[4];
    out[3] = lanes[5];
  }

  template <int R, int C>
  TFC_AVX512 static void Tile(const u64* a, const u64* b, int64_t s, int64_t kw, int64_t* pc) {
    static_assert(C == 4, "Sum4 reduces four columns");
    __m512i acc[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_si512();
    for (int64_t w = 0; w < kw; w += 8) {
      __m512i va[R], vb[C];
      for (int r = 0; r < R; ++r) va[r] = _mm512_loadu_si512(a + r * s + w);
      for (int c = 0; c < C; ++c) vb[c] = _mm512_loadu_si512(b + c * s + w);
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c)
          acc[r][c] =
              _mm512_add_epi64(acc[r][c], _mm512_popcnt_epi64(_mm512_xor_si512(va[r], vb[c])));
    }
    for (int r = 0; r < R; ++r) Sum4(acc[r], pc + r * C);
  }

  static void Pack(const u64* src, int64_t stride, int64_t rows, int64_t k0, int64_t kw,
                   u64* dst) {
    CopyRows(src, stride, rows, k0, kw, dst);
  }
};
#endif  // TFC_X86

// ---------------------------------------------------------------------------------------------
// Blocked popcount GEMM: out[i, j] = base_i - 2 * popcount(A_i ^ B_j).
//
// A [m, lp] and B [n, lp] are normalised rows (lp = RowWords(isa, k), zero padded). Work units
// are (block of A rows) x (block of B rows), sharded over the thread pool. Inside a unit, per
// chunk of the reduction: the A block is packed once into a thread-local buffer sized for L2,
// then for each group of C B rows (packed into an L1 buffer) every A row (R at a time) is swept,
// so each loaded B vector is reused across R rows and each A vector across C rows.

template <class K, typename OutT>
static void BlockedGemm(const u64* a, int64_t m, const u64* b, int64_t n, int64_t lp,
                        const int64_t* base_rows, int64_t base_const, OutT* out,
                        const ParallelFor& parallel_for) {
  constexpr int R = K::kRows, C = K::kCols, F = K::kSplit, kAlign = K::kAlign;
  // Reduction chunk: the C packed B rows of a group take at most 16 KiB (half an L1).
  const int64_t kc_max = std::max<int64_t>(kAlign, (16 * 1024 / (C * F * 8)) / kAlign * kAlign);
  const int64_t kc = std::max<int64_t>(std::min(lp, kc_max), kAlign);
  // The packed A block takes ~128 KiB, well inside L2 on the CPUs we target.
  const int64_t row_bytes = kc * F * 8;
  const int64_t mb = std::min((m + R - 1) / R * R,
                              std::max<int64_t>(R, (128 * 1024 / row_bytes) / R * R));
  const int64_t nb = std::min((n + C - 1) / C * C, std::max<int64_t>(C, 256 / C * C));
  const int64_t m_blocks = (m + mb - 1) / mb, n_blocks = (n + nb - 1) / nb;
  const bool chunked = kc < lp;
  auto work = [&](int64_t begin, int64_t end) {
    std::vector<u64> abuf(static_cast<size_t>(mb * kc * F)), bbuf(static_cast<size_t>(C * kc * F));
    std::vector<int64_t> sums(chunked ? static_cast<size_t>(mb * nb) : 0);
    int64_t pc[R * C];
    for (int64_t u = begin; u < end; ++u) {
      const int64_t i0 = (u / n_blocks) * mb, mi = std::min(m, i0 + mb) - i0;
      const int64_t j0 = (u % n_blocks) * nb, nj = std::min(n, j0 + nb) - j0;
      if (chunked) std::fill(sums.begin(), sums.end(), 0);
      for (int64_t k0 = 0; k0 == 0 || k0 < lp; k0 += kc) {  // once for k = 0: out = base
        const int64_t kw = std::min(kc, lp - k0), s = kw * F;
        K::Pack(a + i0 * lp, lp, mi, k0, kw, abuf.data());
        for (int64_t jc = 0; jc < nj; jc += C) {
          const int64_t cols = std::min<int64_t>(C, nj - jc);
          // Missing columns at the edge are zero rows: computed, never written.
          K::Pack(b + (j0 + jc) * lp, lp, cols, k0, kw, bbuf.data());
          if (cols < C) std::memset(bbuf.data() + cols * s, 0, (C - cols) * s * sizeof(u64));
          for (int64_t ir = 0; ir < mi;) {
            const int rows = mi - ir >= R ? R : 1;
            if (rows == R)
              K::template Tile<R, C>(abuf.data() + ir * s, bbuf.data(), s, kw, pc);
            else
              K::template Tile<1, C>(abuf.data() + ir * s, bbuf.data(), s, kw, pc);
            for (int r = 0; r < rows; ++r) {
              const int64_t i = i0 + ir + r;
              if (chunked) {
                int64_t* row = sums.data() + (ir + r) * nb + jc;
                for (int64_t c = 0; c < cols; ++c) row[c] += pc[r * C + c];
              } else {
                const int64_t base = base_rows ? base_rows[i] : base_const;
                OutT* orow = out + i * n + j0 + jc;
                for (int64_t c = 0; c < cols; ++c)
                  orow[c] = static_cast<OutT>(base - 2 * pc[r * C + c]);
              }
            }
            ir += rows;
          }
        }
      }
      if (chunked) {
        for (int64_t r = 0; r < mi; ++r) {
          const int64_t base = base_rows ? base_rows[i0 + r] : base_const;
          OutT* orow = out + (i0 + r) * n + j0;
          for (int64_t c = 0; c < nj; ++c)
            orow[c] = static_cast<OutT>(base - 2 * sums[r * nb + c]);
        }
      }
    }
  };
  parallel_for(m_blocks * n_blocks, std::max<int64_t>(1, mb * nb * std::max<int64_t>(lp, 1)),
               work);
}

template <typename OutT>
static void Gemm(Isa isa, const u64* a, int64_t m, const u64* b, int64_t n, int64_t lp,
                 const int64_t* base_rows, int64_t base_const, OutT* out,
                 const ParallelFor& parallel_for) {
  if (m == 0 || n == 0) return;
#if defined(TFC_X86)
  if (isa == Isa::kAvx512)
    return BlockedGemm<Avx512Kernel>(a, m, b, n, lp, base_rows, base_const, out, parallel_for);
  if (isa == Isa::kAvx2)
    return BlockedGemm<Avx2Kernel>(a, m, b, n, lp, base_rows, base_const, out, parallel_for);
  if (isa == Isa::kPopcnt)
    return BlockedGemm<PopcntKernel>(a, m, b, n, lp, base_rows, base_const, out, parallel_for);
#endif
  BlockedGemm<GenericKernel>(a, m, b, n, lp, base_rows, base_const, out, parallel_for);
}

void PopcountGemm(Isa isa, const u64* a, int64_t m, const u64* b, int64_t n, int64_t lp,
                  const int64_t* base_rows, int64_t base_const, float* out,
                  const ParallelFor& parallel_for) {
  Gemm(isa, a, m, b, n, lp, base_rows, base_const, out, parallel_for);
}

void PopcountGemm(Isa isa, const u64* a, int64_t m, const u64* b, int64_t n, int64_t lp,
                  const int64_t* base_rows, int64_t base_const, int32_t* out,
                  const ParallelFor& parallel_for) {
  Gemm(isa, a, m, b, n, lp, base_rows, base_const, out, parallel_for);
}

// ---------------------------------------------------------------------------------------------
// Packing float32 rows: bit j = (row[j] < 0), so NaN, +0 and -0 pack as +1. Returns the first
// index that is not exactly +-1 when strict, else -1. Tails load zeros (0 < 0 is false), so the
// padding bits of the last word are 0.

static int64_t ScalarPackRowF32(const float* row, int64_t k, bool strict, uint32_t* dst32,
                                int64_t words32) {
  int64_t bad = -1;
  for (int64_t w = 0; w < words32; ++w) {
    uint32_t word = 0;
    const int64_t j0 = w * 32, j1 = std::min(k, j0 + 32);
    for (int64_t j = j0; j < j1; ++j) {
      const float v = row[j];
      if (strict && bad < 0 && v != 1.0f && v != -1.0f) bad = j;
      word |= static_cast<uint32_t>(v < 0.0f) << (j - j0);
    }
    dst32[w] = word;
  }
  return bad;
}

#if defined(TFC_X86)
TFC_AVX512 static int64_t Avx512PackRowF32(const float* row, int64_t k, bool strict,
                                           uint32_t* dst32, int64_t words32) {
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f),
               minus_one = _mm512_set1_ps(-1.0f);
  int64_t bad = -1;
  for (int64_t w = 0; w < words32; ++w) {
    uint32_t word = 0;
    for (int half = 0; half < 2; ++half) {
      const int64_t j0 = w * 32 + half * 16;
      if (j0 >= k) break;
      const int64_t left = k - j0;
      const __mmask16 valid = left >= 16 ? static_cast<__mmask16>(0xFFFF)
                                         : static_cast<__mmask16>((1u << left) - 1);
      const __m512 v = _mm512_maskz_loadu_ps(valid, row + j0);
      word |= static_cast<uint32_t>(_mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ)) << (16 * half);
      if (strict && bad < 0) {
        const __mmask16 ok =
            _mm512_cmp_ps_mask(v, one, _CMP_EQ_OQ) | _mm512_cmp_ps_mask(v, minus_one, _CMP_EQ_OQ);
        const __mmask16 wrong = valid & static_cast<__mmask16>(~ok);
        if (wrong) bad = j0 + __builtin_ctz(wrong);
      }
    }
    dst32[w] = word;
  }
  return bad;
}

TFC_AVX2 static int64_t Avx2PackRowF32(const float* row, int64_t k, bool strict, uint32_t* dst32,
                                       int64_t words32) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f),
               minus_one = _mm256_set1_ps(-1.0f);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int64_t bad = -1;
  for (int64_t w = 0; w < words32; ++w) {
    uint32_t word = 0;
    for (int q = 0; q < 4; ++q) {
      const int64_t j0 = w * 32 + q * 8;
      if (j0 >= k) break;
      const int64_t left = k - j0;
      __m256 v;
      unsigned valid = 0xFF;
      if (left >= 8) {
        v = _mm256_loadu_ps(row + j0);
      } else {  // masked load: lanes past k read as 0 and never touch memory
        v = _mm256_maskload_ps(
            row + j0, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(left)), lane));
        valid = (1u << left) - 1;
      }
      word |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ)))
              << (8 * q);
      if (strict && bad < 0) {
        const unsigned ok = static_cast<unsigned>(_mm256_movemask_ps(_mm256_or_ps(
            _mm256_cmp_ps(v, one, _CMP_EQ_OQ), _mm256_cmp_ps(v, minus_one, _CMP_EQ_OQ))));
        const unsigned wrong = valid & ~ok;
        if (wrong) bad = j0 + __builtin_ctz(wrong);
      }
    }
    dst32[w] = word;
  }
  return bad;
}
#endif

int64_t PackRowF32(Isa isa, const float* row, int64_t k, bool strict, uint32_t* dst32,
                   int64_t words32) {
#if defined(TFC_X86)
  if (isa == Isa::kAvx512) return Avx512PackRowF32(row, k, strict, dst32, words32);
  if (isa == Isa::kAvx2) return Avx2PackRowF32(row, k, strict, dst32, words32);
#endif
  return ScalarPackRowF32(row, k, strict, dst32, words32);
}

}  // namespace kernels
}  // namespace tfcompress
