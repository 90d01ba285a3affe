// Export of a model view as a Hugging Face directory that transformers loads as it is:
// config.json, model.safetensors and, where the source is a Hugging Face directory, its
// tokenizer files.
//
// The weights are what the engine computes with: every matrix's values as Matrix::RowToFloat
// gives them (dequantized, then transformed: a fake-quantized view exports its quantized
// values), norms and biases as the Model holds them, all stored as F32 or BF16 (round to nearest
// even). Names come from the architecture's tensor table (engine/model/tensor_names.h); Phi-3's
// q/k/v and gate/up rows are written fused, as its table names them. q_proj and k_proj rows
// kept in llama.cpp's interleaved-pair rope order (GGUF llama, llama2.c) are put back in
// Hugging Face's rotate-half order. lm_head is written only when it is not tied to the
// embedding, and config.json's tie_word_embeddings says which.
//
// config.json: a Hugging Face source's own, with torch_dtype and tie_word_embeddings set;
// otherwise synthesized from ModelConfig. Tokenizer files (tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, generation_config.json, tokenizer.model, vocab.json, merges.txt,
// added_tokens.json) are copied from a Hugging Face source where it has them. GGUF and llama2.c
// sources get no tokenizer files: the directory holds the model alone (a tokenizer.json could
// be synthesized from the GGUF vocabulary later).
#pragma once

#include <atomic>
#include <string>

#include "absl/status/status.h"
#include "engine/formats/dtype.h"
#include "engine/model/model.h"

namespace superweight {

// Writes the directory at out_dir atomically: everything goes into a temporary sibling
// (out_dir + ".tmp-XXXXXX"), each file fsynced, then renamed to out_dir; on any failure the
// temporary is removed and out_dir does not appear. ALREADY_EXISTS when out_dir exists;
// INVALID_ARGUMENT for a dtype other than kF32 or kBF16; UNIMPLEMENTED for what transformers
// could not load as the engine computes it (rope scaling on a non-Llama architecture, a
// head_dim the architecture's config cannot state, partial rotary in interleaved order).
// The model (and whatever its views point into) must stay alive during the call. CANCELLED once
// `cancelled` is set (checked every row written).
absl::Status ExportHuggingFace(const Model& model, const std::string& out_dir, DType dtype,
                               const std::atomic<bool>* cancelled = nullptr);

}  // namespace superweight
