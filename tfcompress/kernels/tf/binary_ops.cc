// tfcompress packed-binary CPU kernels for TensorFlow (inference only, no gradients).
//
// Bit convention: bit j of a packed row is 1 when the j-th value is negative (-1) and 0 when it
// is non-negative (+1, sign(0) = +1). Word w of a row holds values [w * B, (w + 1) * B) with B the
// word width (32 or 64), value j in bit (j mod B). Padding bits past the reduction length k are
// ignored by every consumer: the kernels mask them, so any packed tensor with the right width is
// valid input. For +-1 vectors a, b of length k: dot(a, b) = k - 2 * popcount(bits(a) ^ bits(b)).
//
// Internally every operand is normalised into 64-bit rows padded with zeros to a multiple of 8
// words (one 512-bit vector); padded bits are zero in both operands, so they add nothing to the
// popcount. The popcount GEMM has an AVX-512 VPOPCNTDQ path (selected at run time from CPUID)
// and portable scalar paths (hardware POPCNT, or plain C++).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define TFC_X86 1
#endif

namespace tfcompress {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;
namespace errors = ::tensorflow::errors;

typedef uint64_t u64;

// ---------------------------------------------------------------------------------------------
// ISA selection.

enum class Isa { kGeneric = 0, kPopcnt = 1, kAvx512 = 2 };

static bool CpuHasAvx512Popcnt() {
#if defined(TFC_X86) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vpopcntdq");
#else
  return false;
#endif
}

static bool CpuHasPopcnt() {
#if defined(TFC_X86) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("popcnt");
#else
  return false;
#endif
}

static Isa BestIsa() {
  if (CpuHasAvx512Popcnt()) return Isa::kAvx512;
  if (CpuHasPopcnt()) return Isa::kPopcnt;
  return Isa::kGeneric;
}

static const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512_vpopcntdq";
    case Isa::kPopcnt:
      return "popcnt";
    default:
      return "generic";
  }
}

// Parses the "isa" attribute; refuses an ISA the CPU lacks instead of crashing on SIGILL.
static Status ParseIsa(const std::string& name, Isa* isa) {
  if (name == "auto") {
    *isa = BestIsa();
  } else if (name == "avx512") {
    if (!CpuHasAvx512Popcnt())
      return InvalidArgument("isa='avx512' requested but this CPU lacks AVX-512 VPOPCNTDQ");
    *isa = Isa::kAvx512;
  } else if (name == "popcnt") {
    if (!CpuHasPopcnt()) return InvalidArgument("isa='popcnt' requested but this CPU lacks POPCNT");
    *isa = Isa::kPopcnt;
  } else if (name == "generic") {
    *isa = Isa::kGeneric;
  } else {
    return InvalidArgument("isa must be one of 'auto', 'avx512', 'popcnt', 'generic'; got '",
                           name, "'");
  }
  return Status();
}

// ---------------------------------------------------------------------------------------------
// Popcount GEMM: out[i, j] = base_i - 2 * popcount(A_i ^ B_j), A [M, L], B [N, L], L % 8 == 0.

constexpr int kTile = 4;

#define TFC_SCALAR_TILES(NAME, ATTR)                                                         \
  ATTR static void NAME##Tile(const u64* a, const u64* b, int64_t lp, int64_t pc[4][4]) {     \
    for (int r = 0; r < 4; ++r)                                                             \
      for (int c = 0; c < 4; ++c) pc[r][c] = 0;                                             \
    for (int64_t w = 0; w < lp; ++w) {                                                      \
      const u64 a0 = a[w], a1 = a[lp + w], a2 = a[2 * lp + w], a3 = a[3 * lp + w];          \
      for (int c = 0; c < 4; ++c) {                                                         \
        const u64 bc = b[c * lp + w];                                                       \
        pc[0][c] += __builtin_popcountll(a0 ^ bc);                                          \
        pc[1][c] += __builtin_popcountll(a1 ^ bc);                                          \
        pc[2][c] += __builtin_popcountll(a2 ^ bc);                                          \
        pc[3][c] += __builtin_popcountll(a3 ^ bc);                                          \
      }                                                                                     \
    }                                                                                       \
  }                                                                                         \
  ATTR static int64_t NAME##One(const u64* a, const u64* b, int64_t lp) {                   \
    int64_t pc = 0;                                                                         \
    for (int64_t w = 0; w < lp; ++w) pc += __builtin_popcountll(a[w] ^ b[w]);               \
    return pc;                                                                              \
  }

TFC_SCALAR_TILES(Generic, )
#if defined(TFC_X86) && defined(__GNUC__)
TFC_SCALAR_TILES(Popcnt, __attribute__((target("popcnt"))))
#endif

