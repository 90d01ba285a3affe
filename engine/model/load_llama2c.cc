// llama2.c checkpoints: a 7-int32 header, then f32 tensors in a fixed order.
#include <sys/stat.h>

#include "absl/strings/str_format.h"
#include "engine/model/loaders.h"
#include "engine/util/byte_reader.h"

namespace superweight {

absl::StatusOr<std::unique_ptr<Model>> OpenLlama2cModel(const std::string& path) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  auto model = std::make_unique<Model>();
  model->path = path;
  model->format = ModelFormat::kLlama2c;
  model->files.push_back(*file);
  const std::string dir = path.substr(0, path.find_last_of('/') + 1);
  model->name = path.substr(dir.size());
  auto error = [&](const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s", path, msg));
  };

  ByteReader r((*file)->bytes(), path);
  int32_t h[7] = {};
  for (int32_t& v : h) {
    if (auto s = r.Read(&v, "header"); !s.ok()) return s;
  }
  ModelConfig& c = model->config;
  const bool shared_classifier = h[5] > 0;
  c.hidden = h[0];
  c.intermediate = h[1];
  c.layers = h[2];
  c.heads = h[3];
  c.kv_heads = h[4];
  c.vocab = shared_classifier ? h[5] : -h[5];
  c.max_positions = h[6];
  for (int i = 0; i < 7; ++i) {
    if (i != 5 && (h[i] <= 0 || h[i] > (1 << 20))) {
      return error(absl::StrFormat("header field %d has value %d", i, h[i]));
    }
  }
  if (c.vocab <= 0 || c.vocab > (1 << 22) || c.hidden % c.heads != 0 || c.heads % c.kv_heads != 0) {
    return error("inconsistent header");
  }
  c.head_dim = c.hidden / c.heads;
  c.rope.rotary_dim = c.head_dim;
  c.rope.interleaved = true;
  c.norm_eps = 1e-5f;
  c.add_bos = true;
  c.bos_token = 1;
  c.eos_token = 2;

  // Expected size, in floats, computed in 64 bits before anything is read.
  const uint64_t dim = c.hidden, hid = c.intermediate, L = c.layers, V = c.vocab;
  const uint64_t kv_dim = static_cast<uint64_t>(c.kv_heads) * c.head_dim;
  const uint64_t floats = V * dim + L * dim + L * dim * dim + 2 * L * kv_dim * dim + L * dim * dim +
                          L * dim + 3 * L * hid * dim + dim +
                          static_cast<uint64_t>(c.max_positions) * c.head_dim +
                          (shared_classifier ? 0 : V * dim);
  if (r.remaining() != floats * 4) {
    return error(absl::StrFormat(
        "%d bytes of weights, the header implies %d (truncated or not a llama2.c checkpoint)",
        r.remaining(), floats * 4));
  }
  const uint8_t* p = (*file)->data() + r.offset();
  auto take = [&](uint64_t n) {
    const uint8_t* at = p;
    p += n * 4;
    return at;
  };
  model->embed = Matrix::Make(DType::kF32, V, dim, take(V * dim));
  const uint8_t* rms_att = take(L * dim);
  const uint8_t* wq = take(L * dim * dim);
  const uint8_t* wk = take(L * kv_dim * dim);
  const uint8_t* wv = take(L * kv_dim * dim);
  const uint8_t* wo = take(L * dim * dim);
  const uint8_t* rms_ffn = take(L * dim);
  const uint8_t* w1 = take(L * hid * dim);
  const uint8_t* w2 = take(L * dim * hid);
  const uint8_t* w3 = take(L * hid * dim);
  model->final_norm = ToFloatVector(DType::kF32, take(dim), dim);
  take(static_cast<uint64_t>(c.max_positions) *
       c.head_dim);  // precomputed RoPE tables, recomputed instead
  model->lm_head =
      shared_classifier ? model->embed : Matrix::Make(DType::kF32, V, dim, take(V * dim));
  if (auto s = ValidateConfig(c, path); !s.ok()) return s;
  model->layers.resize(L);
  for (uint64_t l = 0; l < L; ++l) {
    LayerWeights& w = model->layers[l];
    w.attn_norm = ToFloatVector(DType::kF32, rms_att + l * dim * 4, dim);
    w.ffn_norm = ToFloatVector(DType::kF32, rms_ffn + l * dim * 4, dim);
    w.Get(LinearKind::kQ) = Matrix::Make(DType::kF32, dim, dim, wq + l * dim * dim * 4);
    w.Get(LinearKind::kK) = Matrix::Make(DType::kF32, kv_dim, dim, wk + l * kv_dim * dim * 4);
    w.Get(LinearKind::kV) = Matrix::Make(DType::kF32, kv_dim, dim, wv + l * kv_dim * dim * 4);
    w.Get(LinearKind::kO) = Matrix::Make(DType::kF32, dim, dim, wo + l * dim * dim * 4);
    w.Get(LinearKind::kGate) = Matrix::Make(DType::kF32, hid, dim, w1 + l * hid * dim * 4);
    w.Get(LinearKind::kDown) = Matrix::Make(DType::kF32, dim, hid, w2 + l * dim * hid * 4);
    w.Get(LinearKind::kUp) = Matrix::Make(DType::kF32, hid, dim, w3 + l * hid * dim * 4);
  }
  // The tokenizer: tokenizer.bin, or tok<vocab>.bin as llama2.c names custom ones.
  for (const std::string& name :
       {absl::StrFormat("tok%d.bin", c.vocab), std::string("tokenizer.bin")}) {
    struct stat st;
    if (::stat((dir + name).c_str(), &st) != 0) continue;
    auto tok = LoadLlama2cTokenizer(dir + name, c.vocab);
    if (!tok.ok()) return tok.status();
    model->tokenizer = std::move(*tok);
    break;
  }
  if (auto s = ValidateModel(*model); !s.ok()) return s;
  return model;
}

}  // namespace superweight
