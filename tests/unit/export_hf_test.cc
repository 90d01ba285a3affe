#include "engine/export/export_hf.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "engine/analysis/quantize.h"
#include "engine/export/safetensors_writer.h"
#include "engine/formats/safetensors.h"
#include "engine/runtime/forward.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_util.h"

namespace superweight::export_hf_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

using testing::TinyStories;

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

std::vector<float> Rows(const Matrix& m) {
  std::vector<float> values(m.rows * m.cols);
  for (int64_t r = 0; r < m.rows; ++r) m.RowToFloat(r, &values[r * m.cols]);
  return values;
}

float FromBFloat16Bits(uint16_t bits) {
  const uint32_t wide = uint32_t{bits} << 16;
  float f;
  std::memcpy(&f, &wide, 4);
  return f;
}

// Every linear weight of `exported` is `expected`'s, each value passed through `stored`
// (identity for f32, the bf16 rounding for bf16), compared bit for bit.
template <typename Stored>
void ExpectSameLinearWeights(const Model& expected, const Model& exported, Stored stored) {
  ASSERT_EQ(expected.layers.size(), exported.layers.size());
  for (size_t l = 0; l < expected.layers.size(); ++l) {
    for (int k = 0; k < kNumLinearKinds; ++k) {
      const Matrix& want = expected.layers[l].Get(static_cast<LinearKind>(k));
      const Matrix& got = exported.layers[l].Get(static_cast<LinearKind>(k));
      SCOPED_TRACE(std::to_string(l) + " " + LinearKindName(static_cast<LinearKind>(k)));
      ASSERT_EQ(got.rows, want.rows);
      ASSERT_EQ(got.cols, want.cols);
      std::vector<float> want_values = Rows(want);
      for (float& v : want_values) v = stored(v);
      const std::vector<float> got_values = Rows(got);
      ASSERT_EQ(std::memcmp(got_values.data(), want_values.data(), got_values.size() * 4), 0);
    }
  }
}

std::vector<float> Logits(const Model& model, const std::vector<int32_t>& tokens) {
  SequenceInput input{tokens, nullptr};
  ForwardOptions fo;
  fo.precision = Precision::kF32;
  auto out = RunForward(model, {&input, 1}, fo);
  EXPECT_TRUE(out.ok()) << out.status();
  std::vector<float> logits(tokens.size() * model.config.vocab);
  EXPECT_TRUE(ComputeLogits(model, out->hidden.data(), static_cast<int64_t>(tokens.size()),
                            logits.data(), Precision::kF32)
                  .ok());
  return logits;
}

// max |a - b| over max |b|.
double RelativeError(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max<double>(diff, std::fabs(a[i] - b[i]));
    scale = std::max<double>(scale, std::fabs(b[i]));
  }
  return diff / scale;
}

Json ReadJsonFile(const std::string& path) {
  const std::vector<uint8_t> bytes = testing::ReadAll(path);
  return Json::parse(bytes.begin(), bytes.end(), nullptr, false);
}

