// engine/formats/gguf_writer.h (GgufFileWriter); tests/unit/gguf_writer.h is the tests' own
// in-memory builder, used here to make sources with every metadata value type.
#include "engine/formats/gguf_writer.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "engine/formats/dequantize.h"
#include "engine/formats/gguf.h"
#include "engine/formats/gguf_requantize.h"
#include "engine/formats/quantize_ggml.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/gguf_writer.h"
#include "tests/unit/test_util.h"

namespace superweight::gguf_writer_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Metadata entries of the types tests/unit/gguf_writer.h has no method for (arrays of int32 and
// float32, bool, int8...), as KvRaw takes them.
struct RawKv {
  std::string key;
  uint32_t type;
  std::vector<uint8_t> encoded;
};

template <typename T>
void Put(std::vector<uint8_t>& out, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.insert(out.end(), b, b + sizeof(T));
}

template <typename T>
RawKv ArrayKv(const std::string& key, uint32_t elem_type, const std::vector<T>& values) {
  RawKv kv{key, kGgufArray, {}};
  Put(kv.encoded, elem_type);
  Put(kv.encoded, uint64_t{values.size()});
  for (T v : values) Put(kv.encoded, v);
  return kv;
}

// A source file: tokenizer-like metadata of many value types and three tensors.
std::vector<uint8_t> SourceFile(const std::vector<RawKv>& extra) {
  testing::GgufWriter w;
  w.KvString("general.architecture", "llama");
  w.KvU32("llama.block_count", 1);
  w.KvF32("llama.rope.freq_base", 10000.f);
  w.KvStringArray("tokenizer.ggml.tokens", {"<s>", "a", "b", "ab"});
  w.KvU64("some.u64", 1ull << 40);
  for (const RawKv& kv : extra) w.KvRaw(kv.key, kv.type, kv.encoded);
  std::vector<float> f32(64);
  for (int i = 0; i < 64; ++i) f32[i] = 0.25f * i - 3.f;
  std::vector<uint8_t> f32_bytes(256);
  std::memcpy(f32_bytes.data(), f32.data(), 256);
  w.Tensor("blk.0.attn_norm.weight", {64}, 0, f32_bytes);
  auto q8 = QuantizeTensor(DType::kQ8_0, f32.data(), 2, 32);
  w.Tensor("blk.0.ffn_up.weight", {32, 2}, 8, *q8);
  w.Tensor("token_embd.weight", {32, 2}, 0, f32_bytes);
  return w.Bytes();
}

std::vector<RawKv> ExtraKvs() {
  std::vector<RawKv> extra;
  extra.push_back(ArrayKv<int32_t>("tokenizer.ggml.token_type", kGgufI32, {3, 1, 1, -1}));
  extra.push_back(ArrayKv<float>("tokenizer.ggml.scores", kGgufF32, {0.f, -1.5f, -2.f, 1e-3f}));
  extra.push_back({"tokenizer.ggml.add_bos_token", kGgufBool, {1}});
  extra.push_back({"some.i8", kGgufI8, {0xFE}});
  extra.push_back(ArrayKv<uint8_t>("some.bools", kGgufBool, {1, 0, 1}));
  return extra;
}

TEST(GgufFileWriter, CopiesMetadataByteForByteAndTensorsExactly) {
  const std::vector<uint8_t> source_bytes = SourceFile(ExtraKvs());
  auto source = ParseGguf(source_bytes, "source.gguf");
  ASSERT_TRUE(source.ok()) << source.status();
  ASSERT_EQ(source->metadata_order.size(), 10u);
  EXPECT_EQ(source->metadata.at("tokenizer.ggml.token_type").type, kGgufArray);

  GgufFileWriter w;
  w.CopyMetadataFrom(*source);
  for (const std::string& name : source->tensor_order) {
    const GgufTensor& t = source->tensors.at(name);
    ASSERT_TRUE(w.AddTensor(name, t.ne, t.dtype, absl::MakeConstSpan(t.data, t.nbytes)).ok());
  }
  const std::string dir = testing::ScratchDir("gguf_writer_copy");
  const std::string path = dir + "/out.gguf";
  ASSERT_TRUE(w.WriteAtomically(path).ok());
  EXPECT_THAT(testing::DirectoryEntries(dir), ElementsAre("out.gguf"));

  const std::vector<uint8_t> bytes = testing::ReadAll(path);
  auto out = ParseGguf(bytes, path);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->version, 3u);
  EXPECT_EQ(out->metadata_order, source->metadata_order);
  for (const std::string& key : source->metadata_order) {
    const GgufValue& a = source->metadata.at(key);
    const GgufValue& b = out->metadata.at(key);
    EXPECT_EQ(a.type, b.type) << key;
    EXPECT_EQ(std::vector<uint8_t>(a.encoded.begin(), a.encoded.end()),
              std::vector<uint8_t>(b.encoded.begin(), b.encoded.end()))
        << key;
  }
  EXPECT_THAT(out->Find("tokenizer.ggml.token_type")->numbers, ElementsAre(3, 1, 1, -1));
  EXPECT_EQ(out->GetInt("some.i8"), -2);
  EXPECT_EQ(out->GetBool("tokenizer.ggml.add_bos_token"), true);
  EXPECT_EQ(out->tensor_order, source->tensor_order);
  for (const std::string& name : source->tensor_order) {
    const GgufTensor& a = source->tensors.at(name);
    const GgufTensor& b = out->tensors.at(name);
    EXPECT_EQ(a.ne, b.ne) << name;
    EXPECT_EQ(a.dtype, b.dtype) << name;
    ASSERT_EQ(a.nbytes, b.nbytes) << name;
    EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0) << name;
    EXPECT_EQ((b.data - bytes.data()) % 32, 0) << name;
  }
  // Every tensor padded to the alignment, the last one too.
  EXPECT_EQ(bytes.size() % 32, 0u);
  // The mode of any new file (0666 less the umask), not mkstemp's 0600.
  const mode_t umask_bits = umask(0);
  umask(umask_bits);
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0666 & ~umask_bits);
}

