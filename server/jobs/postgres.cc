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

// Where a URL's user information ends (its last '@' before the query), or npos.
size_t UserInfoEnd(const std::string& url, size_t start) {
  const size_t query = url.find('?', start);
  const size_t at = url.rfind('@', query == std::string::npos ? std::string::npos : query);
  return at == std::string::npos || at < start ? std::string::npos : at;
}

// Percent-decoded, as libpq reads a URL's parts.
std::string PercentDecoded(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    int byte = 0;
    if (s[i] == '%' && i + 2 < s.size() && absl::SimpleHexAtoi(s.substr(i + 1, 2), &byte)) {
      out += static_cast<char>(byte);
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The passwords a URL carries (postgresql://USER:PASSWORD@HOST/..., ?password=...), as written
// and decoded, found without parsing it the way libpq would: also for URLs libpq refuses.
std::vector<std::string> PasswordsIn(const std::string& url) {
  std::vector<std::string> found;
  const size_t scheme = url.find("://");
  const size_t start = scheme == std::string::npos ? 0 : scheme + 3;
  const size_t at = UserInfoEnd(url, start);
  if (scheme != std::string::npos && at != std::string::npos) {
    const size_t colon = url.find(':', start);
    if (colon != std::string::npos && colon < at)
      found.push_back(url.substr(colon + 1, at - colon - 1));
  }
  for (size_t key = url.find("password="); key != std::string::npos;
       key = url.find("password=", key + 1)) {
    const size_t value = key + 9;
    found.push_back(url.substr(value, url.find_first_of("& ", value) - value));
  }
  const size_t written = found.size();
  for (size_t i = 0; i < written; ++i) found.push_back(PercentDecoded(found[i]));
  return found;
}

// `message` with any password the URL carries blotted out.
std::string Redacted(std::string message, const std::string& url) {
  for (const std::string& password : PasswordsIn(url)) {
    if (!password.empty()) absl::StrReplaceAll({{password, "***"}}, &message);
  }
  return message;
}

}  // namespace

absl::StatusOr<std::string> DescribeUrl(const std::string& url) {
  if (url.rfind("postgresql://", 0) != 0 && url.rfind("postgres://", 0) != 0) {
    return absl::InvalidArgumentError(
        "the job store URL must read postgresql://USER:PASSWORD@HOST:PORT/DB (the URL given "
        "does not start with postgresql://)");
  }
  // A '/' in the user or password would make libpq read the password as a host and port, and
  // print it as such.
  const size_t start = url.find("://") + 3;
  const size_t at = UserInfoEnd(url, start);
  if (at != std::string::npos && url.find('/', start) < at) {
    return absl::InvalidArgumentError(
        "the job store URL's user or password holds a '/': percent-encode it (%2F)");
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
  // Defaults the URL may override (it is expanded after them): a database that stops answering
  // without closing the connection fails a statement in seconds, not the kernel's minutes.
  const char* keywords[] = {"connect_timeout",
                            "keepalives_idle",
                            "keepalives_interval",
                            "keepalives_count",
                            "tcp_user_timeout",
                            "options",
                            "dbname",
                            nullptr};
  const char* values[] = {"5",         "10",   "5", "3", "15000", "-c statement_timeout=60000",
                          url.c_str(), nullptr};
  pg_conn* conn = PQconnectdbParams(keywords, values, /*expand_dbname=*/1);
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