#if defined(TFC_X86) && defined(__GNUC__)
#define TFC_AVX512 __attribute__((target("avx512f,avx512bw,avx512vpopcntdq")))

TFC_AVX512 static void Avx512Tile(const u64* a, const u64* b, int64_t lp, int64_t pc[4][4]) {
  __m512i acc[4][4];
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_setzero_si512();
  for (int64_t w = 0; w < lp; w += 8) {
    __m512i va[4], vb[4];
    for (int r = 0; r < 4; ++r) va[r] = _mm512_loadu_si512(a + r * lp + w);
    for (int c = 0; c < 4; ++c) vb[c] = _mm512_loadu_si512(b + c * lp + w);
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 4; ++c)
        acc[r][c] =
            _mm512_add_epi64(acc[r][c], _mm512_popcnt_epi64(_mm512_xor_si512(va[r], vb[c])));
  }
  // Horizontal sums, four accumulators at a time: two unpack/add levels inside 128-bit lanes,
  // then 128-bit lane shuffles; about a third of the instructions of four full reductions.
  for (int r = 0; r < 4; ++r) {
    const __m512i t0 = _mm512_add_epi64(_mm512_unpacklo_epi64(acc[r][0], acc[r][1]),
                                        _mm512_unpackhi_epi64(acc[r][0], acc[r][1]));
    const __m512i t1 = _mm512_add_epi64(_mm512_unpacklo_epi64(acc[r][2], acc[r][3]),
                                        _mm512_unpackhi_epi64(acc[r][2], acc[r][3]));
    // u = [c0 c1 | c0' c1' | c2 c3 | c2' c3'] with each pair summed over half of the lanes.
    const __m512i u = _mm512_add_epi64(_mm512_shuffle_i64x2(t0, t1, 0x88),
                                       _mm512_shuffle_i64x2(t0, t1, 0xDD));
    const __m512i v = _mm512_add_epi64(u, _mm512_shuffle_i64x2(u, u, 0xB1));
    alignas(64) int64_t lanes[8];
    _mm512_store_si512(lanes, v);
    pc[r][0] = lanes[0];
    pc[r][1] = lanes[1];
    pc[r][2] = lanes[4];
    pc[r][3] = lanes[5];
  }
}

// Packs one float32 row: bit j = (row[j] < 0). Returns the first index that is not +-1 when
// strict (else -1). Masked loads zero-fill the tail, and 0 < 0 is false, so padding bits are 0.
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

TFC_AVX512 static int64_t Avx512One(const u64* a, const u64* b, int64_t lp) {
  __m512i acc = _mm512_setzero_si512();
  for (int64_t w = 0; w < lp; w += 8) {
    acc = _mm512_add_epi64(
        acc, _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(a + w),
                                                  _mm512_loadu_si512(b + w))));
  }
  return _mm512_reduce_add_epi64(acc);
}
#endif

typedef void (*TileFn)(const u64*, const u64*, int64_t, int64_t[4][4]);
typedef int64_t (*OneFn)(const u64*, const u64*, int64_t);

static void PickKernels(Isa isa, TileFn* tile, OneFn* one) {
  *tile = GenericTile;
  *one = GenericOne;
#if defined(TFC_X86) && defined(__GNUC__)
  if (isa == Isa::kAvx512) {
    *tile = Avx512Tile;
    *one = Avx512One;
  } else if (isa == Isa::kPopcnt) {
    *tile = PopcntTile;
    *one = PopcntOne;
  }
#endif
}