TEST(GgufFileWriter, SettersOverrideInPlaceAndAppend) {
  const std::vector<uint8_t> source_bytes = SourceFile({});  // the parse points into it
  auto source = ParseGguf(source_bytes, "source.gguf");
  ASSERT_TRUE(source.ok()) << source.status();
  GgufFileWriter w;
  w.CopyMetadataFrom(*source, [](const std::string& key) { return key == "some.u64"; });
  w.SetString("general.architecture", "qwen2");
  w.SetUint32("general.file_type", 7);
  w.SetFloat32("llama.rope.freq_base", 5e5f);
  w.SetUint32("general.alignment", 64);
  EXPECT_TRUE(w.Has("general.file_type"));
  EXPECT_TRUE(w.Remove("llama.block_count"));
  EXPECT_FALSE(w.Remove("llama.block_count"));
  std::vector<uint8_t> data(34 * 3);
  ASSERT_TRUE(w.AddTensor("x", {32, 3}, DType::kQ8_0, data).ok());
  std::vector<float> values(96, 0.5f);
  ASSERT_TRUE(w.AddTensor("y", {96}, DType::kQ4_1,
                          [&](const GgufFileWriter::ByteSink& sink) -> absl::Status {
                            for (int b = 0; b < 3; ++b) {  // a block at a time
                              std::vector<uint8_t> q(20);
                              if (auto s = QuantizeRow(DType::kQ4_1, &values[32 * b], 32, q.data());
                                  !s.ok())
                                return s;
                              if (auto s = sink(q); !s.ok()) return s;
                            }
                            return absl::OkStatus();
                          })
                  .ok());
  const std::string path = testing::ScratchDir("gguf_writer_set") + "/out.gguf";
  ASSERT_TRUE(w.WriteAtomically(path).ok());
  const std::vector<uint8_t> bytes = testing::ReadAll(path);
  auto out = ParseGguf(bytes, path);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(out->metadata_order,
              ElementsAre("general.architecture", "llama.rope.freq_base", "tokenizer.ggml.tokens",
                          "general.file_type", "general.alignment"));
  EXPECT_EQ(out->GetString("general.architecture"), "qwen2");
  EXPECT_EQ(out->metadata.at("general.file_type").type, kGgufU32);
  EXPECT_EQ(out->GetInt("general.file_type"), 7);
  EXPECT_EQ(out->metadata.at("llama.rope.freq_base").type, kGgufF32);
  EXPECT_EQ(out->GetFloat("llama.rope.freq_base"), 5e5);
  EXPECT_EQ((out->tensors.at("x").data - bytes.data()) % 64, 0);
  EXPECT_EQ((out->tensors.at("y").data - bytes.data()) % 64, 0);
  std::vector<float> back(96);
  DequantizeRow(DType::kQ4_1, out->tensors.at("y").data, 96, back.data());
  EXPECT_THAT(back, ::testing::Each(HalfToFloat(GgmlFloatToHalf(0.5f))));
}