TEST(ExportHf, TinyStoriesF32ReopensWithTheSameWeightsConfigAndTokenizer) {
  const auto source = TinyStories();
  const std::string out = testing::ScratchDir("export_hf_f32") + "/out";
  ASSERT_TRUE(ExportHuggingFace(*source, out, DType::kF32).ok());
  EXPECT_THAT(testing::DirectoryEntries(out),
              ElementsAre("config.json", "generation_config.json", "model.safetensors",
                          "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"));
  for (const char* name : {"generation_config.json", "special_tokens_map.json", "tokenizer.json",
                           "tokenizer_config.json"}) {
    EXPECT_EQ(testing::ReadAll(out + "/" + name),
              testing::ReadAll(testing::TestData("hf_tinystories_656k/") + name))
        << name;
  }
  // The source's config, its keys in order, with the dtype and tying stated.
  const Json config = ReadJsonFile(out + "/config.json");
  Json want = ReadJsonFile(testing::TestData("hf_tinystories_656k/config.json"));
  want["torch_dtype"] = "float32";
  want["tie_word_embeddings"] = true;
  EXPECT_EQ(config, want);

  auto exported = OpenModel(out);
  ASSERT_TRUE(exported.ok()) << exported.status();
  const Model& e = **exported;
  ExpectSameLinearWeights(*source, e, [](float v) { return v; });
  EXPECT_EQ(e.lm_head.data, e.embed.data);  // tied, stored once
  EXPECT_EQ(Rows(e.embed), Rows(source->embed));
  EXPECT_EQ(e.final_norm, source->final_norm);
  for (size_t l = 0; l < e.layers.size(); ++l) {
    EXPECT_EQ(e.layers[l].attn_norm, source->layers[l].attn_norm);
    EXPECT_EQ(e.layers[l].ffn_norm, source->layers[l].ffn_norm);
  }
  EXPECT_EQ(e.config.add_bos, source->config.add_bos);
  EXPECT_EQ(e.config.bos_token, source->config.bos_token);

  // The file itself: 8-byte aligned header, format "pt", every tensor F32.
  const std::vector<uint8_t> bytes = testing::ReadAll(out + "/model.safetensors");
  uint64_t header_length = 0;
  std::memcpy(&header_length, bytes.data(), 8);
  EXPECT_EQ(header_length % 8, 0u);
  auto parsed = ParseSafetensors(bytes, "model.safetensors");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->metadata.at("format"), "pt");
  EXPECT_EQ(parsed->tensors.size(), 2u + 9u * source->layers.size());
  EXPECT_EQ(parsed->tensors.count("lm_head.weight"), 0u);
  for (const auto& [name, t] : parsed->tensors) EXPECT_EQ(t.dtype, DType::kF32) << name;
}

TEST(ExportHf, FakeQuantizedViewExportsItsQuantizedValuesInF32AndBf16) {
  const auto source = TinyStories();
  auto q = FakeQuantizeModel(*source, {4, 256, ClipMethod::kNone, 0}, {{1, 37, 101}},
                             /*quantize_lm_head=*/false);
  ASSERT_TRUE(q.ok()) << q.status();
  const std::string dir = testing::ScratchDir("export_hf_quantized");
  ASSERT_TRUE(ExportHuggingFace(*q->model, dir + "/f32", DType::kF32).ok());
  ASSERT_TRUE(ExportHuggingFace(*q->model, dir + "/bf16", DType::kBF16).ok());
  EXPECT_THAT(testing::DirectoryEntries(dir), ElementsAre("bf16", "f32"));  // no temporaries

  auto f32 = OpenModel(dir + "/f32");
  ASSERT_TRUE(f32.ok()) << f32.status();
  ExpectSameLinearWeights(*q->model, **f32, [](float v) { return v; });
  // Not merely the source: quantization moved the values, and the kept super weight is back.
  EXPECT_NE(Rows((*f32)->layers[0].Get(LinearKind::kQ)),
            Rows(source->layers[0].Get(LinearKind::kQ)));
  EXPECT_EQ((*f32)->layers[1].Get(LinearKind::kDown).At(37, 101),
            source->layers[1].Get(LinearKind::kDown).At(37, 101));

  auto bf16 = OpenModel(dir + "/bf16");
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_EQ((*bf16)->layers[0].Get(LinearKind::kQ).dtype, DType::kBF16);
  ExpectSameLinearWeights(*q->model, **bf16,
                          [](float v) { return FromBFloat16Bits(FloatToBFloat16ForExport(v)); });
  EXPECT_EQ(ReadJsonFile(dir + "/bf16/config.json")["torch_dtype"], "bfloat16");
}

