// The in-memory description of an opened model: its configuration and views of its weights,
// which point into memory-mapped files and are never copied (only norm vectors and biases,
// a few kilobytes, are materialised as f32).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/formats/dtype.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/util/mapped_file.h"

namespace superweight {

enum class Architecture {
  kLlama,
  kMistral,
  kQwen2,
  kOlmo,
  kPhi3,
  kQwen3,
  kOlmo2,
  kGemma2,
  kGemma3,
  kMixtral,
  kQwen2Moe,
  kQwen3Moe,
  kOlmoe,
};
const char* ArchitectureName(Architecture arch);
// By the engine's (and GGUF's general.architecture) name or by config.json's model_type;
// UNIMPLEMENTED naming it for any other.
absl::StatusOr<Architecture> ArchitectureFromName(const std::string& name);

enum class NormKind { kRms, kLayerNormNoParams };

// Where a decoder block's norms sit around its attention and its MLP, f.
enum class NormPlacement {
  kPre,       // x + f(norm(x)): Llama and most others
  kPost,      // x + norm(f(x)): OLMo 2
  kSandwich,  // x + norm(f(norm(x))): Gemma 2 and 3
};

// An RMSNorm of q and k after their projections, before rope.
enum class QkNorm {
  kNone,
  kPerHead,          // over each head's head_dim values (Qwen3, Gemma 3)
  kWholeProjection,  // over all heads' values at once (OLMo 2)
};

enum class MlpActivation {
  kSilu,      // SwiGLU
  kGeluTanh,  // GeGLU with the tanh approximation (Gemma)
};

// What an architecture is beyond its tensor names (tensor_names.h): one row per architecture,
// read by the loaders, the forward pass and the exporters, as llama.cpp keeps its per-arch facts.
struct ArchitectureTraits {
  Architecture arch;
  const char* name;             // the engine's name and GGUF's general.architecture
  const char* hf_model_type;    // config.json's model_type
  const char* hf_class;         // config.json's architectures[0]
  bool hf_config_has_head_dim;  // whether transformers reads head_dim from the config
  // llama.cpp's converter permutes q/k rows into interleaved-pair rope order (Llama, Mistral);
  // the NeoX-style architectures keep Hugging Face's rotate-half order.
  bool gguf_rope_interleaved;
  NormPlacement norm_placement;
  QkNorm qk_norm;
  MlpActivation activation;
  // Norm weights stored as w and applied as (1 + w) in Hugging Face checkpoints (Gemma);
  // llama.cpp's converter stores 1 + w, which is what the engine holds.
  bool hf_norm_plus_one;
  bool embedding_scaled;  // token embeddings multiplied by sqrt(hidden) (Gemma)
  // Mixture of experts: every layer's MLP is routed experts (and Qwen2-MoE's shared expert).
  bool moe;
  bool shared_expert;
  // Whether the top-k routing weights are renormalized to sum to 1, as llama.cpp fixes it per
  // architecture (a Hugging Face config's norm_topk_prob says it for its own model).
  bool moe_norm_topk;
};
const ArchitectureTraits& TraitsOf(Architecture arch);

// The file format a model came from.
enum class ModelFormat { kHuggingFace, kGguf, kLlama2c };
const char* ModelFormatName(ModelFormat format);

struct RopeConfig {
  float theta = 10000.f;
  int rotary_dim = 0;  // dimensions rotated per head (= head_dim unless partial)
  // Weights whose q/k rows pair dimension 2i with 2i+1 (llama.cpp and llama2.c layout) rather
  // than i with i + d/2 (Hugging Face's rotate-half). Both give identical attention.
  bool interleaved = false;
  // Linear position scaling ("rope_type": "linear"): inverse frequencies divided by it.
  float linear_factor = 1.f;
  // Per-dimension divisors of the inverse frequencies (GGUF's rope_freqs tensor, how llama.cpp
  // stores Llama 3 scaling); empty: none.
  std::vector<float> freq_factors;
  // Llama 3 frequency scaling ("rope_type": "llama3"); factor 0 means none.
  float llama3_factor = 0.f;
  float llama3_low_freq_factor = 1.f;
  float llama3_high_freq_factor = 4.f;
  int llama3_original_max_positions = 8192;
};

struct ModelConfig {
  Architecture arch = Architecture::kLlama;
  int hidden = 0;
  int intermediate = 0;
  int layers = 0;
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int vocab = 0;
  int max_positions = 0;
  float norm_eps = 1e-5f;
  NormKind norm = NormKind::kRms;
  float clip_qkv = 0.f;  // OLMo: clamp q, k, v to [-clip, clip]; 0 disables
  RopeConfig rope;
  // Attention scores' scale; 0 means 1/sqrt(head_dim) (Gemma: query_pre_attn_scalar^-0.5).
  float attn_scale = 0.f;
  float attn_softcap = 0.f;   // scores become cap * tanh(score / cap) (Gemma 2); 0 none
  float final_softcap = 0.f;  // the same on the logits (Gemma 2); 0 none
  // Sliding-window layers: a query sees itself and the sliding_window - 1 keys before it.
  int sliding_window = 0;
  std::vector<bool> sliding_layers;  // per layer; empty: none
  RopeConfig sliding_rope;           // the rope of sliding layers (Gemma 3's local base)
  // Mixture of experts (0 experts: a dense model). `intermediate` is then the shared expert's.
  int experts = 0;
  int experts_per_token = 0;
  int expert_intermediate = 0;
  bool norm_topk = false;  // renormalize the chosen experts' routing weights
  int bos_token = -1;
  int eos_token = -1;
  bool add_bos = false;  // whether text is tokenized with BOS in front

