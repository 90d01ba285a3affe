#include "engine/model/tensor_names.h"

#include <set>

#include "gtest/gtest.h"

namespace superweight::tensor_names_test {
namespace {

constexpr Architecture kArchitectures[] = {
    Architecture::kLlama,  Architecture::kMistral, Architecture::kQwen2,    Architecture::kOlmo,
    Architecture::kPhi3,   Architecture::kQwen3,   Architecture::kOlmo2,    Architecture::kGemma2,
    Architecture::kGemma3, Architecture::kMixtral, Architecture::kQwen2Moe, Architecture::kQwen3Moe,
    Architecture::kOlmoe};

TEST(ArchitectureTraits, EveryArchitectureHasItsRowAndItsNames) {
  std::set<std::string> names;
  for (Architecture arch : kArchitectures) {
    const ArchitectureTraits& t = TraitsOf(arch);
    EXPECT_EQ(t.arch, arch) << t.name;
    EXPECT_TRUE(names.insert(t.name).second) << t.name;
    EXPECT_EQ(ArchitectureFromName(t.name).value(), arch);
    EXPECT_EQ(ArchitectureFromName(t.hf_model_type).value(), arch);
    EXPECT_FALSE(TensorTable(arch).empty()) << t.name;
    // A mixture of experts has experts in its table; a dense model none.
    EXPECT_EQ(FindRole(arch, TensorRole::kExpertDown) != nullptr, t.moe) << t.name;
    EXPECT_EQ(FindRole(arch, TensorRole::kAttnQNorm) != nullptr, t.qk_norm != QkNorm::kNone)
        << t.name;
    EXPECT_EQ(FindRole(arch, TensorRole::kPostFfnNorm) != nullptr,
              t.norm_placement != NormPlacement::kPre)
        << t.name;
  }
  const absl::Status unknown = ArchitectureFromName("mamba").status();
  EXPECT_EQ(unknown.code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(unknown.message().find("unknown architecture 'mamba' (supported: llama,"),
            std::string::npos)
      << unknown;
}

TEST(TensorNames, ExpertsAreOneTensorEachInHuggingFaceAndStackedInGguf) {
  const TensorNaming* down = FindRole(Architecture::kQwen3Moe, TensorRole::kExpertDown);
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(TensorName(*down, ModelFormat::kHuggingFace, 3, 17),
            "model.layers.3.mlp.experts.17.down_proj.weight");
  EXPECT_EQ(TensorName(*down, ModelFormat::kGguf, 3, 17), "blk.3.ffn_down_exps.weight");
  auto found = FindTensorNaming(Architecture::kQwen3Moe, ModelFormat::kHuggingFace,
                                "model.layers.3.mlp.experts.17.down_proj.weight");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->naming->role, TensorRole::kExpertDown);
  EXPECT_EQ(std::make_pair(found->layer, found->expert), std::make_pair(3, 17));
  EXPECT_EQ(ExpertKindOfRole(TensorRole::kExpertDown), LinearKind::kDown);
  const TensorNaming* w2 = FindRole(Architecture::kMixtral, TensorRole::kExpertDown);
  EXPECT_EQ(TensorName(*w2, ModelFormat::kHuggingFace, 0, 2),
            "model.layers.0.block_sparse_moe.experts.2.w2.weight");
  for (const char* name : {"model.layers.3.mlp.experts..down_proj.weight",
                           "model.layers.3.mlp.experts.x.down_proj.weight",
                           "model.layers.3.mlp.experts.1.2.down_proj.weight"}) {
    EXPECT_FALSE(
        FindTensorNaming(Architecture::kQwen3Moe, ModelFormat::kHuggingFace, name).has_value())
        << name;
  }
  // Gemma's post-attention norm is transformers' post_attention_layernorm; in Llama that name is
  // the norm before the MLP.
  EXPECT_EQ(FindTensorNaming(Architecture::kGemma2, ModelFormat::kHuggingFace,
                             "model.layers.0.post_attention_layernorm.weight")
                ->naming->role,
            TensorRole::kPostAttnNorm);
  EXPECT_EQ(FindTensorNaming(Architecture::kLlama, ModelFormat::kHuggingFace,
                             "model.layers.0.post_attention_layernorm.weight")
                ->naming->role,
            TensorRole::kFfnNorm);
}

TEST(TensorNames, EveryNameMapsBackToItsRoleAndLayer) {
  for (Architecture arch : kArchitectures) {
    for (ModelFormat format : {ModelFormat::kHuggingFace, ModelFormat::kGguf}) {
      std::set<std::string> seen;
      for (const TensorNaming& naming : TensorTable(arch)) {
        for (int layer : {0, 7, 123}) {
          const int expert = naming.per_expert ? 5 : -1;
          const std::string name = TensorName(naming, format, layer, expert);
          EXPECT_TRUE(seen.insert(name).second || !naming.per_layer) << name;
          auto found = FindTensorNaming(arch, format, name);
          ASSERT_TRUE(found.has_value()) << ArchitectureName(arch) << " " << name;
          EXPECT_EQ(found->naming->role, naming.role) << name;
          EXPECT_EQ(found->layer, naming.per_layer ? layer : -1) << name;
          EXPECT_EQ(found->expert, format == ModelFormat::kGguf ? -1 : expert) << name;
        }
      }
    }
  }
}

TEST(TensorNames, FormatsSpellTheSameTensorTheirOwnWay) {
  const TensorNaming* down = FindRole(Architecture::kLlama, TensorRole::kFfnDown);
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(TensorName(*down, ModelFormat::kHuggingFace, 11),
            "model.layers.11.mlp.down_proj.weight");
  EXPECT_EQ(TensorName(*down, ModelFormat::kGguf, 11), "blk.11.ffn_down.weight");
  EXPECT_EQ(LinearKindOfRole(down->role), LinearKind::kDown);
  // Qwen2's q/k/v biases are required in both formats; Phi-3 has fused projections instead.
  ASSERT_NE(FindRole(Architecture::kQwen2, TensorRole::kAttnQBias), nullptr);
  EXPECT_TRUE(FindRole(Architecture::kQwen2, TensorRole::kAttnQBias)->required);
  EXPECT_EQ(FindRole(Architecture::kLlama, TensorRole::kAttnQBias), nullptr);
  EXPECT_EQ(FindRole(Architecture::kPhi3, TensorRole::kAttnQ), nullptr);
  EXPECT_FALSE(LinearKindOfRole(TensorRole::kAttnQkv).has_value());
  EXPECT_FALSE(FindRole(Architecture::kLlama, TensorRole::kOutput)->required);  // tied
}

TEST(TensorNames, RefusesNamesOutsideTheTable) {
  for (const char* name :
       {"blk.x.ffn_down.weight", "blk..ffn_down.weight", "blk.1", "blk.1.nope", "rope_freqs.weight",
        "blk.99999999999.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"}) {
    EXPECT_FALSE(FindTensorNaming(Architecture::kLlama, ModelFormat::kGguf, name).has_value())
        << name;
  }
}

}  // namespace
}  // namespace superweight::tensor_names_test
