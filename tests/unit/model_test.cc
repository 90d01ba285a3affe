#include "engine/model/model.h"

#include <cstring>
#include <tuple>

#include "engine/runtime/forward.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight::model_test {
namespace {

using ::testing::HasSubstr;

std::vector<int32_t> Greedy(const Model& m, std::vector<int32_t> ids, int steps) {
  std::vector<float> logits(m.config.vocab);
  for (int s = 0; s < steps; ++s) {
    SequenceInput in{ids, nullptr};
    auto out = RunForward(m, {&in, 1}, {});
    EXPECT_TRUE(out.ok()) << out.status();
    EXPECT_TRUE(ComputeLogits(m, &out->hidden[(ids.size() - 1) * m.config.hidden], 1, logits.data(),
                              Precision::kF32)
                    .ok());
    ids.push_back(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  return ids;
}

TEST(Model, OpensLlama2cAndReproducesTheReferenceRun) {
  auto m = OpenModel(testing::TestData("stories260K/stories260K.bin"));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->config.layers, 5);
  EXPECT_EQ((*m)->config.kv_heads, 4);
  EXPECT_TRUE((*m)->config.rope.interleaved);
  // The first greedy tokens of an independent float64 reference (testdata/SOURCES.md).
  EXPECT_THAT(Greedy(**m, {1}, 12), ::testing::ElementsAre(1, 403, 407, 261, 378, 432, 383, 286,
                                                           261, 376, 298, 315, 421));
}

TEST(Model, OpensHuggingFaceDirectoryWithOnlyLmHead) {
  auto m = OpenModel(testing::TestData("hf_tinystories_656k"));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->embed.data, (*m)->lm_head.data);  // tied, stored once as lm_head.weight
  EXPECT_TRUE((*m)->config.add_bos);
  EXPECT_THAT(Greedy(**m, {1}, 8),
              ::testing::ElementsAre(1, 147, 201, 282, 215, 286, 598, 1662, 356));
}

TEST(Model, OpensGgufWithoutCopyingWeights) {
  const std::string path = testing::TestData("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
  auto m = OpenModel(path);
  ASSERT_TRUE(m.ok()) << m.status();
  const Model& model = **m;
  EXPECT_EQ(model.config.layers, 30);
  EXPECT_EQ(model.config.hidden, 576);
  EXPECT_FALSE(model.config.add_bos);
  const Matrix& down = model.layers[3].Get(LinearKind::kDown);
  EXPECT_EQ(down.rows, 576);
  EXPECT_EQ(down.cols, 1536);
  // The view points into the one mapping of the file.
  const uint8_t* base = model.files[0]->data();
  EXPECT_GE(down.data, base);
  EXPECT_LT(down.data, base + model.files[0]->size());
}

TEST(Model, RefusesTruncatedLlama2c) {
  auto bytes = testing::ReadAll(testing::TestData("stories260K/stories260K.bin"));
  const std::string dir = testing::ScratchDir("l2c");
  for (size_t n : {size_t{0}, size_t{10}, size_t{28}, bytes.size() - 4}) {
    testing::WriteAll(dir + "/m.bin", bytes.data(), n);
    auto m = OpenModel(dir + "/m.bin");
    ASSERT_FALSE(m.ok()) << n;
    EXPECT_THAT(std::string(m.status().message()), HasSubstr("m.bin"));
  }
  int32_t bad_header[7] = {64, 172, 5, 8, 3, 512, 512};  // 8 heads, 3 KV heads
  std::vector<uint8_t> b2 = bytes;
  std::memcpy(b2.data(), bad_header, sizeof(bad_header));
  testing::WriteAll(dir + "/m.bin", b2.data(), b2.size());
  EXPECT_FALSE(OpenModel(dir + "/m.bin").ok());
}

TEST(Model, RefusesBrokenHuggingFaceDirectories) {
  const std::string src = testing::TestData("hf_tinystories_656k");
  const std::string dir = testing::ScratchDir("hf");
  ASSERT_EQ(std::system(("cp " + src + "/* " + dir + "/").c_str()), 0);
  auto config = testing::ReadAll(dir + "/config.json");
  std::string text(config.begin(), config.end());

  auto write_config = [&](const std::string& from, const std::string& to) {
    std::string t = text;
    t.replace(t.find(from), from.size(), to);
    testing::WriteAll(dir + "/config.json", t.data(), t.size());
  };
  write_config("\"llama\"", "\"gpt_neox\"");
  auto m = OpenModel(dir);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("gpt_neox"));

  // Features of an architecture the engine does not implement are refused by name too.
  for (const auto& [from, to, named] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"\"rope_scaling\": null", "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}",
            "rope_scaling type 'yarn'"},
           {"\"llama\"", "\"gemma2\", \"hidden_activation\": \"gelu\"", "hidden_activation 'gelu'"},
           {"\"llama\"", "\"gemma3\"", "its text model, model_type 'gemma3_text', is"},
           {"\"llama\"",
            "\"qwen2_moe\", \"num_experts\": 4, \"num_experts_per_tok\": 2, "
            "\"shared_expert_intermediate_size\": 8, \"mlp_only_layers\": [1]",
            "dense layers among the sparse ones"}}) {
    write_config(from, to);
    m = OpenModel(dir);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kUnimplemented) << m.status();
    EXPECT_THAT(std::string(m.status().message()), HasSubstr(named));
  }

  write_config("\"intermediate_size\": 384", "\"intermediate_size\": 385");
  m = OpenModel(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()),
              HasSubstr("layers.0.gate_proj has shape [384, 128], the config says [385, 128]"));

  write_config("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
  m = OpenModel(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("model.layers.2."));

  testing::WriteAll(dir + "/config.json", text.data(), text.size());
  auto weights = testing::ReadAll(dir + "/model.safetensors");
  testing::WriteAll(dir + "/model.safetensors", weights.data(), weights.size() - 100);
  m = OpenModel(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("model.safetensors"));

  EXPECT_EQ(OpenModel(dir + "/nope").status().code(), absl::StatusCode::kNotFound);
}

