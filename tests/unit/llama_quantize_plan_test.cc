#include "engine/formats/llama_quantize_plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "absl/strings/str_format.h"

namespace superweight::llama_quantize_plan_test {
namespace {

using ::testing::HasSubstr;

// A llama-architecture file's tensor list and hyperparameters (no data: the plan reads names,
// shapes and types only). Rows of `cols` values; `heads`/`kv_heads` set the GQA ratio.
GgufFile LlamaLike(int layers, int64_t cols, int heads, int kv_heads, bool tied = true,
                   const std::string& name = "llama") {
  GgufFile f;
  auto set_int = [&f](const std::string& key, int64_t v) {
    GgufValue value;
    value.kind = GgufValue::Kind::kInt;
    value.i = v;
    f.metadata[key] = value;
  };
  GgufValue arch;
  arch.kind = GgufValue::Kind::kString;
  arch.s = name;
  f.metadata["general.architecture"] = arch;
  set_int(name + ".block_count", layers);
  set_int(name + ".attention.head_count", heads);
  set_int(name + ".attention.head_count_kv", kv_heads);
  auto add = [&f](const std::string& name, std::vector<int64_t> ne) {
    f.tensors[name] = GgufTensor{name, ne, DType::kF32, nullptr, 0};
    f.tensor_order.push_back(name);
  };
  add("token_embd.weight", {cols, 1000});
  if (!tied) add("output.weight", {cols, 1000});
  add("output_norm.weight", {cols});
  for (int l = 0; l < layers; ++l) {
    for (const char* t : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up"}) {
      add(absl::StrFormat("blk.%d.%s.weight", l, t), {cols, cols});
    }
    add(absl::StrFormat("blk.%d.ffn_down.weight", l), {2 * cols, cols});
    add(absl::StrFormat("blk.%d.attn_norm.weight", l), {cols});
  }
  return f;
}

LlamaQuantizeOptions Options(const char* name) {
  LlamaQuantizeOptions o;
  o.file_type = *FindLlamaFileType(name);
  return o;
}

DType TypeOf(const LlamaQuantizePlan& plan, const std::string& name) {
  const PlannedTensor* t = plan.Find(name);
  EXPECT_NE(t, nullptr) << name;
  return t == nullptr ? DType::kF32 : t->to;
}

TEST(LlamaQuantizePlan, FileTypesAndAliasesAsLlamaQuantizeNamesThem) {
  EXPECT_EQ(FindLlamaFileType("q4_k_m")->ftype, 15u);
  EXPECT_STREQ(FindLlamaFileType("Q4_K")->name, "Q4_K_M");  // llama-quantize's alias
  EXPECT_STREQ(FindLlamaFileType("Q3_K")->name, "Q3_K_M");
  EXPECT_EQ(FindLlamaFileType("Q2_K")->default_type, DType::kQ2_K);
  EXPECT_EQ(FindLlamaFileType("Q3_K_S")->default_type, DType::kQ3_K);
  auto bad = FindLlamaFileType("IQ2_XXS");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("Q4_K_M"));
}

TEST(LlamaQuantizePlan, ParsesOverridesAsLlamaQuantize) {
  auto o = ParseTensorTypeOverride("BLK\\.11\\.FFN_DOWN=q8_0");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->pattern, "blk\\.11\\.ffn_down");  // lower-cased, as llama-quantize does
  EXPECT_EQ(o->type, DType::kQ8_0);
  for (const char* bad : {"ffn_down", "=Q8_0", "ffn_down=", "ffn_down=Q9_9"}) {
    EXPECT_EQ(ParseTensorTypeOverride(bad).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(LlamaQuantizePlan, Q4_K_MRaisesTheLayersUseMoreBitsPicks) {
  // 16 layers, rows of 256: no fallbacks. use_more_bits(i, 16): i < 2, i >= 14, (i - 2) % 3 == 2.
  const GgufFile f = LlamaLike(16, 256, 8, 2);
  auto plan = PlanLlamaQuantize(f, Options("Q4_K_M"));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->file_type, 15u);
  for (int l = 0; l < 16; ++l) {
    const bool more = l < 2 || l >= 14 || (l - 2) % 3 == 2;
    const DType want = more ? DType::kQ6_K : DType::kQ4_K;
    EXPECT_EQ(TypeOf(*plan, absl::StrFormat("blk.%d.ffn_down.weight", l)), want) << l;
    EXPECT_EQ(TypeOf(*plan, absl::StrFormat("blk.%d.attn_v.weight", l)), want) << l;
    EXPECT_EQ(TypeOf(*plan, absl::StrFormat("blk.%d.attn_q.weight", l)), DType::kQ4_K) << l;
  }
  EXPECT_EQ(TypeOf(*plan, "token_embd.weight"), DType::kQ6_K);  // tied: the output's type
  EXPECT_EQ(TypeOf(*plan, "output_norm.weight"), DType::kF32);  // 1-D: copied
  // The non-layer tensors come first, then layer by layer.
  EXPECT_EQ(plan->tensors.front().name, "output_norm.weight");
  EXPECT_EQ(plan->tensors.back().name, "blk.15.ffn_up.weight");
}

TEST(LlamaQuantizePlan, AnOverriddenTensorLeavesTheLayerCountBehind) {
  const GgufFile f = LlamaLike(16, 256, 8, 2);
  LlamaQuantizeOptions o = Options("Q4_K_M");
  o.overrides.push_back(*ParseTensorTypeOverride("blk\\.5\\.ffn_down=F16"));
  auto plan = PlanLlamaQuantize(f, o);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(TypeOf(*plan, "blk.5.ffn_down.weight"), DType::kF16);
  EXPECT_TRUE(plan->Find("blk.5.ffn_down.weight")->overridden);
  // After it, layer L counts as L - 1: layer 7 (raised without the override) is not, 8 is.
  EXPECT_EQ(TypeOf(*plan, "blk.7.ffn_down.weight"), DType::kQ4_K);
  EXPECT_EQ(TypeOf(*plan, "blk.8.ffn_down.weight"), DType::kQ6_K);
  EXPECT_EQ(TypeOf(*plan, "blk.7.attn_v.weight"), DType::kQ6_K);  // attn_v keeps its own count
}

TEST(LlamaQuantizePlan, FallbacksAndTheQ2_KMix) {
  // Rows of 576 (SmolLM2): no whole 256-value blocks, so K types fall back per tensor.
  const GgufFile f = LlamaLike(4, 576, 9, 3);  // GQA 3: Q2_K's attn_v is Q3_K, then Q4_0
  auto plan = PlanLlamaQuantize(f, Options("Q2_K"));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(TypeOf(*plan, "blk.0.attn_v.weight"), DType::kQ4_0);
  EXPECT_TRUE(plan->Find("blk.0.attn_v.weight")->fallback);
  // ffn_down is raised to Q3_K, whose 256-value blocks do not fit 1152 either.
  EXPECT_EQ(TypeOf(*plan, "blk.0.ffn_down.weight"), DType::kQ4_0);
  EXPECT_EQ(TypeOf(*plan, "blk.0.attn_output.weight"), DType::kQ4_0);
  EXPECT_EQ(TypeOf(*plan, "token_embd.weight"), DType::kQ8_0);  // the output's rule, as it fits
  // --pure: the default type, still subject to the fallback; overrides still apply.
  LlamaQuantizeOptions pure = Options("Q4_K_M");
  pure.pure = true;
  auto pure_plan = PlanLlamaQuantize(LlamaLike(4, 512, 8, 2), pure);
  ASSERT_TRUE(pure_plan.ok());
  EXPECT_EQ(TypeOf(*pure_plan, "blk.0.attn_v.weight"), DType::kQ4_K);
  EXPECT_EQ(TypeOf(*pure_plan, "blk.0.ffn_down.weight"), DType::kQ4_K);
  EXPECT_EQ(TypeOf(*pure_plan, "token_embd.weight"), DType::kQ4_K);
}

// llama.cpp raises a 70B model's attn_v from Q3_K/Q4_K to Q5_K: Llama at 80 layers with grouped
// keys (not the 65B, whose heads are all keys), Qwen2, OLMo and DeciLM at 80.
TEST(LlamaQuantizePlan, SeventyBillionModelsAttnV) {
  for (const auto& [arch, heads, kv_heads, raised] :
       {std::tuple{"llama", 64, 8, true}, std::tuple{"llama", 64, 64, false},
        std::tuple{"qwen2", 64, 8, true}, std::tuple{"olmo", 64, 64, true},
        std::tuple{"gemma2", 64, 8, false}}) {
    auto plan =
        PlanLlamaQuantize(LlamaLike(80, 256, heads, kv_heads, true, arch), Options("Q3_K_M"));
    ASSERT_TRUE(plan.ok()) << plan.status();
    // Q3_K_M gives attn_v Q5_K for the first two, Q4_K after.
    EXPECT_EQ(TypeOf(*plan, "blk.5.attn_v.weight"), raised ? DType::kQ5_K : DType::kQ4_K)
        << arch << " " << kv_heads;
  }
}

TEST(LlamaQuantizePlan, HyperparametersOutOfRangeAreNotTrusted) {
  GgufFile f = LlamaLike(4, 256, 8, 2);
  f.metadata["llama.attention.head_count_kv"].i = -1;  // a crafted file: no division by it
  f.metadata["llama.attention.head_count"].i = int64_t{1} << 40;
  auto plan = PlanLlamaQuantize(f, Options("Q2_K"));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(TypeOf(*plan, "blk.0.attn_v.weight"), DType::kQ3_K);  // GQA unknown: below 4
}

TEST(LlamaQuantizePlan, RefusesBadPatternsAndUnplaceableExpertTensors) {
  GgufFile f = LlamaLike(2, 256, 8, 2);
  LlamaQuantizeOptions o = Options("Q4_K_M");
  o.overrides.push_back({"ffn_(down", DType::kQ8_0});
  EXPECT_EQ(PlanLlamaQuantize(f, o).status().code(), absl::StatusCode::kInvalidArgument);

  GgufValue experts;
  experts.kind = GgufValue::Kind::kInt;
  experts.i = 4;
  f.metadata["llama.expert_count"] = experts;
  f.tensors["ffn_down_stray.weight"] =
      GgufTensor{"ffn_down_stray.weight", {256, 256}, DType::kF32, nullptr, 0};
  f.tensor_order.push_back("ffn_down_stray.weight");
  auto plan = PlanLlamaQuantize(f, Options("Q4_K_M"));
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("ffn_down_stray"));
}

}  // namespace
}  // namespace superweight::llama_quantize_plan_test
