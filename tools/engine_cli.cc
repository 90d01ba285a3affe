// superweight-engine: the engine on the command line, one verb per job, JSON out. The oracle
// tests drive it, and it is handy for looking at a model without the server.
//   superweight-engine info MODEL
//   superweight-engine dequantize BLOCKS_FILE --type=Q4_K --out=F
//   superweight-engine tokenize|detokenize ...  (tools/tokenizer_verbs.h)
//   superweight-engine logits MODEL --ids=1,2,3 --out=F [--bf16]
//   superweight-engine logprobs MODEL --ids=1,2,3 [--bf16] [--zero=L[:E],R,C]
//   superweight-engine perplexity MODEL --text_file=F [--window=512] [--max_windows=N]
//       [--zero=L[:E],R,C] [--prune_expert=L:E]  (both repeatable; :E names an expert)
//   superweight-engine generate MODEL --ids=1,2,3 --steps=N
//   superweight-engine locate MODEL [--text=T] [--threshold=50] [--spike_ratio=10]
//       [--confirm_file=F]
//   superweight-engine eval MODEL --task=piqa --data_dir=server/data/eval [--max_examples=N]
//       (per example: each choice's log-likelihood, acc's and acc_norm's pick)
//   superweight-engine weight MODEL --layer=N --kind=down_proj --out=F  (f32, [rows, cols])
//   superweight-engine quantize-row F32_FILE --type=Q4_1 --out=F
//   superweight-engine requantize SRC.gguf --type=Q8_0 --out=OUT.gguf
//   superweight-engine requantize SRC.gguf --file_type=Q4_K_M --out=OUT.gguf
//       [--tensor_type=PATTERN=TYPE (repeatable)] [--output_tensor_type=T]
//       [--token_embedding_type=T] [--pure]  (every tensor as llama-quantize would write it)
//   superweight-engine imatrix MODEL --text_file=F --out=OUT.gguf [--chunk=512] [--chunks=N]
//       [--boost=FACTOR --super_weights=L,R,C]  (llama-imatrix's importance matrix, its format)
//   superweight-engine recipe MODEL --file_type=Q2_K --super_weights=L,R,C [--max_error=0.01]
//       (the llama-quantize overrides that keep those super weights: quantize_recipe.h)
//   superweight-engine export-hf MODEL --out=DIR [--dtype=f32|bf16]  (a transformers directory)
//   superweight-engine activations MODEL --ids=1,2,3 --layer=N --site=down_input --out=PREFIX
//       (that linear input of the first sequence, f32 [tokens, cols], to PREFIX.input.f32 as the
//       pass made it and PREFIX.quantized.f32 after --activations)
//   superweight-engine cpu  (the CPU class in use and those below it)
// Model verbs take --quantize=BITS,BLOCK[,CLIP[,VALUE]] [--activations=BITS[,hold][,topK]]
// [--keep=L,R,C] [--quantize_lm_head]: every linear weight of the layers (quant/rtn.h) and their
// inputs (quant/activation_quant.h) fake-quantized for what the verb does.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/analysis/eval_tasks.h"
#include "engine/analysis/harness.h"
#include "engine/analysis/imatrix.h"
#include "engine/analysis/locate.h"
#include "engine/analysis/quantize.h"
#include "engine/analysis/quantize_recipe.h"
#include "engine/analysis/score.h"
#include "engine/export/export_hf.h"
#include "engine/formats/dequantize.h"
#include "engine/formats/gguf_requantize.h"
#include "engine/formats/llama_quantize_plan.h"
#include "engine/formats/quantize_ggml.h"
#include "engine/model/model.h"
#include "engine/runtime/cpu.h"
#include "engine/util/build_info.h"
#include "nlohmann/json.hpp"
#include "tools/tokenizer_verbs.h"

namespace sw = superweight;
using Json = nlohmann::json;

namespace {

int Fail(const std::string& msg) {
  std::cerr << "error: " << msg << "\n";
  return 1;
}

bool ParseInts(const std::string& s, std::vector<int64_t>* out) {
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    int64_t v;
    if (!absl::SimpleAtoi(part, &v)) return false;
    out->push_back(v);
  }
  return true;
}

