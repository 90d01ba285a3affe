#include "client/common.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/json_util.h"

namespace superweight::client {

Exit Usage(const std::string& msg) {
  std::cerr << "superweight: " << msg << "\n";
  return kUsage;
}

Exit Failed(const grpc::Status& s) {
  static const char* kNames[] = {"OK",
                                 "CANCELLED",
                                 "UNKNOWN",
                                 "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED",
                                 "NOT_FOUND",
                                 "ALREADY_EXISTS",
                                 "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION",
                                 "ABORTED",
                                 "OUT_OF_RANGE",
                                 "UNIMPLEMENTED",
                                 "INTERNAL",
                                 "UNAVAILABLE",
                                 "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  const int code = s.error_code();
  std::cerr << "superweight: " << (code >= 0 && code <= 16 ? kNames[code] : "?") << ": "
            << s.error_message() << "\n";
  return kFailed;
}

absl::StatusOr<std::string> ReadFlagFile(absl::string_view flag, const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  if (f) ss << f.rdbuf();
  if (!f) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot read --%s %s: %s", flag, path, std::strerror(errno)));
  }
  return ss.str();
}

absl::Status CheckWritable(absl::string_view flag, const std::string& path) {
  struct stat st;
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const bool exists = ::stat(path.c_str(), &st) == 0;
  if (exists ? (S_ISDIR(st.st_mode) || ::access(path.c_str(), W_OK) != 0)
             : ::access(dir.c_str(), W_OK) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot write --%s %s: %s", flag, path,
                        exists && S_ISDIR(st.st_mode) ? "a directory" : std::strerror(errno)));
  }
  return absl::OkStatus();
}

void PrintJson(const google::protobuf::Message& m, bool one_line) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  // A false verdict, a zero weight or layer 0 are answers: printed, not left out as defaults.
  o.always_print_primitive_fields = true;
  o.add_whitespace = !one_line;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  std::cout << out << "\n" << std::flush;
}

absl::Status FillInput(v1::Input* input) {
  if (!absl::GetFlag(FLAGS_token_ids).empty()) {
    for (absl::string_view p :
         absl::StrSplit(absl::GetFlag(FLAGS_token_ids), ',', absl::SkipEmpty())) {
      int32_t id;
      if (!absl::SimpleAtoi(p, &id)) {
        return absl::InvalidArgumentError("--token_ids wants comma-separated integers");
      }
      input->mutable_token_ids()->add_ids(id);
    }
    if (input->token_ids().ids().empty()) {
      return absl::InvalidArgumentError("--token_ids wants comma-separated integers");
    }
  } else if (!absl::GetFlag(FLAGS_text_file).empty()) {
    absl::StatusOr<std::string> text = ReadFlagFile("text_file", absl::GetFlag(FLAGS_text_file));
    if (!text.ok()) return text.status();
    input->set_text(*std::move(text));
  } else if (!absl::GetFlag(FLAGS_text).empty()) {
    input->set_text(absl::GetFlag(FLAGS_text));
  }
  return absl::OkStatus();
}

bool ParseLayer(absl::string_view text, int32_t* layer, std::optional<int32_t>* expert) {
  const std::vector<absl::string_view> p = absl::StrSplit(text, ':');
  int32_t e = 0;
  if (p.empty() || p.size() > 2 || !absl::SimpleAtoi(p[0], layer) ||
      (p.size() == 2 && (!absl::SimpleAtoi(p[1], &e) || e < 0))) {
    return false;
  }
  if (p.size() == 2) *expert = e;
  return true;
}

bool ParseCoordinate(const std::string& text, v1::Coordinate* out) {
  std::vector<std::string> p = absl::StrSplit(text, ',');
  int32_t layer;
  std::optional<int32_t> expert;
  int64_t row, col;
  if (p.size() != 3 || !ParseLayer(p[0], &layer, &expert) || !absl::SimpleAtoi(p[1], &row) ||
      !absl::SimpleAtoi(p[2], &col)) {
    return false;
  }
  out->set_layer(layer);
  out->set_row(row);
  out->set_col(col);
  if (expert.has_value()) out->set_expert(*expert);
  return true;
}

std::string CoordinateName(const v1::Coordinate& c) {
  return c.has_expert() ? absl::StrFormat("layers[%d].mlp.experts[%d].down_proj.weight[%d, %d]",
                                          c.layer(), c.expert(), c.row(), c.col())
                        : absl::StrFormat("layers[%d].mlp.down_proj.weight[%d, %d]", c.layer(),
                                          c.row(), c.col());
}

std::string LayerName(const v1::Coordinate& c) {
  return c.has_expert() ? absl::StrFormat("%d:%d", c.layer(), c.expert()) : absl::StrCat(c.layer());
}

std::string JobLine(const v1::Job& j) {
  // Where replicas share a store: which ran it, and how many tries it took past one.
  std::string where;
  if (!j.replica().empty()) where = "  on " + j.replica();
  if (j.attempts() > 1) where += absl::StrFormat(" (attempt %d)", j.attempts());
  return absl::StrFormat("%s  %-7s %-10s %3.0f%%  %s%s%s", j.id(), j.kind(),
                         v1::Job::State_Name(j.state()), 100 * j.progress(), j.model(), where,
                         j.error_message().empty() ? "" : "  (" + j.error_message() + ")");
}

}  // namespace superweight::client