// base: per-row constant (base_rows == nullptr -> base_const for every row).
template <typename OutT>
static void PopcountGemm(OpKernelContext* ctx, Isa isa, const u64* a, int64_t m, const u64* b,
                         int64_t n, int64_t lp, const int64_t* base_rows, int64_t base_const,
                         OutT* out) {
  if (m == 0 || n == 0) return;
  TileFn tile;
  OneFn one;
  PickKernels(isa, &tile, &one);
  const int64_t row_bytes = std::max<int64_t>(lp, 1) * 8;
  // Block sizes: a block of B rows fits in L1 and is reused across the A rows of the unit.
  const int64_t nb = std::max<int64_t>(kTile, (32 * 1024 / row_bytes) / kTile * kTile);
  const int64_t mb = std::max<int64_t>(kTile, (64 * 1024 / row_bytes) / kTile * kTile);
  const int64_t n_mblocks = (m + mb - 1) / mb;
  const int64_t n_nblocks = (n + nb - 1) / nb;
  auto work = [&](int64_t begin, int64_t end) {
    int64_t pc[4][4];
    for (int64_t u = begin; u < end; ++u) {
      const int64_t i0 = (u / n_nblocks) * mb, i1 = std::min(m, i0 + mb);
      const int64_t j0 = (u % n_nblocks) * nb, j1 = std::min(n, j0 + nb);
      for (int64_t j = j0; j < j1; j += kTile) {
        const int64_t jn = std::min<int64_t>(kTile, j1 - j);
        for (int64_t i = i0; i < i1; i += kTile) {
          const int64_t in = std::min<int64_t>(kTile, i1 - i);
          if (in == kTile && jn == kTile) {
            tile(a + i * lp, b + j * lp, lp, pc);
          } else {
            for (int64_t r = 0; r < in; ++r)
              for (int64_t c = 0; c < jn; ++c) pc[r][c] = one(a + (i + r) * lp, b + (j + c) * lp, lp);
          }
          for (int64_t r = 0; r < in; ++r) {
            const int64_t base = base_rows ? base_rows[i + r] : base_const;
            OutT* orow = out + (i + r) * n + j;
            for (int64_t c = 0; c < jn; ++c) orow[c] = static_cast<OutT>(base - 2 * pc[r][c]);
          }
        }
      }
    }
  };
  const auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
  const int64_t cost = std::max<int64_t>(1, mb * nb * std::max<int64_t>(lp, 1));
  tensorflow::Shard(threads->num_threads, threads->workers, n_mblocks * n_nblocks, cost, work);
}

// ---------------------------------------------------------------------------------------------
// Normalisation of packed rows (32- or 64-bit words) into masked, zero-padded 64-bit rows.

static inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t PaddedWords(int64_t k) { return CeilDiv(CeilDiv(k, 64), 8) * 8; }

// Reads the k valid bits of one packed source row as 64-bit words into dst[0, ceil(k / 64)).
template <typename T>
static void LoadBits(const T* src, int64_t k, u64* dst) {
  const int64_t words = CeilDiv(k, 64);
  if (sizeof(T) == 8) {
    for (int64_t w = 0; w < words; ++w) dst[w] = static_cast<u64>(src[w]);
  } else {
    const int64_t src_words = CeilDiv(k, 32);
    for (int64_t w = 0; w < words; ++w) {
      const u64 lo = static_cast<uint32_t>(src[2 * w]);
      const u64 hi = (2 * w + 1 < src_words) ? static_cast<uint32_t>(src[2 * w + 1]) : 0;
      dst[w] = lo | (hi << 32);
    }
  }
  if (k % 64) dst[words - 1] &= (~u64{0}) >> (64 - k % 64);
}

// ORs nbits bits of src (bits past nbits are zero) into dst at bit offset off; dst has dst_words.
static inline void InsertBits(u64* dst, int64_t dst_words, int64_t off, const u64* src,
                              int64_t nbits) {
  const int64_t w0 = off >> 6;
  const int s = static_cast<int>(off & 63);
  const int64_t nw = CeilDiv(nbits, 64);
  if (s == 0) {
    for (int64_t i = 0; i < nw; ++i) dst[w0 + i] |= src[i];
  } else {
    for (int64_t i = 0; i < nw; ++i) {
      dst[w0 + i] |= src[i] << s;
      const u64 spill = src[i] >> (64 - s);
      if (spill && w0 + i + 1 < dst_words) dst[w0 + i + 1] |= spill;
    }
  }
}

template <typename T>
static void NormalizeRows(OpKernelContext* ctx, const T* src, int64_t rows, int64_t src_words,
                          int64_t k, u64* dst, int64_t lp) {
  auto work = [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      u64* d = dst + r * lp;
      std::memset(d, 0, lp * sizeof(u64));
      if (k > 0) LoadBits(src + r * src_words, k, d);
    }
  };
  const auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(threads->num_threads, threads->workers, rows, std::max<int64_t>(lp, 1) * 4,
                    work);
}

static Status AllocateWords(OpKernelContext* ctx, int64_t count, Tensor* t) {
  return ctx->allocate_temp(tensorflow::DT_UINT64, TensorShape({std::max<int64_t>(count, 1)}), t);
}

static inline u64* WordsOf(Tensor* t) {
  return reinterpret_cast<u64*>(t->flat<tensorflow::uint64>().data());
}

template <typename T>
constexpr int BitsOf() {
  return static_cast<int>(sizeof(T) * 8);
}

// ---------------------------------------------------------------------------------------------
// TfcPackBits.