Json LayerJson(const std::vector<sw::LayerMax>& layers) {
  Json a = Json::array();
  for (const auto& m : layers) {
    a.push_back({{"input_max_abs", m.input_max_abs},
                 {"input_token", m.input_token},
                 {"input_channel", m.input_channel},
                 {"output_max_abs", m.output_max_abs},
                 {"output_token", m.output_token},
                 {"output_channel", m.output_channel},
                 {"output_expert", m.output_expert}});
  }
  return a;
}

Json ExpertJson(const std::vector<sw::ExpertMax>& experts) {
  Json a = Json::array();
  for (const auto& e : experts) {
    a.push_back({{"layer", e.layer}, {"expert", e.expert}, {"output_max_abs", e.output_max_abs}});
  }
  return a;
}

// Passes the model's activation transform through and keeps one site's tensor of the first
// sequence as the transform got it and as it left it.
class SiteRecorder : public sw::ActivationTransform {
 public:
  SiteRecorder(const sw::ActivationTransform* inner, int layer, sw::LinearInputSite site)
      : inner_(inner), layer_(layer), site_(site) {}
  void Apply(int layer, sw::LinearInputSite site, int64_t tokens, int64_t cols,
             float* x) const override {
    const bool recorded = layer == layer_ && site == site_ && input.empty();
    if (recorded) {
      input.assign(x, x + tokens * cols);
      recorded_cols = cols;
    }
    if (inner_ != nullptr) inner_->Apply(layer, site, tokens, cols, x);
    if (recorded) output.assign(x, x + tokens * cols);
  }
  mutable std::vector<float> input, output;
  mutable int64_t recorded_cols = 0;

 private:
  const sw::ActivationTransform* inner_;
  int layer_;
  sw::LinearInputSite site_;
};

}  // namespace

