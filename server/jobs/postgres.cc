#include "server/jobs/postgres.h"

#include <libpq-fe.h>
#include <poll.h>

#include <cstdlib>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"

namespace superweight::server::pg {
namespace {

// libpq's messages end in newlines and may span lines: one line for ours.
std::string OneLine(const char* message) {
  std::string s = message == nullptr ? "" : message;
  absl::StrReplaceAll({{"\n", " "}}, &s);
  return std::string(absl::StripAsciiWhitespace(s));
}

// The password a URL carries (postgresql://USER:PASSWORD@HOST/...), found without parsing it
// the way libpq would, as it is also for URLs libpq refuses.
std::string PasswordIn(const std::string& url) {
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos) return "";
  const size_t start = scheme + 3;
  const size_t at = url.rfind('@', url.find_first_of("/?", start));
  if (at == std::string::npos || at < start) return "";
  const size_t colon = url.find(':', start);
  if (colon == std::string::npos || colon > at) return "";
  return url.substr(colon + 1, at - colon - 1);
}

// `message` with the URL's password, if it carries one, blotted out.
std::string Redacted(std::string message, const std::string& url) {
  const std::string password = PasswordIn(url);
  if (!password.empty()) absl::StrReplaceAll({{password, "***"}}, &message);
  return message;
}

}  // namespace

absl::StatusOr<std::string> DescribeUrl(const std::string& url) {
  if (url.rfind("postgresql://", 0) != 0 && url.rfind("postgres://", 0) != 0) {
    return absl::InvalidArgumentError(
        "the job store URL must read postgresql://USER:PASSWORD@HOST:PORT/DB (the URL given "
        "does not start with postgresql://)");
  }
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
  if (options == nullptr) {
    std::string why = error != nullptr ? OneLine(error) : "out of memory";
    PQfreemem(error);
    return absl::InvalidArgumentError(Redacted(
        absl::StrCat("the job store URL does not parse (postgresql://USER@HOST:PORT/DB): ", why),
        url));
  }
  std::string host, port, dbname, user;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    const std::string key = o->keyword;
    if (key == "host" || key == "hostaddr") host = host.empty() ? o->val : host;
    if (key == "port") port = o->val;
    if (key == "dbname") dbname = o->val;
    if (key == "user") user = o->val;
  }
  PQconninfoFree(options);
  if (!port.empty() && port.find_first_not_of("0123456789") != std::string::npos) {
    return absl::InvalidArgumentError(
        Redacted(absl::StrCat("the job store URL's port is not a number: ", port), url));
  }
  return absl::StrCat("PostgreSQL at ", host.empty() ? "the local socket" : host,
                      port.empty() ? "" : absl::StrCat(" port ", port),
                      dbname.empty() ? "" : absl::StrCat(", database ", dbname),
                      user.empty() ? "" : absl::StrCat(", user ", user));
}

Result& Result::operator=(Result&& other) noexcept {
  if (this != &other) {
    PQclear(result_);
    result_ = other.result_;
    other.result_ = nullptr;
  }
  return *this;
}

Result::~Result() { PQclear(result_); }
int Result::rows() const { return PQntuples(result_); }
bool Result::IsNull(int row, int column) const { return PQgetisnull(result_, row, column) != 0; }
std::string Result::Text(int row, int column) const {
  return std::string(PQgetvalue(result_, row, column), PQgetlength(result_, row, column));
}
int64_t Result::Int(int row, int column) const {
  int64_t v = 0;
  if (!absl::SimpleAtoi(Text(row, column), &v)) return 0;
  return v;
}
std::string Result::Bytes(int row, int column) const {
  if (IsNull(row, column)) return "";
  size_t size = 0;
  unsigned char* bytes = PQunescapeBytea(
      reinterpret_cast<const unsigned char*>(PQgetvalue(result_, row, column)), &size);
  if (bytes == nullptr) return "";
  std::string out(reinterpret_cast<const char*>(bytes), size);
  PQfreemem(bytes);
  return out;
}