TEST(ExportHf, InterleavedRopeRowsComeOutInRotateHalfOrder) {
  // llama2.c keeps q/k rows in interleaved-pair order; the export's rotate-half rows, run as
  // Hugging Face runs them, give the same logits.
  auto source = OpenModel(testing::TestData("stories260K/stories260K.bin"));
  ASSERT_TRUE(source.ok()) << source.status();
  ASSERT_TRUE((*source)->config.rope.interleaved);
  const std::string out = testing::ScratchDir("export_hf_rope") + "/out";
  ASSERT_TRUE(ExportHuggingFace(**source, out, DType::kF32).ok());
  EXPECT_THAT(testing::DirectoryEntries(out), ElementsAre("config.json", "model.safetensors"));
  auto exported = OpenModel(out);
  ASSERT_TRUE(exported.ok()) << exported.status();
  EXPECT_FALSE((*exported)->config.rope.interleaved);

  // Row s * half + i of each head is stored row 2i + s.
  const int head_dim = (*source)->config.head_dim, half = head_dim / 2;
  const Matrix& stored_k = (*source)->layers[2].Get(LinearKind::kK);
  const Matrix& exported_k = (*exported)->layers[2].Get(LinearKind::kK);
  std::vector<float> stored_row(stored_k.cols), exported_row(stored_k.cols);
  for (int64_t row = 0; row < stored_k.rows; ++row) {
    const int64_t head = row / head_dim, within = row % head_dim;
    stored_k.RowToFloat(head * head_dim + 2 * (within % half) + within / half, stored_row.data());
    exported_k.RowToFloat(row, exported_row.data());
    ASSERT_EQ(stored_row, exported_row) << row;
  }
  const std::vector<int32_t> tokens = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376};
  EXPECT_LT(RelativeError(Logits(**exported, tokens), Logits(**source, tokens)), 1e-5);

  const Json config = ReadJsonFile(out + "/config.json");
  EXPECT_EQ(config["model_type"], "llama");
  EXPECT_EQ(config["architectures"], Json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(config["head_dim"], head_dim);
  EXPECT_EQ(config["rms_norm_eps"], 1e-5);  // the shortest decimal of the float
  EXPECT_EQ(config["bos_token_id"], 1);
  EXPECT_EQ(config["torch_dtype"], "float32");
}

TEST(ExportHf, Qwen2BiasesAreReorderedWithTheirRows) {
  // TinyStories' weights read as an interleaved Qwen2 with biases: a synthesized config, biases
  // written, and q/k rows and biases reordered alike (else the logits would move).
  const auto source = TinyStories();
  std::unique_ptr<Model> view = source->ShareWeights();
  view->format = ModelFormat::kGguf;
  view->config.arch = Architecture::kQwen2;
  view->config.rope.interleaved = true;
  const int64_t q_rows = int64_t{view->config.heads} * view->config.head_dim;
  const int64_t kv_rows = int64_t{view->config.kv_heads} * view->config.head_dim;
  for (size_t l = 0; l < view->layers.size(); ++l) {
    LayerWeights& w = view->layers[l];
    w.q_bias.resize(q_rows);
    w.k_bias.resize(kv_rows);
    w.v_bias.resize(kv_rows);
    for (int64_t i = 0; i < q_rows; ++i) w.q_bias[i] = std::sin(0.7f * i + l);
    for (int64_t i = 0; i < kv_rows; ++i) w.k_bias[i] = std::cos(0.3f * i - l);
    for (int64_t i = 0; i < kv_rows; ++i) w.v_bias[i] = 0.01f * i;
  }
  const std::string out = testing::ScratchDir("export_hf_qwen2") + "/out";
  ASSERT_TRUE(ExportHuggingFace(*view, out, DType::kF32).ok());
  auto exported = OpenModel(out);
  ASSERT_TRUE(exported.ok()) << exported.status();
  EXPECT_EQ((*exported)->config.arch, Architecture::kQwen2);
  EXPECT_EQ((*exported)->layers[1].v_bias, view->layers[1].v_bias);
  EXPECT_NE((*exported)->layers[1].q_bias, view->layers[1].q_bias);  // reordered
  const std::vector<int32_t> tokens = {1, 147, 201, 282, 215, 286, 598, 1662, 356};
  EXPECT_LT(RelativeError(Logits(**exported, tokens), Logits(*view, tokens)), 1e-5);
  EXPECT_EQ(ReadJsonFile(out + "/config.json")["model_type"], "qwen2");
}