// Found by tests/fuzz/hf_dir_fuzzer (corpus/hf_dir/crash-*): fields of the wrong JSON type threw
// nlohmann exceptions through OpenModel, numbers too large for an int were converted with
// undefined behaviour, or silently wrapped around.
TEST(Model, RefusesMistypedHuggingFaceConfigs) {
  const std::string src = testing::TestData("hf_tinystories_656k");
  const std::string dir = testing::ScratchDir("hf_types");
  ASSERT_EQ(std::system(("cp " + src + "/* " + dir + "/").c_str()), 0);
  auto config = testing::ReadAll(dir + "/config.json");
  const std::string text(config.begin(), config.end());
  auto open_with = [&](const std::string& from, const std::string& to) {
    std::string t = text;
    t.replace(t.find(from), from.size(), to);
    testing::WriteAll(dir + "/config.json", t.data(), t.size());
    return OpenModel(dir);
  };
  const struct {
    std::string from, to, expect;
  } cases[] = {
      {"\"model_type\": \"llama\"", "\"model_type\": 7", "\"model_type\" is not a string"},
      {"\"hidden_size\": 128", "\"hidden_size\": 1e300", "\"hidden_size\" is out of range"},
      {"\"hidden_size\": 128", "\"hidden_size\": 4294967424", "\"hidden_size\" is out of range"},
      {"\"hidden_size\": 128", "\"hidden_size\": 128.5", "\"hidden_size\" is not a whole number"},
      {"\"rms_norm_eps\": 1e-06", "\"rms_norm_eps\": \"small\"",
       "\"rms_norm_eps\" is not a number"},
      {"\"rope_scaling\": null", "\"rope_scaling\": 1e-06", "rope_scaling is not an object"},
      {"\"rope_scaling\": null", "\"rope_scaling\": {\"rope_type\": 3}", "\"rope_type\" is not a"},
      {"\"rope_scaling\": null",
       "\"rope_scaling\": {\"rope_type\": \"llama3\", \"original_max_position_embeddings\": 1e300}",
       "\"original_max_position_embeddings\" is out of range"},
      {"\"rope_scaling\": null", "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": \"8\"}",
       "\"factor\" is not a number"},
      {"\"bos_token_id\": 1", "\"bos_token_id\": 9999999999", "\"bos_token_id\" is out of range"},
      {"\"model_type\": \"llama\"", "\"model_type\": \"phi3\", \"partial_rotary_factor\": 1e30",
       "partial_rotary_factor 1e+30 is not in (0, 1]"},
  };
  for (const auto& c : cases) {
    auto m = open_with(c.from, c.to);
    ASSERT_FALSE(m.ok()) << c.to;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << c.to;
    EXPECT_THAT(std::string(m.status().message()), HasSubstr(c.expect)) << c.to;
  }
  // A whole number written as a float is still a size; a list of EOS ids (Llama 3) means none.
  auto m = open_with("\"hidden_size\": 128", "\"hidden_size\": 128.0");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->config.hidden, 128);
  m = open_with("\"eos_token_id\": 2", "\"eos_token_id\": [2, 3]");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->config.eos_token, -1);
}