int main(int argc, char** argv) {
  if (!sw::Cpu().problem.ok()) return Fail(std::string(sw::Cpu().problem.message()));
  if (argc == 2 && std::string(argv[1]) == "cpu") {
    // The CPU classes this machine offers: the one in use, and each below it (make test runs
    // the suites capped at each).
    const sw::CpuInfo& cpu = sw::Cpu();
    Json below = Json::array();
    for (int isa = 0; isa < static_cast<int>(cpu.active); ++isa) {
      below.push_back(sw::IsaName(static_cast<sw::Isa>(isa)));
    }
    std::cout << Json{{"detected", sw::IsaName(cpu.detected)},
                      {"active", sw::IsaName(cpu.active)},
                      {"below", below}}
              << "\n";
    return 0;
  }
  if (argc == 2 && std::string(argv[1]) == "--version") {
    std::cout << sw::VersionLine("superweight-engine", sw::IsaName(sw::Cpu().active)) << "\n";
    return 0;
  }
  if (argc < 3) {
    return Fail("usage: superweight-engine VERB MODEL [--flag=value...] | cpu | --version");
  }
  const std::string verb = argv[1], path = argv[2];
  std::map<std::string, std::string> flags;
  std::vector<std::string> zeros, pruned, tensor_types;
  for (int i = 3; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0) return Fail("unexpected argument " + a);
    const size_t eq = a.find('=');
    const std::string key = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    const std::string value = eq == std::string::npos ? "1" : a.substr(eq + 1);
    if (key == "zero") {
      zeros.push_back(value);
    } else if (key == "prune_expert") {
      pruned.push_back(value);
    } else if (key == "tensor_type") {
      tensor_types.push_back(value);
    } else {
      flags[key] = value;
    }
  }
  if (verb == "tokenize" || verb == "detokenize") return sw::RunTokenizerVerb(verb, path, flags);
  if (verb == "dequantize") {  // PATH holds raw blocks of --type; f32 values go to --out
    std::optional<sw::DType> type;
    for (int t = 0; t < sw::kDTypeCount; ++t) {
      if (flags["type"] == sw::DTypeName(static_cast<sw::DType>(t)))
        type = static_cast<sw::DType>(t);
    }
    if (!type) return Fail("unknown --type");
    auto file = sw::MappedFile::Open(path);
    if (!file.ok()) return Fail(std::string(file.status().ToString()));
    const auto& traits = sw::Traits(*type);
    const int64_t blocks = (*file)->size() / traits.block_bytes;
    std::vector<float> values(blocks * traits.block_elements);
    sw::DequantizeRow(*type, (*file)->data(), values.size(), values.data());
    std::ofstream f(flags["out"], std::ios::binary);
    f.write(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
    return 0;
  }
  if (verb == "quantize-row") {  // PATH holds raw f32 values; their --type blocks go to --out
    auto type = sw::DTypeFromName(flags["type"]);
    if (!type.ok()) return Fail(std::string(type.status().message()));
    if (!sw::HasGgmlQuantizer(*type)) return Fail(flags["type"] + " has no quantizer");
    auto file = sw::MappedFile::Open(path);
    if (!file.ok()) return Fail(std::string(file.status().ToString()));
    if ((*file)->size() % sizeof(float) != 0) return Fail(path + " is not a whole number of f32");
    const int64_t n = static_cast<int64_t>((*file)->size() / sizeof(float));
    std::vector<float> values(n);
    if (n > 0) std::memcpy(values.data(), (*file)->data(), n * sizeof(float));
    auto bytes = sw::StorageBytes(*type, n);
    if (!bytes.ok()) return Fail(std::string(bytes.status().message()));
    std::vector<uint8_t> out(*bytes);
    if (auto s = sw::QuantizeRow(*type, values.data(), n, out.data()); !s.ok()) {
      return Fail(std::string(s.ToString()));
    }
    std::ofstream f(flags["out"], std::ios::binary);
    f.write(reinterpret_cast<const char*>(out.data()), out.size());
    return f ? 0 : Fail("cannot write " + flags["out"]);
  }
  if (verb == "requantize") {  // PATH a GGUF; its blk.*.weight matrices as --type into --out
    if (flags["out"].empty()) return Fail("requantize wants --out=FILE.gguf");
    sw::RequantizeOptions options;
    std::string type_name;
    if (flags.count("file_type")) {
      auto file_type = sw::FindLlamaFileType(flags["file_type"]);
      if (!file_type.ok()) return Fail(std::string(file_type.status().message()));
      sw::LlamaQuantizeOptions llama;
      llama.file_type = *file_type;
      for (const std::string& text : tensor_types) {
        auto o = sw::ParseTensorTypeOverride(text);
        if (!o.ok()) return Fail(std::string(o.status().message()));
        llama.overrides.push_back(*o);
      }
      for (const char* key : {"output_tensor_type", "token_embedding_type"}) {
        if (!flags.count(key)) continue;
        auto t = sw::DTypeFromName(flags[key]);
        if (!t.ok()) return Fail(std::string(t.status().message()));
        (std::string(key) == "output_tensor_type" ? llama.output_tensor_type
                                                  : llama.token_embedding_type) = *t;
      }
      llama.pure = flags.count("pure") > 0;
      options.llama = llama;
      type_name = file_type->name;
    } else {
      auto type = sw::DTypeFromName(flags.count("type") ? flags["type"] : "Q8_0");
      if (!type.ok()) return Fail(std::string(type.status().message()));
      options.target = *type;
      type_name = sw::DTypeName(*type);
    }
    auto summary = sw::RequantizeGguf(path, flags["out"], options);
    if (!summary.ok()) return Fail(std::string(summary.status().ToString()));
    std::cout << Json{{"out", flags["out"]},
                      {"type", type_name},
                      {"converted", summary->converted},
                      {"fallback", summary->fallback},
                      {"copied", summary->copied},
                      {"not_whole_blocks", summary->not_whole_blocks}}
              << "\n";
    return 0;
  }
  auto t0 = std::chrono::steady_clock::now();
  auto model = sw::OpenModel(path);
  if (!model.ok()) return Fail(std::string(model.status().ToString()));
  const double open_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  // --quantize=BITS,BLOCK[,CLIP[,VALUE]] (BLOCK: elements, tensor or row) fake-quantizes every
  // linear weight of the layers for whatever the verb does, --activations=BITS[,hold][,topK] their
  // inputs; --keep=L,R,C (repeatable via commas in groups of three) names super weights, kept
  // by --quantize, their activations held out by ",hold", each tensor's K largest by ",topK";
  // --quantize_lm_head adds the lm_head.
  sw::FakeQuantizedModel quantized;
  const sw::Model* opened = model->get();
  if (flags.count("quantize") || flags.count("activations")) {
    sw::QuantizeSetting setting;
    setting.full_precision = flags.count("quantize") == 0;
    if (!setting.full_precision) {
      std::vector<std::string> parts = absl::StrSplit(flags["quantize"], ',');
      sw::RtnSpec& spec = setting.spec;
      if (parts.size() < 2 || !absl::SimpleAtoi(parts[0], &spec.bits)) {
        return Fail("--quantize wants BITS,BLOCK[,CLIP[,VALUE]]");
      }
      if (parts[1] == "tensor") {
        spec.block_size = sw::kBlockTensor;
      } else if (parts[1] == "row") {
        spec.block_size = sw::kBlockRow;
      } else if (!absl::SimpleAtoi(parts[1], &spec.block_size)) {
        return Fail("bad --quantize block size");
      }
      if (parts.size() > 2) {
        auto clip = sw::ParseClipMethod(parts[2]);
        if (!clip.ok()) return Fail(std::string(clip.status().message()));
        spec.clip = *clip;
        spec.clip_value = sw::DefaultClipValue(*clip);
        if (parts.size() > 3 && !absl::SimpleAtod(parts[3], &spec.clip_value)) {
          return Fail("bad --quantize clip value");
        }
      }
    }
    if (flags.count("activations")) {
      std::vector<std::string> parts = absl::StrSplit(flags["activations"], ',');
      if (!absl::SimpleAtoi(parts[0], &setting.activation_bits)) {
        return Fail("--activations wants BITS[,hold][,topK]");
      }
      for (size_t i = 1; i < parts.size(); ++i) {
        if (parts[i] == "hold") {
          setting.hold_out_super_activations = true;
        } else if (!absl::StartsWith(parts[i], "top") ||
                   !absl::SimpleAtoi(parts[i].substr(3), &setting.hold_out_largest_activations)) {
          return Fail("--activations wants BITS[,hold][,topK]");
        }
      }
    }
    std::vector<sw::SuperWeightCoordinate> keep;
    std::vector<int64_t> k;
    if (flags.count("keep") && (!ParseInts(flags["keep"], &k) || k.size() % 3 != 0)) {
      return Fail("--keep wants LAYER,ROW,COL[,LAYER,ROW,COL...]");
    }
    for (size_t i = 0; i < k.size(); i += 3)
      keep.push_back({static_cast<int>(k[i]), k[i + 1], k[i + 2]});
    setting.restore_super_weights = !keep.empty();
    auto q = sw::QuantizeSettingView(**model, setting, keep, flags.count("quantize_lm_head") > 0);
    if (!q.ok()) return Fail(std::string(q.status().ToString()));
    quantized = std::move(*q);
    opened = quantized.model.get();
  }
  const sw::Model& m = *opened;
  const sw::Precision precision = flags.count("bf16") ? sw::Precision::kBF16 : sw::Precision::kF32;
  sw::EditSet edits;
  for (const std::string& z : zeros) {  // LAYER[:EXPERT],ROW,COL
    std::string layer_part = z.substr(0, z.find(','));
    int expert = -1;
    if (const size_t colon = layer_part.find(':'); colon != std::string::npos) {
      if (!absl::SimpleAtoi(layer_part.substr(colon + 1), &expert) || expert < 0) {
        return Fail("--zero wants LAYER[:EXPERT],ROW,COL");
      }
      layer_part = layer_part.substr(0, colon);
    }
    std::vector<int64_t> v;
    const std::string rest = z.find(',') == std::string::npos ? "" : z.substr(z.find(','));
    if (!ParseInts(layer_part + rest, &v) || v.size() != 3) {
      return Fail("--zero wants LAYER[:EXPERT],ROW,COL");
    }
    edits.weights.push_back(
        {static_cast<int>(v[0]), sw::LinearKind::kDown, v[1], v[2], 0.f, expert});
  }
  for (const std::string& p : pruned) {  // LAYER:EXPERT removed from routing
    const size_t colon = p.find(':');
    int layer = 0, expert = 0;
    if (colon == std::string::npos || !absl::SimpleAtoi(p.substr(0, colon), &layer) ||
        !absl::SimpleAtoi(p.substr(colon + 1), &expert)) {
      return Fail("--prune_expert wants LAYER:EXPERT");
    }
    edits.pruned_experts.push_back({layer, expert});
  }
  if (absl::Status s = edits.Validate(m); !s.ok()) return Fail(s.ToString());
  std::vector<int32_t> ids;
  if (flags.count("ids")) {
    std::vector<int64_t> v;
    if (!ParseInts(flags["ids"], &v)) return Fail("--ids wants comma-separated integers");
    ids.assign(v.begin(), v.end());
  }
  std::string text;
  if (flags.count("text_file")) {
    std::ifstream f(flags["text_file"], std::ios::binary);
    if (!f) return Fail("cannot read " + flags["text_file"]);
    std::stringstream ss;
    ss << f.rdbuf();
    text = ss.str();
  } else if (flags.count("text")) {
    text = flags["text"];
  }
  const bool add_bos = flags.count("bos") ? flags["bos"] == "1" : m.config.add_bos;
  if (ids.empty() && !text.empty()) {
    if (m.tokenizer == nullptr) return Fail("model has no tokenizer");
    ids = m.tokenizer->Encode(text, add_bos);
  }
  Json out;
  if (verb == "export-hf") {  // the view (fake-quantized with --quantize) as an HF directory
    if (flags["out"].empty()) return Fail("export-hf wants --out=DIR");
    if (flags.count("activations")) return Fail("a file carries weights, not --activations");
    const std::string dtype_name = flags.count("dtype") ? flags["dtype"] : "f32";
    if (dtype_name != "f32" && dtype_name != "bf16") return Fail("--dtype wants f32 or bf16");
    const sw::DType dtype = dtype_name == "f32" ? sw::DType::kF32 : sw::DType::kBF16;
    if (auto s = sw::ExportHuggingFace(m, flags["out"], dtype); !s.ok()) {
      return Fail(std::string(s.ToString()));
    }
    std::cout << Json{{"out", flags["out"]},
                      {"dtype", dtype_name},
                      {"quantized", flags.count("quantize") > 0},
                      {"weight_mse", quantized.weight_mse}}
              << "\n";
    return 0;
  }
  if (verb == "weight") {  // layers[--layer].--kind (q_proj ... down_proj) as f32 to --out
    int layer = 0;
    if (!absl::SimpleAtoi(flags["layer"], &layer) || layer < 0 || layer >= m.config.layers) {
      return Fail("bad --layer");
    }
    int kind = -1;
    for (int k = 0; k < sw::kNumLinearKinds; ++k) {
      if (flags["kind"] == sw::LinearKindName(static_cast<sw::LinearKind>(k))) kind = k;
    }
    if (kind < 0) return Fail("bad --kind");
    const sw::Matrix& w = m.layers[layer].Get(static_cast<sw::LinearKind>(kind));
    std::vector<float> values(w.rows * w.cols);
    for (int64_t r = 0; r < w.rows; ++r) w.RowToFloat(r, &values[r * w.cols]);
    std::ofstream f(flags["out"], std::ios::binary);
    f.write(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
    if (!f) return Fail("cannot write --out");
    out = {{"rows", w.rows}, {"cols", w.cols}, {"weight_mse", quantized.weight_mse}};
  } else if (verb == "info") {
    const auto& c = m.config;
    out = {{"name", m.name},
           {"format", sw::ModelFormatName(m.format)},
           {"architecture", sw::ArchitectureName(c.arch)},
           {"hidden", c.hidden},
           {"intermediate", c.intermediate},
           {"layers", c.layers},
           {"heads", c.heads},
           {"kv_heads", c.kv_heads},
           {"head_dim", c.head_dim},
           {"vocab", c.vocab},
           {"add_bos", c.add_bos},
           {"bos", c.bos_token},
           {"experts", c.experts},
           {"experts_per_token", c.experts_per_token},
           {"down_proj_dtype",
            sw::DTypeName(m.layers[0].Find(sw::LinearKind::kDown, c.experts > 0 ? 0 : -1)->dtype)},
           {"mapped_bytes", m.MappedBytes()},
           {"open_ms", open_ms},
           {"cpu_class", sw::IsaName(sw::Cpu().active)}};
  } else if (verb == "tokenize") {
    out = {{"ids", ids}};
  } else if (verb == "logits") {
    sw::SequenceInput in{ids, &edits};
    sw::ForwardOptions fo;
    fo.precision = precision;
    auto fwd = sw::RunForward(m, {&in, 1}, fo);
    if (!fwd.ok()) return Fail(std::string(fwd.status().ToString()));
    std::vector<float> logits(ids.size() * m.config.vocab);
    const absl::Status status =
        sw::ComputeLogits(m, fwd->hidden.data(), ids.size(), logits.data(), precision);
    if (!status.ok()) return Fail(std::string(status.ToString()));
    std::ofstream f(flags["out"], std::ios::binary);
    f.write(reinterpret_cast<const char*>(logits.data()), logits.size() * sizeof(float));
    out = {{"tokens", ids.size()}, {"vocab", m.config.vocab}};
  } else if (verb == "activations") {  // --layer's --site input, before and after --activations
    int layer = 0;
    if (!absl::SimpleAtoi(flags["layer"], &layer) || layer < 0 || layer >= m.config.layers) {
      return Fail("bad --layer");
    }
    int site = -1;
    for (int i = 0; i < sw::kNumLinearInputSites; ++i) {
      if (flags["site"] == sw::LinearInputSiteName(static_cast<sw::LinearInputSite>(i))) site = i;
    }
    if (site < 0) return Fail("--site wants qkv_input, o_input, gate_up_input or down_input");
    SiteRecorder recorder(m.activation_transform, layer, static_cast<sw::LinearInputSite>(site));
    std::unique_ptr<sw::Model> view = m.ShareWeights();
    view->activation_transform = &recorder;
    sw::SequenceInput in{ids, &edits};
    sw::ForwardOptions fo;
    fo.precision = precision;
    auto fwd = sw::RunForward(*view, {&in, 1}, fo);
    if (!fwd.ok()) return Fail(std::string(fwd.status().ToString()));
    for (const auto& [suffix, values] : {std::pair{".input.f32", &recorder.input},
                                         std::pair{".quantized.f32", &recorder.output}}) {
      std::ofstream f(flags["out"] + suffix, std::ios::binary);
      f.write(reinterpret_cast<const char*>(values->data()), values->size() * sizeof(float));
      if (!f) return Fail("cannot write " + flags["out"] + suffix);
    }
    out = {{"tokens", ids.size()}, {"cols", recorder.recorded_cols}};
  } else if (verb == "imatrix") {
    if (flags["out"].empty()) return Fail("imatrix wants --out=FILE.gguf");
    sw::ImatrixOptions io;
    io.precision = precision;
    io.dataset = flags["text_file"];
    // llama-imatrix puts BOS at each chunk's start where the vocabulary adds one.
    if (add_bos) io.first_token = m.config.bos_token;
    if (flags.count("chunk") && !absl::SimpleAtoi(flags["chunk"], &io.chunk)) {
      return Fail("bad --chunk");
    }
    if (flags.count("chunks") && !absl::SimpleAtoi(flags["chunks"], &io.max_chunks)) {
      return Fail("bad --chunks");
    }
    auto imatrix = sw::ComputeImatrix(m, ids, io);
    if (!imatrix.ok()) return Fail(std::string(imatrix.status().ToString()));
    if (flags.count("boost")) {
      double factor = 0;
      if (!absl::SimpleAtod(flags["boost"], &factor)) return Fail("bad --boost");
      std::vector<int64_t> k;
      if (!ParseInts(flags["super_weights"], &k) || k.empty() || k.size() % 3 != 0) {
        return Fail("--boost wants --super_weights=LAYER,ROW,COL[,...]");
      }
      std::vector<sw::SuperWeightCoordinate> boosted;
      for (size_t i = 0; i < k.size(); i += 3) {
        boosted.push_back({static_cast<int>(k[i]), k[i + 1], k[i + 2]});
      }
      auto s = sw::BoostSuperWeightColumns(m, boosted, factor, &*imatrix);
      if (!s.ok()) return Fail(s.ToString());
    }
    if (auto s = sw::WriteImatrixGguf(*imatrix, flags["out"]); !s.ok()) return Fail(s.ToString());
    out = {{"entries", imatrix->entries.size()},
           {"chunks", imatrix->chunks},
           {"chunk_size", imatrix->chunk_size}};
  } else if (verb == "recipe") {
    auto file_type = sw::FindLlamaFileType(flags["file_type"]);
    if (!file_type.ok()) return Fail(std::string(file_type.status().message()));
    sw::RecipeOptions ro;
    ro.file_type = *file_type;
    std::vector<int64_t> k;
    if (!ParseInts(flags["super_weights"], &k) || k.empty() || k.size() % 3 != 0) {
      return Fail("recipe wants --super_weights=LAYER,ROW,COL[,...]");
    }
    for (size_t i = 0; i < k.size(); i += 3) {
      ro.super_weights.push_back({static_cast<int>(k[i]), k[i + 1], k[i + 2]});
    }
    if (flags.count("max_error") &&
        !absl::SimpleAtod(flags["max_error"], &ro.max_super_weight_error)) {
      return Fail("bad --max_error");
    }
    auto recipe = sw::PlanQuantizeRecipe(m, ro);
    if (!recipe.ok()) return Fail(std::string(recipe.status().ToString()));
    Json tensors = Json::array();
    for (const sw::RecipeTensor& t : recipe->tensors) {
      Json candidates = Json::array();
      for (const sw::TypeCandidate& c : t.candidates) {
        candidates.push_back({{"type", sw::DTypeName(c.requested)},
                              {"written", sw::DTypeName(c.written)},
                              {"bits_per_weight", c.bits_per_weight},
                              {"super_weight_relative_error", c.super_weight_relative_error},
                              {"tensor_relative_error", c.tensor_relative_error}});
      }
      tensors.push_back({{"name", t.name},
                         {"mix_type", sw::DTypeName(t.mix_type)},
                         {"chosen", sw::DTypeName(t.chosen)},
                         {"overridden", t.overridden},
                         {"candidates", candidates}});
    }
    Json overrides = Json::array();
    for (const sw::TensorTypeOverride& o : recipe->overrides) {
      overrides.push_back(o.pattern + "=" + sw::DTypeName(o.type));
    }
    out = {{"file_type", recipe->file_type.name},
           {"tensors", tensors},
           {"overrides", overrides},
           {"command", sw::LlamaQuantizeCommand(*recipe, path, "OUT.gguf", "")}};
  } else if (verb == "logprobs") {
    sw::SequenceInput in{ids, &edits};
    auto lp = sw::TokenLogprobs(m, {&in, 1}, precision);
    if (!lp.ok()) return Fail(std::string(lp.status().ToString()));
    out = {{"logprobs", (*lp)[0]}};
  } else if (verb == "perplexity") {
    sw::PerplexityOptions po;
    po.precision = precision;
    po.edits = &edits;
    if (flags.count("window") && !absl::SimpleAtoi(flags["window"], &po.window)) {
      return Fail("bad --window");
    }
    if (flags.count("max_windows") && !absl::SimpleAtoi(flags["max_windows"], &po.max_windows)) {
      return Fail("bad --max_windows");
    }
    auto r = sw::Perplexity(m, ids, po);
    if (!r.ok()) return Fail(std::string(r.status().ToString()));
    out = {{"perplexity", r->perplexity},
           {"mean_nll", r->mean_nll},
           {"tokens_scored", r->tokens_scored},
           {"windows", r->windows}};
  } else if (verb == "generate") {
    int steps = 16;
    if (flags.count("steps") && !absl::SimpleAtoi(flags["steps"], &steps))
      return Fail("bad --steps");
    std::vector<float> logits(m.config.vocab);
    for (int s = 0; s < steps; ++s) {
      sw::SequenceInput in{ids, &edits};
      auto fwd = sw::RunForward(m, {&in, 1}, {precision, nullptr});
      if (!fwd.ok()) return Fail(std::string(fwd.status().ToString()));
      const absl::Status status = sw::ComputeLogits(
          m, &fwd->hidden[(ids.size() - 1) * m.config.hidden], 1, logits.data(), precision);
      if (!status.ok()) return Fail(std::string(status.ToString()));
      ids.push_back(
          static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    }
    out = {{"ids", ids}, {"text", m.tokenizer ? m.tokenizer->Decode(ids) : ""}};
  } else if (verb == "eval") {  // one zero-shot task, per example: lm-eval's oracle reads it
    auto task = sw::LoadTask(flags["task"], flags.count("data_dir") ? flags["data_dir"] : "",
                             flags.count("max_examples") ? std::stoi(flags["max_examples"]) : 0);
    if (!task.ok()) return Fail(std::string(task.status().ToString()));
    std::vector<sw::LoglikelihoodRequest> requests;
    for (const auto& e : task->examples) {
      requests.insert(requests.end(), e.choices.begin(), e.choices.end());
    }
    sw::HarnessOptions ho;
    ho.precision = precision;
    auto lls = sw::ScoreLoglikelihoods(m, requests, ho);
    if (!lls.ok()) return Fail(std::string(lls.status().ToString()));
    Json examples = Json::array();
    size_t at = 0;
    for (const auto& e : task->examples) {
      Json logprobs = Json::array(), greedy = Json::array(), chars = Json::array();
      for (size_t c = 0; c < e.choices.size(); ++c) {
        logprobs.push_back((*lls)[at + c].logprob);
        greedy.push_back((*lls)[at + c].greedy);
        chars.push_back(sw::ChoiceCharacters(e.choices[c]));
      }
      const sw::ChoicePicks picks = sw::PickChoices(e, &(*lls)[at]);
      examples.push_back({{"logprobs", logprobs},
                          {"greedy", greedy},
                          {"choice_chars", chars},
                          {"gold", e.gold},
                          {"acc_pick", picks.acc},
                          {"acc_norm_pick", picks.acc_norm}});
      at += e.choices.size();
    }
    const sw::TaskScore score = sw::ScoreTask(*task, *lls);
    out = {{"task", task->name}, {"examples", examples}, {"acc", score.acc}};
    if (!std::isnan(score.acc_norm)) out["acc_norm"] = score.acc_norm;
    if (!std::isnan(score.perplexity)) out["perplexity"] = score.perplexity;
  } else if (verb == "locate") {
    if (ids.empty()) ids = m.tokenizer->Encode(sw::kPaperPrompt, m.config.add_bos);
    sw::LocateOptions lo;
    lo.precision = precision;
    if ((flags.count("threshold") && !absl::SimpleAtof(flags["threshold"], &lo.threshold)) ||
        (flags.count("spike_ratio") && !absl::SimpleAtof(flags["spike_ratio"], &lo.spike_ratio))) {
      return Fail("bad --threshold or --spike_ratio");
    }
    if (flags.count("confirm_file")) {
      std::ifstream f(flags["confirm_file"], std::ios::binary);
      std::stringstream ss;
      ss << f.rdbuf();
      lo.confirm_tokens = m.tokenizer->Encode(ss.str().substr(0, 20000), m.config.add_bos);
      lo.confirm_window = std::min<int>(512, lo.confirm_tokens.size());
    }
    auto r = sw::Locate(m, ids, lo);
    if (!r.ok()) return Fail(std::string(r.status().ToString()));
    Json found = Json::array();
    for (const auto& s : r->candidates) {
      found.push_back({{"layer", s.layer},
                       {"expert", s.expert},
                       {"row", s.row},
                       {"col", s.col},
                       {"weight", s.weight},
                       {"input_activation", s.input_activation},
                       {"output_activation", s.output_activation},
                       {"token", s.token},
                       {"iteration", s.iteration},
                       {"confirmed", s.confirmed},
                       {"perplexity_zeroed", s.perplexity_zeroed}});
    }
    out = {{"tokens", ids},
           {"candidates", found},
           {"perplexity_intact", r->perplexity_intact},
           {"iterations", r->iterations},
           {"profile_before", LayerJson(r->profile_before)},
           {"profile_after", LayerJson(r->profile_after)},
           {"expert_maxima", ExpertJson(r->expert_maxima)},
           {"super_experts", ExpertJson(r->super_experts)}};
  } else {
    return Fail("unknown verb " + verb);
  }
  // Numbers computed from a file changed in place under the run are not printed as results.
  if (absl::Status s = (*model)->CheckFilesUnchanged(); !s.ok()) return Fail(s.ToString());
  std::cout << out.dump() << "\n";
  return 0;
}
