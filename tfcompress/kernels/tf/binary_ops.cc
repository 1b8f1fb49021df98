// tfcompress packed-binary CPU kernels for TensorFlow (inference only, no gradients).
//
// Bit convention: bit j of a packed row is 1 when the j-th value is negative (-1) and 0 when it
// is non-negative (+1, sign(0) = +1). Word w of a row holds values [w * B, (w + 1) * B) with B the
// word width (32 or 64), value j in bit (j mod B). Padding bits past the reduction length k are
// ignored by every consumer: the kernels mask them, so any packed tensor with the right width is
// valid input. For +-1 vectors a, b of length k: dot(a, b) = k - 2 * popcount(bits(a) ^ bits(b)).
//
// Internally every operand is normalised into 64-bit rows padded with zeros to a multiple of the
// chosen path's vector width (kernels::RowWords); padded bits are zero in both operands, so they
// add nothing to the popcount. The popcount GEMM and the float packing have AVX-512, AVX2 and
// scalar paths (binary_kernels.cc), selected at run time from CPUID or forced by the "isa"
// attribute (the Python wrappers pass TFCOMPRESS_BINARY_ISA there).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"


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
// Inner loops per instruction set, defined in binary_kernels.cc (no TensorFlow dependency there).

namespace kernels {
enum class Isa { kGeneric = 0, kPopcnt = 1, kAvx2 = 2, kAvx512 = 3 };
typedef std::function<void(int64_t, int64_t, const std::function<void(int64_t, int64_t)>&)>
    ParallelFor;
bool CpuSupports(Isa isa);
Isa BestIsa();
const char* IsaName(Isa isa);
int64_t RowWords(Isa isa, int64_t k);
void PopcountGemm(Isa isa, const u64* a, int64_t m, const u64* b, int64_t n, int64_t lp,
                  const int64_t* base_rows, int64_t base_const, float* out,
                  const ParallelFor& parallel_for);
void PopcountGemm(Isa isa, const u64* a, int64_t m, const u64* b, int64_t n, int64_t lp,
                  const int64_t* base_rows, int64_t base_const, int32_t* out,
                  const ParallelFor& parallel_for);
int64_t PackRowF32(Isa isa, const float* row, int64_t k, bool strict, uint32_t* dst32,
                   int64_t words32);
}  // namespace kernels

using kernels::Isa;

// The "isa" attribute's names (the reported names are kernels::IsaName's).
static const struct {
  const char* name;
  Isa isa;
  const char* needs;
} kIsaNames[] = {{"avx512", Isa::kAvx512, "AVX-512 F/BW/VPOPCNTDQ"},
                 {"avx2", Isa::kAvx2, "AVX2"},
                 {"popcnt", Isa::kPopcnt, "POPCNT"},
                 {"generic", Isa::kGeneric, ""}};

// Parses the "isa" attribute; refuses an ISA the CPU lacks instead of crashing on SIGILL.
static Status ParseIsa(const std::string& name, Isa* isa) {
  if (name == "auto") {
    *isa = kernels::BestIsa();
    return Status();
  }
  for (const auto& entry : kIsaNames) {
    if (name != entry.name) continue;
    if (!kernels::CpuSupports(entry.isa))
      return InvalidArgument("isa='", name, "' requested but this CPU lacks ", entry.needs);
    *isa = entry.isa;
    return Status();
  }
  return InvalidArgument(
      "isa must be one of 'auto', 'avx512', 'avx2', 'popcnt', 'generic'; got '", name, "'");
}

// Runs the GEMM's work units on TensorFlow's intra-op thread pool.
static kernels::ParallelFor ThreadPoolFor(OpKernelContext* ctx) {
  const auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
  return [threads](int64_t units, int64_t cost,
                   const std::function<void(int64_t, int64_t)>& work) {
    tensorflow::Shard(threads->num_threads, threads->workers, units, cost, work);
  };
}

// ---------------------------------------------------------------------------------------------
// Normalisation of packed rows (32- or 64-bit words) into masked, zero-padded 64-bit rows.

static inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

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
    .Attr("isa: string = 'auto'")
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
    std::string isa;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("isa", &isa));
    OP_REQUIRES_OK(ctx, ParseIsa(isa, &isa_));
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
    // float32 rows go through the vectorised packers, which write 32-bit words: a 64-bit word
    // is two little-endian 32-bit words.
    constexpr bool fast = std::is_same<T, float>::value &&
                          __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
    const Isa isa = isa_;
    auto work = [&](int64_t begin, int64_t end) {
      typedef typename std::make_unsigned<W>::type UW;
      for (int64_t r = begin; r < end; ++r) {
        const T* row = src + r * k;
        if (fast) {
          // The row's 64-bit word count is even in 32-bit words except for a final half word,
          // which is zeroed after the 32-bit view.
          const int64_t words32 = CeilDiv(k, 32);
          uint32_t* out32 = reinterpret_cast<uint32_t*>(dst + r * words);
          const int64_t at = kernels::PackRowF32(isa, reinterpret_cast<const float*>(row), k,
                                                 strict, out32, words32);
          if (kBits == 64 && (words32 & 1)) out32[words32] = 0;
          if (at >= 0) {
            int64_t expected = -1;
            bad.compare_exchange_strong(expected, r * k + at);
          }
          continue;
        }
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
  Isa isa_;
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
    const int64_t lp = kernels::RowWords(isa_, k_);
    Tensor na, nb;
    OP_REQUIRES_OK(ctx, AllocateWords(ctx, m * lp, &na));
    OP_REQUIRES_OK(ctx, AllocateWords(ctx, n * lp, &nb));
    NormalizeRows(ctx, a.flat<W>().data(), m, wa, k_, WordsOf(&na), lp);
    NormalizeRows(ctx, b.flat<W>().data(), n, wb, k_, WordsOf(&nb), lp);
    kernels::PopcountGemm(isa_, WordsOf(&na), m, WordsOf(&nb), n, lp, nullptr, k_,
                          out->flat<OutT>().data(), ThreadPoolFor(ctx));
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
    const int64_t lp = kernels::RowWords(isa_, ktot), cwords = CeilDiv(c, 64);

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
    kernels::PopcountGemm(isa_, patch, pixels, filt, o, lp, base, 0, dst, ThreadPoolFor(ctx));
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
// TfcKernelIsa: the path an "isa" value selects on this CPU ("auto": the best one), for reports
// and tests; an error if the CPU lacks it. TfcSupportedIsas: the "isa" values this CPU can run.

REGISTER_OP("TfcKernelIsa")
    .Output("selected: string")
    .Attr("isa: string = 'auto'")
    .SetIsStateful()
    .SetShapeFn(::tensorflow::shape_inference::ScalarShape);

class KernelIsaOp : public OpKernel {
 public:
  explicit KernelIsaOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string isa;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("isa", &isa));
    OP_REQUIRES_OK(ctx, ParseIsa(isa, &isa_));
  }
  void Compute(OpKernelContext* ctx) override {
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
    out->scalar<tensorflow::tstring>()() = kernels::IsaName(isa_);
  }

 private:
  Isa isa_;
};

REGISTER_KERNEL_BUILDER(Name("TfcKernelIsa").Device(DEVICE_CPU), KernelIsaOp);

REGISTER_OP("TfcSupportedIsas")
    .Output("isas: string")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->Vector(c->UnknownDim()));
      return Status();
    });

class SupportedIsasOp : public OpKernel {
 public:
  explicit SupportedIsasOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    std::vector<std::string> names;
    for (const auto& entry : kIsaNames)
      if (kernels::CpuSupports(entry.isa)) names.push_back(entry.name);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, TensorShape({static_cast<int64_t>(names.size())}), &out));
    for (size_t i = 0; i < names.size(); ++i) out->vec<tensorflow::tstring>()(i) = names[i];
  }
};

REGISTER_KERNEL_BUILDER(Name("TfcSupportedIsas").Device(DEVICE_CPU), SupportedIsasOp);

}  // namespace tfcompress