REGISTER_OP("TfcPackBits")
    .Input("x: T")
    .Output("packed: out_type")
    .Attr("T: {float, double, half, bfloat16}")
    .Attr("out_type: {int32, int64} = DT_INT32")
    .Attr("strict: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &x));
      tensorflow::DataType out_type;
      TF_RETURN_IF_ERROR(c->GetAttr("out_type", &out_type));
      const int bits = out_type == tensorflow::DT_INT64 ? 64 : 32;
      DimensionHandle k = c->Dim(x, -1);
      DimensionHandle w = c->UnknownDim();
      if (c->ValueKnown(k)) w = c->MakeDim(CeilDiv(c->Value(k), bits));
      ShapeHandle out;
      TF_RETURN_IF_ERROR(c->ReplaceDim(x, -1, w, &out));
      c->set_output(0, out);
      return Status();
    })
    .Doc("Packs signs along the last axis into 32/64-bit words (bit = value < 0). No gradient.");

template <typename T, typename W>
class PackBitsOp : public OpKernel {
 public:
  explicit PackBitsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("strict", &strict_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    OP_REQUIRES(ctx, x.dims() >= 1,
                InvalidArgument("x must have rank >= 1, got shape ", x.shape().DebugString()));
    constexpr int kBits = BitsOf<W>();
    const int64_t k = x.dim_size(x.dims() - 1);
    const int64_t words = CeilDiv(k, kBits);
    const int64_t rows = k == 0 ? x.NumElements() : x.NumElements() / k;
    TensorShape out_shape = x.shape();
    out_shape.set_dim(x.dims() - 1, words);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &out));
    if (out_shape.num_elements() == 0) return;
    const T* src = x.flat<T>().data();
    W* dst = out->flat<W>().data();
    std::atomic<int64_t> bad{-1};
    const bool strict = strict_;
    const bool fast = std::is_same<T, float>::value && CpuHasAvx512Popcnt();
    auto work = [&](int64_t begin, int64_t end) {
      typedef typename std::make_unsigned<W>::type UW;
      for (int64_t r = begin; r < end; ++r) {
        const T* row = src + r * k;
#if defined(TFC_X86) && defined(__GNUC__)
        if (fast) {
          // 64-bit words are two little-endian 32-bit words; the row's word count is even
          // except for a final half word, which the 32-bit view handles by its length.
          const int64_t words32 = CeilDiv(k, 32);
          uint32_t* out32 = reinterpret_cast<uint32_t*>(dst + r * words);
          const int64_t at = Avx512PackRowF32(reinterpret_cast<const float*>(row), k, strict,
                                              out32, words32);
          if (kBits == 64 && (words32 & 1)) out32[words32] = 0;
          if (at >= 0) {
            int64_t expected = -1;
            bad.compare_exchange_strong(expected, r * k + at);
          }
          continue;
        }
#endif
        for (int64_t w = 0; w < words; ++w) {
          const int64_t j0 = w * kBits, j1 = std::min(k, j0 + kBits);
          UW word = 0;
          for (int64_t j = j0; j < j1; ++j) {
            const float v = static_cast<float>(row[j]);
            if (strict && v != 1.0f && v != -1.0f) {
              int64_t expected = -1;
              bad.compare_exchange_strong(expected, r * k + j);
            }
            word |= static_cast<UW>(v < 0.0f) << (j - j0);
          }
          dst[r * words + w] = static_cast<W>(word);
        }
      }
    };
    const auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(threads->num_threads, threads->workers, rows, std::max<int64_t>(k, 1) * 3,
                      work);
    const int64_t at = bad.load();
    OP_REQUIRES(ctx, at < 0,
                InvalidArgument("x must contain only -1 and +1 when strict=True; found ",
                                static_cast<double>(static_cast<float>(src[at])),
                                " at flat index ", at));
  }

 private:
  bool strict_;
};

#define TFC_REGISTER_PACK(T)                                                                  \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("TfcPackBits").Device(DEVICE_CPU).TypeConstraint<T>("T").TypeConstraint<int32_t>(  \
          "out_type"),                                                                        \
      PackBitsOp<T, int32_t>);                                                                \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("TfcPackBits").Device(DEVICE_CPU).TypeConstraint<T>("T").TypeConstraint<int64_t>(  \
          "out_type"),                                                                        \
      PackBitsOp<T, int64_t>);

TFC_REGISTER_PACK(float)
TFC_REGISTER_PACK(double)
TFC_REGISTER_PACK(Eigen::half)
TFC_REGISTER_PACK(Eigen::bfloat16)

// ---------------------------------------------------------------------------------------------
// TfcUnpackBits.