TEST(GgufFileWriter, RefusesBadTensors) {
  GgufFileWriter w;
  std::vector<uint8_t> data(34);
  EXPECT_TRUE(w.AddTensor("a", {32}, DType::kQ8_0, data).ok());
  EXPECT_THAT(std::string(w.AddTensor("a", {32}, DType::kQ8_0, data).message()),
              HasSubstr("twice"));
  EXPECT_FALSE(w.AddTensor("b", {16}, DType::kQ8_0, data).ok());     // not whole blocks
  EXPECT_FALSE(w.AddTensor("c", {64}, DType::kQ8_0, data).ok());     // wrong size
  EXPECT_FALSE(w.AddTensor("d", {}, DType::kQ8_0, data).ok());       // no dimension
  EXPECT_FALSE(w.AddTensor("e", {32, 0}, DType::kQ8_0, data).ok());  // empty dimension
  EXPECT_FALSE(w.AddTensor(std::string(64, 'n'), {32}, DType::kQ8_0, data).ok());
  EXPECT_FALSE(w.AddTensor("", {32}, DType::kQ8_0, data).ok());
  w.SetFloat32("general.alignment", 32.f);  // llama.cpp wants a uint32
  const std::string dir = testing::ScratchDir("gguf_writer_bad_alignment");
  EXPECT_EQ(w.WriteAtomically(dir + "/out.gguf").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(testing::DirectoryEntries(dir).empty());
}

TEST(GgufFileWriter, FailedWritesLeaveNoTemporaryAndKeepTheOldFile) {
  const std::string dir = testing::ScratchDir("gguf_writer_fail");
  const std::string path = dir + "/out.gguf";
  testing::WriteAll(path, "old", 3);

  // A producer that fails halfway: the old file stays, no temporary is left.
  GgufFileWriter failing;
  failing.SetString("general.architecture", "llama");
  ASSERT_TRUE(failing
                  .AddTensor("t", {32, 4}, DType::kQ8_0,
                             [](const GgufFileWriter::ByteSink& sink) -> absl::Status {
                               std::vector<uint8_t> row(34);
                               if (auto s = sink(row); !s.ok()) return s;
                               return absl::DataLossError("source went away");
                             })
                  .ok());
  absl::Status s = failing.WriteAtomically(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("tensor 't'"));
  EXPECT_THAT(testing::DirectoryEntries(dir), ElementsAre("out.gguf"));
  EXPECT_EQ(testing::ReadAll(path), std::vector<uint8_t>({'o', 'l', 'd'}));

  // A producer that gives too few bytes.
  GgufFileWriter short_tensor;
  ASSERT_TRUE(short_tensor
                  .AddTensor("t", {32, 4}, DType::kQ8_0,
                             [](const GgufFileWriter::ByteSink& sink) {
                               return sink(std::vector<uint8_t>(34));
                             })
                  .ok());
  EXPECT_FALSE(short_tensor.WriteAtomically(path).ok());
  EXPECT_THAT(testing::DirectoryEntries(dir), ElementsAre("out.gguf"));

  // Renaming over a directory fails after the whole temporary was written.
  ASSERT_EQ(mkdir((dir + "/sub").c_str(), 0755), 0);
  GgufFileWriter fine;
  fine.SetString("general.architecture", "llama");
  EXPECT_FALSE(fine.WriteAtomically(dir + "/sub").ok());
  EXPECT_THAT(testing::DirectoryEntries(dir), ElementsAre("out.gguf", "sub"));

  // Directories that cannot take the temporary: missing, a file, and (unless this runs as root,
  // whom permissions do not stop) read-only.
  EXPECT_FALSE(fine.WriteAtomically(dir + "/missing/out.gguf").ok());
  EXPECT_FALSE(fine.WriteAtomically(path + "/out.gguf").ok());
  if (geteuid() != 0) {
    ASSERT_EQ(chmod((dir + "/sub").c_str(), 0555), 0);
    absl::Status denied = fine.WriteAtomically(dir + "/sub/out.gguf");
    EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied) << denied;
    ASSERT_EQ(chmod((dir + "/sub").c_str(), 0755), 0);
  }
  EXPECT_THAT(testing::DirectoryEntries(dir), ElementsAre("out.gguf", "sub"));
  EXPECT_TRUE(testing::DirectoryEntries(dir + "/sub").empty());
}