absl::StatusOr<std::unique_ptr<Connection>> Connection::Open(const std::string& url) {
  auto where = DescribeUrl(url);
  if (!where.ok()) return where.status();
  pg_conn* conn = PQconnectdb(url.c_str());
  if (conn == nullptr) return absl::ResourceExhaustedError("libpq: out of memory");
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string why = Redacted(OneLine(PQerrorMessage(conn)), url);
    PQfinish(conn);
    return absl::UnavailableError(absl::StrCat("cannot reach the job store (", *where, "): ", why));
  }
  // Our messages are read by people and tests alike; the server's notices are noise here.
  PQsetNoticeProcessor(
      conn, [](void*, const char*) {}, nullptr);
  return std::unique_ptr<Connection>(new Connection(conn, *where));
}

Connection::~Connection() { PQfinish(conn_); }

bool Connection::Broken() const { return PQstatus(conn_) != CONNECTION_OK; }

bool Connection::Alive() {
  // A server that went away sent its goodbye and then closed: both are read here (each read
  // takes what is there), and the end of the stream marks the connection bad.
  for (int reads = 0; reads < 4 && PQstatus(conn_) == CONNECTION_OK; ++reads) {
    pollfd fd{PQsocket(conn_), POLLIN, 0};
    if (::poll(&fd, 1, 0) <= 0) break;
    if (PQconsumeInput(conn_) == 0) return false;
  }
  return PQstatus(conn_) == CONNECTION_OK;
}

absl::StatusOr<Result> Connection::Exec(const std::string& sql, const std::vector<Param>& params) {
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  for (const Param& p : params) {
    values.push_back(p.value ? p.value->data() : nullptr);
    lengths.push_back(p.value ? static_cast<int>(p.value->size()) : 0);
    formats.push_back(p.binary ? 1 : 0);
  }
  return Checked(Result(PQexecParams(conn_, sql.c_str(), static_cast<int>(params.size()), nullptr,
                                     values.data(), lengths.data(), formats.data(), 0)));
}

absl::Status Connection::ExecScript(const std::string& sql) {
  return Checked(Result(PQexec(conn_, sql.c_str()))).status();
}

absl::StatusOr<Result> Connection::Checked(Result result) {
  pg_result* raw = result.raw();
  const ExecStatusType status = PQresultStatus(raw);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return result;
  std::string why = OneLine(raw != nullptr ? PQresultErrorMessage(raw) : PQerrorMessage(conn_));
  if (why.empty()) why = OneLine(PQerrorMessage(conn_));
  if (Broken()) {
    return absl::UnavailableError(absl::StrCat("lost the job store (", where_, "): ", why));
  }
  return absl::InternalError(absl::StrCat("job store: ", why));
}

int Connection::Socket() const { return PQsocket(conn_); }

absl::StatusOr<std::vector<std::string>> Connection::TakeNotifications() {
  if (PQconsumeInput(conn_) == 0) {
    return absl::UnavailableError(
        absl::StrCat("lost the job store (", where_, "): ", OneLine(PQerrorMessage(conn_))));
  }
  std::vector<std::string> payloads;
  while (PGnotify* n = PQnotifies(conn_)) {
    payloads.push_back(n->extra != nullptr ? n->extra : "");
    PQfreemem(n);
  }
  return payloads;
}

Pool::Lease::~Lease() {
  if (conn_ != nullptr) pool_->Return(std::move(conn_));
}

absl::StatusOr<Pool::Lease> Pool::Acquire() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    returned_.wait(lock, [&] { return !idle_.empty() || open_ < max_open_; });
    // An idle connection the server closed meanwhile (a restart) is replaced, not handed out
    // to fail its caller's statement.
    while (!idle_.empty()) {
      std::unique_ptr<Connection> conn = std::move(idle_.back());
      idle_.pop_back();
      if (conn->Alive()) return Lease(this, std::move(conn));
      --open_;
    }
    ++open_;
  }
  auto conn = Connection::Open(url_);
  if (!conn.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    --open_;
    returned_.notify_one();
    return conn.status();
  }
  return Lease(this, std::move(*conn));
}

void Pool::Return(std::unique_ptr<Connection> conn) {
  std::lock_guard<std::mutex> lock(mu_);
  if (conn->Broken()) {
    --open_;
    conn.reset();
  } else {
    idle_.push_back(std::move(conn));
  }
  returned_.notify_one();
}

}  // namespace superweight::server::pg