  const ArchitectureTraits& traits() const { return TraitsOf(arch); }
  bool Sliding(int layer) const {
    return sliding_window > 0 && layer >= 0 && layer < static_cast<int>(sliding_layers.size()) &&
           sliding_layers[layer];
  }
  const RopeConfig& RopeOf(int layer) const { return Sliding(layer) ? sliding_rope : rope; }
};

// A rewrite of a weight's values applied wherever the engine converts its rows for a matmul
// (fake quantization): the stored weights are never copied whole or written.
class WeightTransform {
 public:
  virtual ~WeightTransform() = default;
  // values: rows [first_row, first_row + rows) of the tensor as stored, dequantized to f32
  // (cols each, row-major), rewritten in place.
  virtual void Apply(int64_t first_row, int64_t rows, int64_t cols, float* values) const = 0;
};

// A 2-D weight in the Hugging Face layout [rows = out_features, cols = in_features], row-major,
// possibly block-quantized along each row.
struct Matrix {
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const uint8_t* data = nullptr;
  uint64_t row_bytes = 0;
  // Applied to the values after dequantization (nullptr: none); transform_row0 is this view's
  // first row in the tensor the transform was made for.
  const WeightTransform* transform = nullptr;
  int64_t transform_row0 = 0;

  const uint8_t* Row(int64_t r) const { return data + r * row_bytes; }
  // A view of rows [begin, begin + count): how fused projections are split without copying.
  Matrix RowSlice(int64_t begin, int64_t count) const {
    return {dtype, count, cols, Row(begin), row_bytes, transform, transform_row0 + begin};
  }
  // The value at (row, col), dequantized (and transformed).
  float At(int64_t row, int64_t col) const;
  // Row r as f32 (cols values), dequantized and transformed.
  void RowToFloat(int64_t r, float* out) const;