static Status CheckPackedWidth(InferenceContext* c, DimensionHandle w, int64_t k, int bits) {
  if (c->ValueKnown(w) && c->Value(w) != CeilDiv(k, bits)) {
    return InvalidArgument("packed width ", c->Value(w), " does not match k=", k, " at ", bits,
                           " bits per word (expected ", CeilDiv(k, bits), ")");
  }
  return Status();
}

static int BitsOfType(tensorflow::DataType t) { return t == tensorflow::DT_INT64 ? 64 : 32; }

REGISTER_OP("TfcUnpackBits")
    .Input("packed: T")
    .Output("x: float")
    .Attr("T: {int32, int64}")
    .Attr("k: int >= 0")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle p;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &p));
      int64_t k;
      tensorflow::DataType t;
      TF_RETURN_IF_ERROR(c->GetAttr("k", &k));
      TF_RETURN_IF_ERROR(c->GetAttr("T", &t));
      TF_RETURN_IF_ERROR(CheckPackedWidth(c, c->Dim(p, -1), k, BitsOfType(t)));
      ShapeHandle out;
      TF_RETURN_IF_ERROR(c->ReplaceDim(p, -1, c->MakeDim(k), &out));
      c->set_output(0, out);
      return Status();
    })
    .Doc("Unpacks words into +-1 float32 values (bit 1 -> -1). No gradient.");

template <typename W>
class UnpackBitsOp : public OpKernel {
 public:
  explicit UnpackBitsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("k", &k_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& p = ctx->input(0);
    constexpr int kBits = BitsOf<W>();
    OP_REQUIRES(ctx, p.dims() >= 1, InvalidArgument("packed must have rank >= 1"));
    const int64_t words = p.dim_size(p.dims() - 1);
    OP_REQUIRES(ctx, words == CeilDiv(k_, kBits),
                InvalidArgument("packed width ", words, " does not match k=", k_, " at ", kBits,
                                " bits per word (expected ", CeilDiv(k_, kBits), ")"));
    TensorShape out_shape = p.shape();
    out_shape.set_dim(p.dims() - 1, k_);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &out));
    if (out_shape.num_elements() == 0) return;
    const int64_t rows = p.NumElements() / words;
    const W* src = p.flat<W>().data();
    float* dst = out->flat<float>().data();
    const int64_t k = k_;
    auto work = [&](int64_t begin, int64_t end) {
      typedef typename std::make_unsigned<W>::type UW;
      for (int64_t r = begin; r < end; ++r) {
        for (int64_t j = 0; j < k; ++j) {
          const UW word = static_cast<UW>(src[r * words + j / kBits]);
          dst[r * k + j] = ((word >> (j % kBits)) & 1) ? -1.0f : 1.0f;
        }
      }
    };
    const auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(threads->num_threads, threads->workers, rows, std::max<int64_t>(k, 1) * 2,
                      work);
  }

 private:
  int64_t k_;
};

REGISTER_KERNEL_BUILDER(
    Name("TfcUnpackBits").Device(DEVICE_CPU).TypeConstraint<int32_t>("T"), UnpackBitsOp<int32_t>);
REGISTER_KERNEL_BUILDER(
    Name("TfcUnpackBits").Device(DEVICE_CPU).TypeConstraint<int64_t>("T"), UnpackBitsOp<int64_t>);

// ---------------------------------------------------------------------------------------------
// TfcBinaryMatmul: a [M, W] x b [N, W] -> [M, N], product[i, j] = +-1 dot product over k.

REGISTER_OP("TfcBinaryMatmul")
    .Input("a: T")
    .Input("b: T")
    .Output("product: out_type")
    .Attr("T: {int32, int64}")
    .Attr("k: int >= 0")
    .Attr("out_type: {float, int32} = DT_FLOAT")
    .Attr("isa: string = 'auto'")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle a, b;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &a));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &b));
      int64_t k;
      tensorflow::DataType t;
      TF_RETURN_IF_ERROR(c->GetAttr("k", &k));
      TF_RETURN_IF_ERROR(c->GetAttr("T", &t));
      DimensionHandle w;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(a, 1), c->Dim(b, 1), &w));
      TF_RETURN_IF_ERROR(CheckPackedWidth(c, w, k, BitsOfType(t)));
      c->set_output(0, c->Matrix(c->Dim(a, 0), c->Dim(b, 0)));
      return Status();
    })
    .Doc("Binary matmul on packed operands via XNOR + popcount. Inference only, no gradient.");