// Found by tests/fuzz/hf_dir_fuzzer: the post-processor's BOS was read with unchecked JSON
// accesses.
TEST(Model, ReadsTheTokenizersBosDefensively) {
  const std::string src = testing::TestData("hf_tinystories_656k");
  const std::string dir = testing::ScratchDir("hf_post");
  ASSERT_EQ(std::system(("cp " + src + "/* " + dir + "/").c_str()), 0);
  auto tokenizer = testing::ReadAll(dir + "/tokenizer.json");
  const std::string text(tokenizer.begin(), tokenizer.end());
  auto open_with = [&](const std::string& from, const std::string& to) {
    std::string t = text;
    t.replace(t.find(from), from.size(), to);
    testing::WriteAll(dir + "/tokenizer.json", t.data(), t.size());
    return OpenModel(dir);
  };
  const std::string single = R"("single": [)";
  ASSERT_NE(text.find(single), std::string::npos);
  // A template this loader does not understand adds no BOS.
  auto m = open_with(single, R"("single": "x", "was": [)");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FALSE((*m)->config.add_bos);
  m = open_with(single, R"("single": [{"SpecialToken": 3}, )");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FALSE((*m)->config.add_bos);
  // A BOS whose id is no token id is refused.
  const std::string ids = R"("ids": [)";
  for (const char* bad : {R"("ids": ["one", )", R"("ids": [1e300, )", R"("ids": [-1, )"}) {
    m = open_with(ids, bad);
    ASSERT_FALSE(m.ok()) << bad;
    EXPECT_THAT(std::string(m.status().message()), HasSubstr("has no valid first id")) << bad;
  }
}

TEST(Model, RefusesTruncatedGguf) {
  auto bytes = testing::ReadAll(testing::TestData("../models/SmolLM2-135M-Instruct.Q4_1.gguf"));
  ASSERT_GT(bytes.size(), 4000000u);
  const std::string dir = testing::ScratchDir("gguf");
  for (size_t n : {size_t{3}, size_t{100}, size_t{1000000}, bytes.size() - 1000}) {
    testing::WriteAll(dir + "/m.gguf", bytes.data(), n);
    auto m = OpenModel(dir + "/m.gguf");
    ASSERT_FALSE(m.ok()) << n;
    EXPECT_THAT(std::string(m.status().message()), HasSubstr("m.gguf"));
  }
}

TEST(Forward, RejectsBadTokens) {
  auto m = OpenModel(testing::TestData("stories260K/stories260K.bin"));
  ASSERT_TRUE(m.ok());
  std::vector<int32_t> ids = {1, 512};
  SequenceInput in{ids, nullptr};
  auto out = RunForward(**m, {&in, 1}, {});
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> empty;
  SequenceInput e{empty, nullptr};
  EXPECT_FALSE(RunForward(**m, {&e, 1}, {}).ok());
}

TEST(Forward, BatchedSequencesEqualSeparateOnes) {
  auto m = OpenModel(testing::TestData("hf_tinystories_656k"));
  ASSERT_TRUE(m.ok());
  std::vector<int32_t> a = {1, 147, 201, 282, 215}, b = {1, 80, 109};
  SequenceInput both[] = {{a, nullptr}, {b, nullptr}};
  auto joint = RunForward(**m, both, {});
  auto alone = RunForward(**m, {&both[1], 1}, {});
  ASSERT_TRUE(joint.ok() && alone.ok());
  const int D = (*m)->config.hidden;
  for (int i = 0; i < 3 * D; ++i) {
    EXPECT_NEAR(joint->hidden[5 * D + i], alone->hidden[i], 1e-4) << i;
  }
}

}  // namespace
}  // namespace superweight::model_test