  static Matrix Make(DType dtype, int64_t rows, int64_t cols, const uint8_t* data) {
    return {dtype,
            rows,
            cols,
            data,
            static_cast<uint64_t>(cols / Traits(dtype).block_elements) * Traits(dtype).block_bytes,
            nullptr,
            0};
  }
};

// Which linear weight of a layer.
enum class LinearKind { kQ, kK, kV, kO, kGate, kUp, kDown };
constexpr int kNumLinearKinds = 7;
const char* LinearKindName(LinearKind kind);

// The activations a decoder layer's linear weights read, named by the weights that read them.
enum class LinearInputSite {
  kQkv,     // the attention norm's output: q, k, v
  kO,       // the attention's output: o
  kGateUp,  // the MLP norm's output: gate, up
  kDown,    // the gated product: down
};
constexpr int kNumLinearInputSites = 4;
const char* LinearInputSiteName(LinearInputSite site);

// A rewrite of the activations a layer's linear weights read (fake quantization of activations),
// applied to each sequence's tensor on its own so that batching never changes a result.
class ActivationTransform {
 public:
  virtual ~ActivationTransform() = default;
  // x: one sequence's activations at `site` of `layer`, [tokens, cols] row-major, in place.
  virtual void Apply(int layer, LinearInputSite site, int64_t tokens, int64_t cols,
                     float* x) const = 0;
};

// One routed expert's MLP: views of its rows, never copies (a GGUF's stacked expert tensors
// are sliced in place).
struct ExpertWeights {
  Matrix gate, up;  // [expert_intermediate, hidden]
  Matrix down;      // [hidden, expert_intermediate]
};

struct LayerWeights {
  std::vector<float> attn_norm;  // empty for non-parametric norms
  std::vector<float> ffn_norm;
  Matrix linear[kNumLinearKinds];
  std::vector<float> q_bias, k_bias, v_bias;  // empty unless the architecture has them
  // Norms after the attention and the MLP (NormPlacement kPost, kSandwich); empty otherwise.
  std::vector<float> post_attn_norm, post_ffn_norm;
  std::vector<float> q_norm, k_norm;  // QkNorm's weights; empty for kNone
  // Mixture of experts: the router [experts, hidden] and the experts. A shared expert (Qwen2-MoE)
  // is linear[kGate..kDown], scaled by sigmoid(x . shared_expert_gate); without one those are
  // empty.
  Matrix router;
  std::vector<ExpertWeights> experts;
  std::vector<float> shared_expert_gate;

  // A linear weight by kind: expert `expert`'s gate, up or down, or the layer's own for -1;
  // nullptr where the layer has no such weight.
  const Matrix* Find(LinearKind kind, int expert) const;
  Matrix* Find(LinearKind kind, int expert) {
    return const_cast<Matrix*>(static_cast<const LayerWeights*>(this)->Find(kind, expert));
  }

  const Matrix& Get(LinearKind kind) const { return linear[static_cast<int>(kind)]; }
  Matrix& Get(LinearKind kind) { return linear[static_cast<int>(kind)]; }
};

struct Model {
  std::string path;
  ModelFormat format = ModelFormat::kHuggingFace;
  std::string name;  // general.name or the directory name
  ModelConfig config;
  Matrix embed;    // [vocab, hidden]
  Matrix lm_head;  // [vocab, hidden]; the same view as embed when tied
  std::vector<float> final_norm;
  std::vector<LayerWeights> layers;
  std::shared_ptr<const Tokenizer> tokenizer;
  std::vector<std::shared_ptr<const MappedFile>> files;  // keeps the views alive
  // Applied by the forward pass to every layer's linear inputs (nullptr: none); owned by whoever
  // made this view, like a Matrix's transform.
  const ActivationTransform* activation_transform = nullptr;

  uint64_t MappedBytes() const;
  // Whether a read found one of the mapped files shortened in place (cheap, for polling).
  bool MappingFaulted() const;
  // Not OK (ABORTED) where a mapped file was shortened or rewritten in place since the model was
  // opened: whatever was computed from the weights since then is void.
  absl::Status CheckFilesUnchanged() const;
  // Another view of the same weights (the mappings, the tokenizer shared; norms copied), for
  // settings that give some matrices a transform.
  std::unique_ptr<Model> ShareWeights() const;
};

// Opens a model: a Hugging Face directory (config.json + safetensors), a .gguf file or a
// llama2.c checkpoint (.bin, with tokenizer.bin or tok*.bin beside it).
absl::StatusOr<std::unique_ptr<Model>> OpenModel(const std::string& path);

}  // namespace superweight