template <typename W, typename OutT>
class BinaryMatmulOp : public OpKernel {
 public:
  explicit BinaryMatmulOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("k", &k_));
    std::string isa;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("isa", &isa));
    OP_REQUIRES_OK(ctx, ParseIsa(isa, &isa_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& a = ctx->input(0);
    const Tensor& b = ctx->input(1);
    constexpr int kBits = BitsOf<W>();
    OP_REQUIRES(ctx, a.dims() == 2 && b.dims() == 2,
                InvalidArgument("a and b must be 2-D packed matrices, got shapes ",
                                a.shape().DebugString(), " and ", b.shape().DebugString()));
    const int64_t wa = a.dim_size(1), wb = b.dim_size(1), want = CeilDiv(k_, kBits);
    OP_REQUIRES(ctx, wa == wb,
                InvalidArgument("packed widths differ: a has ", wa, " words per row, b has ", wb));
    OP_REQUIRES(ctx, wa == want,
                InvalidArgument("packed width ", wa, " does not match k=", k_, " at ", kBits,
                                " bits per word (expected ", want, ")"));
    const int64_t m = a.dim_size(0), n = b.dim_size(0);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({m, n}), &out));
    if (m == 0 || n == 0) return;
    const int64_t lp = PaddedWords(k_);
    Tensor na, nb;
    OP_REQUIRES_OK(ctx, AllocateWords(ctx, m * lp, &na));
    OP_REQUIRES_OK(ctx, AllocateWords(ctx, n * lp, &nb));
    NormalizeRows(ctx, a.flat<W>().data(), m, wa, k_, WordsOf(&na), lp);
    NormalizeRows(ctx, b.flat<W>().data(), n, wb, k_, WordsOf(&nb), lp);
    PopcountGemm<OutT>(ctx, isa_, WordsOf(&na), m, WordsOf(&nb), n, lp, nullptr, k_,
                       out->flat<OutT>().data());
  }

 private:
  int64_t k_;
  Isa isa_;
};

#define TFC_REGISTER_MATMUL(W, OUT)                                                   \
  REGISTER_KERNEL_BUILDER(Name("TfcBinaryMatmul")                                     \
                              .Device(DEVICE_CPU)                                     \
                              .TypeConstraint<W>("T")                                 \
                              .TypeConstraint<OUT>("out_type"),                       \
                          BinaryMatmulOp<W, OUT>);
TFC_REGISTER_MATMUL(int32_t, float)
TFC_REGISTER_MATMUL(int32_t, int32_t)
TFC_REGISTER_MATMUL(int64_t, float)
TFC_REGISTER_MATMUL(int64_t, int32_t)

// ---------------------------------------------------------------------------------------------
// TfcBinaryConv2D: NHWC input packed along channels [B, H, W, Cw] with filters packed
// [O, KH, KW, Cw]; zero ("SAME") padding contributes 0, like a float conv on +-1 values.

struct ConvGeometry {
  int64_t out = 0, pad_before = 0;
};

static Status ConvDim(int64_t in, int64_t ksize, int64_t stride, int64_t dilation,
                      const std::string& padding, ConvGeometry* g) {
  const int64_t eff = (ksize - 1) * dilation + 1;
  if (padding == "VALID") {
    g->out = in >= eff ? (in - eff) / stride + 1 : 0;
    g->pad_before = 0;
  } else {
    g->out = CeilDiv(in, stride);
    const int64_t total = std::max<int64_t>((g->out - 1) * stride + eff - in, 0);
    g->pad_before = total / 2;
  }
  return Status();
}

REGISTER_OP("TfcBinaryConv2D")
    .Input("input: T")
    .Input("filters: T")
    .Output("output: float")
    .Attr("T: {int32, int64}")
    .Attr("channels: int >= 0")
    .Attr("strides: list(int) = [1, 1]")
    .Attr("dilations: list(int) = [1, 1]")
    .Attr("padding: {'SAME', 'VALID'} = 'VALID'")
    .Attr("isa: string = 'auto'")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x, f;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &f));
      int64_t channels;
      tensorflow::DataType t;
      std::vector<int32_t> strides, dilations;
      std::string padding;
      TF_RETURN_IF_ERROR(c->GetAttr("channels", &channels));
      TF_RETURN_IF_ERROR(c->GetAttr("T", &t));
      TF_RETURN_IF_ERROR(c->GetAttr("strides", &strides));
      TF_RETURN_IF_ERROR(c->GetAttr("dilations", &dilations));
      TF_RETURN_IF_ERROR(c->GetAttr("padding", &padding));
      if (strides.size() != 2 || dilations.size() != 2)
        return InvalidArgument("strides and dilations must have 2 entries");
      DimensionHandle w;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 3), c->Dim(f, 3), &w));
      TF_RETURN_IF_ERROR(CheckPackedWidth(c, w, channels, BitsOfType(t)));
      DimensionHandle dims[2];
      for (int d = 0; d < 2; ++d) {
        DimensionHandle in = c->Dim(x, 1 + d), ks = c->Dim(f, 1 + d);
        dims[d] = c->UnknownDim();
        if (c->ValueKnown(in) && c->ValueKnown(ks)) {
          ConvGeometry g;
          TF_RETURN_IF_ERROR(
              ConvDim(c->Value(in), c->Value(ks), strides[d], dilations[d], padding, &g));
          dims[d] = c->MakeDim(g.out);
        }
      }
      c->set_output(0, c->MakeShape({c->Dim(x, 0), dims[0], dims[1], c->Dim(f, 0)}));
      return Status();
    })
    .Doc("Binary 2-D convolution on channel-packed NHWC input (im2col + popcount GEMM). "
         "Inference only, no gradient.");

