#include "server/known_directory.h"

#include "gtest/gtest.h"

namespace superweight::server {
namespace {

TEST(KnownDirectory, HoldsThePublishedCoordinates) {
  const auto& all = KnownSuperWeights();
  ASSERT_GE(all.size(), 25u);
  bool llama7b = false;
  for (const auto& k : all) {
    if (k.model == "huggyllama/llama-7b") {
      llama7b = k.layer == 2 && k.row == 3968 && k.col == 7003;
    }
  }
  EXPECT_TRUE(llama7b);  // the paper's Table 2
}

TEST(KnownDirectory, HoldsTheFamiliesOfTheIssue) {
  for (const char* model : {"meta-llama/Meta-Llama-3-8B", "meta-llama/Llama-3.1-8B",
                            "allenai/OLMo-1B-0724-hf", "allenai/OLMo-7B-0724-hf",
                            "microsoft/Phi-3-mini-4k-instruct", "mistralai/Mistral-7B-v0.1"}) {
    int entries = 0;
    for (const auto& k : KnownSuperWeights()) entries += k.model == model && !k.source.empty();
    EXPECT_GT(entries, 0) << model;
  }
  EXPECT_EQ(RecogniseModel("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"), "meta-llama/Llama-3.1-8B");
  EXPECT_EQ(RecogniseModel("Meta-Llama-3-8B.Q8_0.gguf"), "meta-llama/Meta-Llama-3-8B");
}

TEST(KnownDirectory, RecognisesModelsByName) {
  EXPECT_EQ(RecogniseModel("hub/llama-7b/model.safetensors"), "huggyllama/llama-7b");
  EXPECT_EQ(RecogniseModel("Llama-2-7b-hf"), "meta-llama/Llama-2-7b-hf");
  // The longest id wins: llama-13b is not llama-1-anything.
  EXPECT_EQ(RecogniseModel("models/llama-13b"), "huggyllama/llama-13b");
  EXPECT_EQ(RecogniseModel("Mistral-7B-v0.1.Q4_K_M.gguf"), "mistralai/Mistral-7B-v0.1");
  EXPECT_EQ(RecogniseModel("SmolLM2-135M-Instruct.Q4_1.gguf"), "");
}

}  // namespace
}  // namespace superweight::server