TEST(RequantizeGguf, ConvertsBlockWeightsAndCopiesTheRest) {
  const std::string dir = testing::ScratchDir("requantize");
  const std::vector<uint8_t> source_bytes = SourceFile(ExtraKvs());
  testing::WriteAll(dir + "/in.gguf", source_bytes.data(), source_bytes.size());
  auto summary =
      RequantizeGguf(dir + "/in.gguf", dir + "/out.gguf", {DType::kQ4_0, nullptr, std::nullopt});
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_THAT(summary->converted, ElementsAre("blk.0.ffn_up.weight"));
  EXPECT_THAT(summary->copied, ElementsAre("blk.0.attn_norm.weight", "token_embd.weight"));
  auto source = ParseGguf(source_bytes, "in");
  const std::vector<uint8_t> bytes = testing::ReadAll(dir + "/out.gguf");
  auto out = ParseGguf(bytes, "out");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->GetInt("general.file_type"), 2);  // LLAMA_FTYPE_MOSTLY_Q4_0
  for (const std::string& key : source->metadata_order) {
    const GgufValue& a = source->metadata.at(key);
    const GgufValue& b = out->metadata.at(key);
    EXPECT_TRUE(std::equal(a.encoded.begin(), a.encoded.end(), b.encoded.begin(), b.encoded.end()))
        << key;
  }
  const GgufTensor& up = out->tensors.at("blk.0.ffn_up.weight");
  EXPECT_EQ(up.dtype, DType::kQ4_0);
  // Its rows are the source's dequantized, quantized again.
  const GgufTensor& src = source->tensors.at("blk.0.ffn_up.weight");
  std::vector<float> rows(64);
  DequantizeRow(src.dtype, src.data, 64, rows.data());
  auto want = QuantizeTensor(DType::kQ4_0, rows.data(), 2, 32);
  ASSERT_EQ(up.nbytes, want->size());
  EXPECT_EQ(std::vector<uint8_t>(up.data, up.data + up.nbytes), *want);
  EXPECT_EQ(out->tensors.at("token_embd.weight").dtype, DType::kF32);

  // Rows of 32 are not whole Q4_K super-blocks: llama-quantize's fallback, Q5_0, as it does.
  auto k = RequantizeGguf(dir + "/in.gguf", dir + "/k.gguf", {DType::kQ4_K, nullptr, std::nullopt});
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_THAT(k->converted, ElementsAre("blk.0.ffn_up.weight"));
  EXPECT_THAT(k->fallback, ElementsAre("blk.0.ffn_up.weight"));
  EXPECT_TRUE(k->not_whole_blocks.empty());
  const std::vector<uint8_t> k_bytes = testing::ReadAll(dir + "/k.gguf");
  auto k_out = ParseGguf(k_bytes, "k");
  ASSERT_TRUE(k_out.ok()) << k_out.status();
  EXPECT_EQ(k_out->GetInt("general.file_type"), 14);  // LLAMA_FTYPE_MOSTLY_Q4_K_S
  const GgufTensor& k_up = k_out->tensors.at("blk.0.ffn_up.weight");
  EXPECT_EQ(k_up.dtype, DType::kQ5_0);
  auto want_q5_0 = QuantizeTensor(DType::kQ5_0, rows.data(), 2, 32);
  EXPECT_EQ(std::vector<uint8_t>(k_up.data, k_up.data + k_up.nbytes), *want_q5_0);
  EXPECT_THAT(testing::DirectoryEntries(dir), ElementsAre("in.gguf", "k.gguf", "out.gguf"));
}

// A tensor of more rows than one parallel chunk (and a partial last chunk): the bytes of one row
// after another, and a row the quantizer refuses named by its index.
TEST(RequantizeGguf, ManyRowsAreTheRowByRowBytesAndABadRowIsNamed) {
  const std::string dir = testing::ScratchDir("requantize_rows");
  constexpr int64_t kRows = 601, kCols = 64;
  std::vector<float> values(kRows * kCols);
  for (size_t i = 0; i < values.size(); ++i) values[i] = std::sin(0.37f * i) * (1 + i % 7);
  auto write_source = [&](const std::string& path) {
    testing::GgufWriter w;
    w.KvString("general.architecture", "llama");
    std::vector<uint8_t> bytes(values.size() * sizeof(float));
    std::memcpy(bytes.data(), values.data(), bytes.size());
    w.Tensor("blk.0.ffn_down.weight", {kCols, kRows}, 0, bytes);
    const std::vector<uint8_t> file = w.Bytes();
    testing::WriteAll(path, file.data(), file.size());
  };
  write_source(dir + "/in.gguf");
  auto summary =
      RequantizeGguf(dir + "/in.gguf", dir + "/out.gguf", {DType::kQ8_0, nullptr, std::nullopt});
  ASSERT_TRUE(summary.ok()) << summary.status();
  const std::vector<uint8_t> bytes = testing::ReadAll(dir + "/out.gguf");
  auto out = ParseGguf(bytes, "out");
  ASSERT_TRUE(out.ok()) << out.status();
  const GgufTensor& down = out->tensors.at("blk.0.ffn_down.weight");
  auto want = QuantizeTensor(DType::kQ8_0, values.data(), kRows, kCols);
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(std::vector<uint8_t>(down.data, down.data + down.nbytes), *want);

  values[517 * kCols + 3] = std::numeric_limits<float>::infinity();
  write_source(dir + "/bad.gguf");
  auto bad = RequantizeGguf(dir + "/bad.gguf", dir + "/bad-out.gguf",
                            {DType::kQ8_0, nullptr, std::nullopt});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("blk.0.ffn_down.weight row 517"));
  EXPECT_THAT(testing::DirectoryEntries(dir), ElementsAre("bad.gguf", "in.gguf", "out.gguf"));
}

}  // namespace
}  // namespace superweight::gguf_writer_test
