#include "engine/model/tensor_names.h"

#include <set>

#include "gtest/gtest.h"

namespace superweight {
namespace {

constexpr Architecture kArchitectures[] = {Architecture::kLlama, Architecture::kMistral,
                                           Architecture::kQwen2, Architecture::kOlmo,
                                           Architecture::kPhi3};

TEST(TensorNames, EveryNameMapsBackToItsRoleAndLayer) {
  for (Architecture arch : kArchitectures) {
    for (ModelFormat format : {ModelFormat::kHuggingFace, ModelFormat::kGguf}) {
      std::set<std::string> seen;
      for (const TensorNaming& naming : TensorTable(arch)) {
        for (int layer : {0, 7, 123}) {
          const std::string name = TensorName(naming, format, layer);
          EXPECT_TRUE(seen.insert(name).second || !naming.per_layer) << name;
          auto found = FindTensorNaming(arch, format, name);
          ASSERT_TRUE(found.has_value()) << ArchitectureName(arch) << " " << name;
          EXPECT_EQ(found->naming->role, naming.role) << name;
          EXPECT_EQ(found->layer, naming.per_layer ? layer : -1) << name;
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
}  // namespace superweight