template <typename W>
class BinaryConv2DOp : public OpKernel {
 public:
  explicit BinaryConv2DOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("channels", &channels_));
    std::vector<int32_t> strides, dilations;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("strides", &strides));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("dilations", &dilations));
    OP_REQUIRES(ctx, strides.size() == 2 && dilations.size() == 2,
                InvalidArgument("strides and dilations must have 2 entries"));
    for (int d = 0; d < 2; ++d) {
      OP_REQUIRES(ctx, strides[d] >= 1 && dilations[d] >= 1,
                  InvalidArgument("strides and dilations must be >= 1"));
      strides_[d] = strides[d];
      dilations_[d] = dilations[d];
    }
    OP_REQUIRES_OK(ctx, ctx->GetAttr("padding", &padding_));
    std::string isa;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("isa", &isa));
    OP_REQUIRES_OK(ctx, ParseIsa(isa, &isa_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& f = ctx->input(1);
    constexpr int kBits = BitsOf<W>();
    OP_REQUIRES(ctx, x.dims() == 4 && f.dims() == 4,
                InvalidArgument("input [B, H, W, Cw] and filters [O, KH, KW, Cw] must be 4-D, got ",
                                x.shape().DebugString(), " and ", f.shape().DebugString()));
    const int64_t cw = x.dim_size(3), want = CeilDiv(channels_, kBits);
    OP_REQUIRES(ctx, cw == f.dim_size(3),
                InvalidArgument("packed widths differ: input has ", cw, " words per pixel, "
                                "filters have ", f.dim_size(3)));
    OP_REQUIRES(ctx, cw == want,
                InvalidArgument("packed width ", cw, " does not match channels=", channels_,
                                " at ", kBits, " bits per word (expected ", want, ")"));
    const int64_t batch = x.dim_size(0), h = x.dim_size(1), wd = x.dim_size(2);
    const int64_t o = f.dim_size(0), kh = f.dim_size(1), kw = f.dim_size(2);
    ConvGeometry gy, gx;
    OP_REQUIRES_OK(ctx, ConvDim(h, kh, strides_[0], dilations_[0], padding_, &gy));
    OP_REQUIRES_OK(ctx, ConvDim(wd, kw, strides_[1], dilations_[1], padding_, &gx));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, gy.out, gx.out, o}), &out));
    const int64_t pixels = batch * gy.out * gx.out;
    if (pixels == 0 || o == 0) return;
    float* dst = out->flat<float>().data();
    const int64_t c = channels_, positions = kh * kw, ktot = positions * c;
    const int64_t lp = PaddedWords(ktot), cwords = CeilDiv(c, 64);

    // Filters: bit-dense rows [O, positions * C], plus each position's popcount for the border
    // correction (a zero patch word xor a filter word counts the filter's bits).
    Tensor filt_t, fpc_t, xin_t, patch_t, base_t;
    OP_REQUIRES_OK(ctx, AllocateWords(ctx, o * lp, &filt_t));
    OP_REQUIRES_OK(ctx, AllocateWords(ctx, o * positions, &fpc_t));
    u64* filt = WordsOf(&filt_t);
    u64* fpc = WordsOf(&fpc_t);
    const W* fsrc = f.flat<W>().data();
    std::vector<u64> tmp(std::max<int64_t>(cwords, 1));
    for (int64_t oi = 0; oi < o; ++oi) {
      u64* row = filt + oi * lp;
      std::memset(row, 0, lp * sizeof(u64));
      for (int64_t p = 0; p < positions; ++p) {
        uint64_t count = 0;
        if (c > 0) {
          LoadBits(fsrc + (oi * positions + p) * cw, c, tmp.data());
          InsertBits(row, lp, p * c, tmp.data(), c);
          for (int64_t i = 0; i < cwords; ++i) count += __builtin_popcountll(tmp[i]);
        }
        fpc[oi * positions + p] = count;
      }
    }
    // Input pixels normalised to [B * H * W, cwords].
    OP_REQUIRES_OK(ctx, AllocateWords(ctx, batch * h * wd * cwords, &xin_t));
    u64* xin = WordsOf(&xin_t);
    NormalizeRows(ctx, x.flat<W>().data(), batch * h * wd, cw, c, xin, cwords);
    // im2col into bit-dense patch rows; base = (valid positions) * C.
    OP_REQUIRES_OK(ctx, AllocateWords(ctx, pixels * lp, &patch_t));
    OP_REQUIRES_OK(ctx, AllocateWords(ctx, pixels, &base_t));
    u64* patch = WordsOf(&patch_t);
    int64_t* base = reinterpret_cast<int64_t*>(WordsOf(&base_t));
    const int64_t oh = gy.out, ow = gx.out;
    const int64_t sy = strides_[0], sx = strides_[1], dy = dilations_[0], dx = dilations_[1];
    const int64_t py = gy.pad_before, px = gx.pad_before;
    auto im2col = [&](int64_t begin, int64_t end) {
      for (int64_t pix = begin; pix < end; ++pix) {
        const int64_t bi = pix / (oh * ow), yo = (pix / ow) % oh, xo = pix % ow;
        u64* row = patch + pix * lp;
        std::memset(row, 0, lp * sizeof(u64));
        int64_t valid = 0;
        for (int64_t ky = 0; ky < kh; ++ky) {
          const int64_t yi = yo * sy - py + ky * dy;
          for (int64_t kx = 0; kx < kw; ++kx) {
            const int64_t xi = xo * sx - px + kx * dx;
            if (yi < 0 || yi >= h || xi < 0 || xi >= wd) continue;
            ++valid;
            if (c > 0)
              InsertBits(row, lp, (ky * kw + kx) * c, xin + ((bi * h + yi) * wd + xi) * cwords,
                         c);
          }
        }
        base[pix] = valid * c;
      }
    };
    const auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(threads->num_threads, threads->workers, pixels,
                      std::max<int64_t>(lp, 1) * 4 + positions * 8, im2col);
    PopcountGemm<float>(ctx, isa_, patch, pixels, filt, o, lp, base, 0, dst);
    // Border pixels: add back the filter bits that met zero padding.
    auto correct = [&](int64_t begin, int64_t end) {
      for (int64_t pix = begin; pix < end; ++pix) {
        if (base[pix] == ktot) continue;
        const int64_t yo = (pix / ow) % oh, xo = pix % ow;
        for (int64_t ky = 0; ky < kh; ++ky) {
          const int64_t yi = yo * sy - py + ky * dy;
          for (int64_t kx = 0; kx < kw; ++kx) {
            const int64_t xi = xo * sx - px + kx * dx;
            if (!(yi < 0 || yi >= h || xi < 0 || xi >= wd)) continue;
            const int64_t p = ky * kw + kx;
            for (int64_t oi = 0; oi < o; ++oi)
              dst[pix * o + oi] += 2.0f * static_cast<float>(fpc[oi * positions + p]);
          }
        }
      }
    };
    tensorflow::Shard(threads->num_threads, threads->workers, pixels, positions * o, correct);
  }

 private:
  int64_t channels_;
  int64_t strides_[2];
  int64_t dilations_[2];
  std::string padding_;
  Isa isa_;
};

REGISTER_KERNEL_BUILDER(
    Name("TfcBinaryConv2D").Device(DEVICE_CPU).TypeConstraint<int32_t>("T"),
    BinaryConv2DOp<int32_t>);
REGISTER_KERNEL_BUILDER(
    Name("TfcBinaryConv2D").Device(DEVICE_CPU).TypeConstraint<int64_t>("T"),
    BinaryConv2DOp<int64_t>);

// ---------------------------------------------------------------------------------------------
// TfcKernelIsa: which popcount path "auto" selects on this CPU (for reports and tests).

REGISTER_OP("TfcKernelIsa")
    .Output("isa: string")
    .SetIsStateful()
    .SetShapeFn(::tensorflow::shape_inference::ScalarShape);

class KernelIsaOp : public OpKernel {
 public:
  explicit KernelIsaOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
    out->scalar<tensorflow::tstring>()() = IsaName(BestIsa());
  }
};

REGISTER_KERNEL_BUILDER(Name("TfcKernelIsa").Device(DEVICE_CPU), KernelIsaOp);

}  // namespace tfcompress
