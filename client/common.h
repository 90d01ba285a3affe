// What several verbs share: reporting errors, the flags' files, the input, weight coordinates,
// and the tables and lines they print.
#ifndef SUPERWEIGHT_CLIENT_COMMON_H_
#define SUPERWEIGHT_CLIENT_COMMON_H_

#include <algorithm>
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "client/verb.h"
#include "google/protobuf/message.h"
#include "grpcpp/grpcpp.h"
#include "superweight/v1/superweight.pb.h"

namespace superweight::client {

// "superweight: MSG" on stderr.
Exit Usage(const std::string& msg);

// The server's status, "superweight: CODE: message" on stderr.
Exit Failed(const grpc::Status& s);

// The file a flag names, or an error naming the flag.
absl::StatusOr<std::string> ReadFlagFile(absl::string_view flag, const std::string& path);

// Checked before a job runs, so that a long job does not end with its plot unwritable.
absl::Status CheckWritable(absl::string_view flag, const std::string& path);

// One JSON document per call: pretty, or (one_line) a compact line for JSON Lines streams.
void PrintJson(const google::protobuf::Message& m, bool one_line = false);

// --token_ids, --text_file or --text into `input`; an error names the flag.
absl::Status FillInput(v1::Input* input);

// LAYER or LAYER:EXPERT (an expert of a mixture-of-experts layer); false when it is neither.
bool ParseLayer(absl::string_view text, int32_t* layer, std::optional<int32_t>* expert);

// LAYER[:EXPERT],ROW,COL into `out`; false when it is not that.
bool ParseCoordinate(const std::string& text, v1::Coordinate* out);

// As the engine names it: layers[L].mlp.down_proj.weight[R, C], or with experts[E] before
// down_proj.
std::string CoordinateName(const v1::Coordinate& c);

// LAYER or LAYER:EXPERT as the tables print it.
std::string LayerName(const v1::Coordinate& c);

// A job in one line: id, kind, state, progress, model, and where replicas share a store, which
// ran it.
std::string JobLine(const v1::Job& j);

// A table: one row per setting, one column per metric (in the order first seen), perplexities
// first and the average last.
template <typename Rows>
void PrintRows(const Rows& rows) {
  std::vector<std::string> columns;
  for (const auto& row : rows) {
    std::vector<std::string> names;
    for (const auto& [name, value] : row.metrics()) names.push_back(name);
    std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
      auto rank = [](const std::string& n) {
        return n.rfind("average", 0) == 0 ? 2 : n.find("perplexity") != std::string::npos ? 0 : 1;
      };
      return std::make_pair(rank(a), a) < std::make_pair(rank(b), b);
    });
    for (const std::string& n : names) {
      if (std::find(columns.begin(), columns.end(), n) == columns.end()) columns.push_back(n);
    }
  }
  std::cout << absl::StrFormat("%-24s", "setting");
  for (const std::string& c : columns) std::cout << " " << c;
  std::cout << "\n";
  for (const auto& row : rows) {
    std::cout << absl::StrFormat("%-24s", row.setting());
    for (const std::string& c : columns) {
      auto it = row.metrics().find(c);
      const std::string cell =
          it == row.metrics().end() ? "-" : absl::StrFormat("%.4g", it->second);
      std::cout << " " << std::string(c.size() > cell.size() ? c.size() - cell.size() : 0, ' ')
                << cell;
    }
    std::cout << "\n";
  }
}

// "job ID: super weights ... (SOURCE)" of an ablation's or a quantization's result.
template <typename Result>
void PrintSuperWeights(const std::string& job_id, const Result& r) {
  std::cout << "job " << job_id << ": super weights";
  for (const auto& c : r.super_weights()) std::cout << " " << CoordinateName(c);
  std::cout << " (" << r.super_weights_source() << ")\n";
}

}  // namespace superweight::client

#endif  // SUPERWEIGHT_CLIENT_COMMON_H_
