// A minimal GGUF writer for the tests: enough to build valid files and then break them.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace superweight::testing {

class GgufWriter {
 public:
  void KvString(const std::string& key, const std::string& v) {
    Key(key, 8);
    Str(v);
    ++kv_count_;
  }
  void KvU32(const std::string& key, uint32_t v) {
    Key(key, 4);
    Pod(kv_, v);
    ++kv_count_;
  }
  void KvU64(const std::string& key, uint64_t v) {
    Key(key, 10);
    Pod(kv_, v);
    ++kv_count_;
  }
  void KvF32(const std::string& key, float v) {
    Key(key, 6);
    Pod(kv_, v);
    ++kv_count_;
  }
  void KvStringArray(const std::string& key, const std::vector<std::string>& v) {
    Key(key, 9);
    Pod(kv_, uint32_t{8});
    Pod(kv_, uint64_t{v.size()});
    for (const auto& s : v) Str(s);
    ++kv_count_;
  }
  // Any value: its gguf_type id and the bytes after it (an array's element type, count, elements).
  void KvRaw(const std::string& key, uint32_t type, const std::vector<uint8_t>& encoded) {
    Key(key, type);
    kv_.insert(kv_.end(), encoded.begin(), encoded.end());
    ++kv_count_;
  }
  // ne in GGML order; data appended (aligned to 32) to the data section.
  void Tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type,
              const std::vector<uint8_t>& data) {
    while (data_.size() % 32 != 0) data_.push_back(0);
    Pod(infos_, uint64_t{name.size()});
    infos_.insert(infos_.end(), name.begin(), name.end());
    Pod(infos_, static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) Pod(infos_, d);
    Pod(infos_, type);
    Pod(infos_, uint64_t{data_.size()});
    data_.insert(data_.end(), data.begin(), data.end());
    ++tensor_count_;
  }
  std::vector<uint8_t> Bytes() const {
    std::vector<uint8_t> out;
    Pod(out, uint32_t{0x46554747});
    Pod(out, uint32_t{3});
    Pod(out, tensor_count_);
    Pod(out, kv_count_);
    out.insert(out.end(), kv_.begin(), kv_.end());
    out.insert(out.end(), infos_.begin(), infos_.end());
    while (out.size() % 32 != 0) out.push_back(0);
    out.insert(out.end(), data_.begin(), data_.end());
    return out;
  }

 private:
  template <typename T>
  static void Pod(std::vector<uint8_t>& out, T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    out.insert(out.end(), b, b + sizeof(T));
  }
  void Str(const std::string& s) {
    Pod(kv_, uint64_t{s.size()});
    kv_.insert(kv_.end(), s.begin(), s.end());
  }
  void Key(const std::string& key, uint32_t type) {
    Str(key);
    Pod(kv_, type);
  }
  std::vector<uint8_t> kv_, infos_, data_;
  uint64_t kv_count_ = 0, tensor_count_ = 0;
};

}  // namespace superweight::testing