TEST(ExportHf, Phi3ProjectionsAreWrittenFused) {
  const auto source = TinyStories();
  std::unique_ptr<Model> view = source->ShareWeights();
  view->format = ModelFormat::kGguf;
  view->config.arch = Architecture::kPhi3;
  const std::string out = testing::ScratchDir("export_hf_phi3") + "/out";
  ASSERT_TRUE(ExportHuggingFace(*view, out, DType::kF32).ok());
  auto exported = OpenModel(out);
  ASSERT_TRUE(exported.ok()) << exported.status();
  EXPECT_EQ((*exported)->config.arch, Architecture::kPhi3);
  ExpectSameLinearWeights(*view, **exported, [](float v) { return v; });
  auto parsed = ParseSafetensors(testing::ReadAll(out + "/model.safetensors"), "phi3");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT(parsed->tensors.at("model.layers.0.self_attn.qkv_proj.weight").shape,
              ElementsAre(128 + 2 * 64, 128));
  EXPECT_THAT(parsed->tensors.at("model.layers.0.mlp.gate_up_proj.weight").shape,
              ElementsAre(2 * 384, 128));
}

TEST(ExportHf, RefusesAnExistingDirectoryAndBadDtypes) {
  const auto source = TinyStories();
  const std::string dir = testing::ScratchDir("export_hf_exists");
  ASSERT_EQ(mkdir((dir + "/out").c_str(), 0755), 0);
  EXPECT_EQ(ExportHuggingFace(*source, dir + "/out", DType::kF32).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ExportHuggingFace(*source, dir + "/out/", DType::kF32).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(testing::DirectoryEntries(dir + "/out").empty());
  EXPECT_EQ(ExportHuggingFace(*source, dir + "/f16", DType::kF16).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ExportHuggingFace(*source, dir + "/missing/out", DType::kF32).code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(testing::DirectoryEntries(dir), ElementsAre("out"));
}

// Creates `path` as a directory the first time a row is read: another writer taking out_dir
// while the export runs.
class DirectoryCreatingTransform : public WeightTransform {
 public:
  explicit DirectoryCreatingTransform(std::string path) : path_(std::move(path)) {}
  void Apply(int64_t, int64_t, int64_t, float*) const override {
    if (!created_) created_ = ::mkdir(path_.c_str(), 0755) == 0;
  }

 private:
  std::string path_;
  mutable bool created_ = false;
};

TEST(ExportHf, FailuresLeaveNoTemporaryBehind) {
  const auto source = TinyStories();
  const std::string dir = testing::ScratchDir("export_hf_fail");
  // out_dir appears after the checks, while the weights are written: the rename refuses to
  // replace it and the whole temporary goes.
  const DirectoryCreatingTransform racer(dir + "/out");
  std::unique_ptr<Model> view = source->ShareWeights();
  view->layers[0].Get(LinearKind::kDown).transform = &racer;
  const absl::Status raced = ExportHuggingFace(*view, dir + "/out", DType::kF32);
  EXPECT_EQ(raced.code(), absl::StatusCode::kAlreadyExists) << raced;
  EXPECT_THAT(testing::DirectoryEntries(dir), ElementsAre("out"));
  EXPECT_TRUE(testing::DirectoryEntries(dir + "/out").empty());

  // A Hugging Face source whose config.json went away: refused before anything is made.
  std::unique_ptr<Model> moved = source->ShareWeights();
  moved->path = dir + "/nowhere";
  EXPECT_EQ(ExportHuggingFace(*moved, dir + "/out2", DType::kF32).code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(testing::DirectoryEntries(dir), ElementsAre("out"));
  EXPECT_FALSE(Exists(dir + "/out2"));

  // Cancelled while its rows are written: CANCELLED, and the temporary goes too.
  std::atomic<bool> cancelled{true};
  EXPECT_EQ(ExportHuggingFace(*source, dir + "/out3", DType::kF32, &cancelled).code(),
            absl::StatusCode::kCancelled);
  EXPECT_THAT(testing::DirectoryEntries(dir), ElementsAre("out"));
}

TEST(SafetensorsWriter, WritesSortedAlignedTensorsAndRoundsBf16ToNearestEven) {
  EXPECT_EQ(FloatToBFloat16ForExport(1.f), 0x3F80);
  auto from_bits = [](uint32_t bits) {
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  };
  EXPECT_EQ(FloatToBFloat16ForExport(from_bits(0x3F808000u)), 0x3F80);  // tie: to even (down)
  EXPECT_EQ(FloatToBFloat16ForExport(from_bits(0x3F818000u)), 0x3F82);  // tie: to even (up)
  EXPECT_EQ(FloatToBFloat16ForExport(from_bits(0x3F808001u)), 0x3F81);
  EXPECT_EQ(FloatToBFloat16ForExport(-0.f), 0x8000);
  EXPECT_EQ(FloatToBFloat16ForExport(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(FloatToBFloat16ForExport(std::numeric_limits<float>::max()), 0x7F80);  // overflows
  EXPECT_EQ(FloatToBFloat16ForExport(from_bits(0x7F800001u)), 0x7FC0);             // NaN stays NaN
  EXPECT_EQ(FloatToBFloat16ForExport(from_bits(0xFFC12345u)), 0xFFC1);
  EXPECT_EQ(FloatToBFloat16ForExport(from_bits(0x00018000u)), 0x0002);  // subnormal kept

  SafetensorsWriter writer(DType::kBF16);
  ASSERT_TRUE(writer
                  .AddTensor("b", {2, 3},
                             [](int64_t row, float* values) {
                               for (int c = 0; c < 3; ++c) values[c] = row * 3 + c;
                             })
                  .ok());
  ASSERT_TRUE(
      writer.AddTensor("a", {5}, [](int64_t, float* values) { std::fill(values, values + 5, 2.f); })
          .ok());
  EXPECT_FALSE(writer.AddTensor("a", {1}, [](int64_t, float*) {}).ok());
  EXPECT_FALSE(writer.AddTensor("c", {1, 1, 1}, [](int64_t, float*) {}).ok());
  const std::string path = testing::ScratchDir("safetensors_writer") + "/t.safetensors";
  ASSERT_TRUE(writer.Write(path).ok());
  EXPECT_EQ(writer.Write(path).code(), absl::StatusCode::kAlreadyExists);
  const std::vector<uint8_t> bytes = testing::ReadAll(path);
  uint64_t header_length = 0;
  std::memcpy(&header_length, bytes.data(), 8);
  EXPECT_EQ(header_length % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + header_length + (5 + 6) * 2);
  auto parsed = ParseSafetensors(bytes, path);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->metadata.at("format"), "pt");
  const SafetensorsTensor& a = parsed->tensors.at("a");
  const SafetensorsTensor& b = parsed->tensors.at("b");
  EXPECT_EQ(a.dtype, DType::kBF16);
  EXPECT_LT(a.data, b.data);  // sorted by name
  uint16_t b_values[6];
  std::memcpy(b_values, b.data, sizeof(b_values));
  EXPECT_EQ(FromBFloat16Bits(b_values[5]), 5.f);
}

}  // namespace
}  // namespace superweight::export_hf_test
