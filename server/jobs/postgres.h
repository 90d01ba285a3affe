// libpq behind a small RAII wrapper: a connection, its results, and a pool of connections for
// the threads of one replica. Errors are absl::Status; nothing here prints the password.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct pg_conn;
struct pg_result;

namespace superweight::server::pg {

// Where a database URL (postgresql://user:password@host:port/db?...) points, for messages:
// host, port and database, never the password. INVALID_ARGUMENT where it does not parse.
absl::StatusOr<std::string> DescribeUrl(const std::string& url);

class Result {
 public:
  explicit Result(pg_result* result) : result_(result) {}
  Result(Result&& other) noexcept : result_(other.result_) { other.result_ = nullptr; }
  Result& operator=(Result&& other) noexcept;
  ~Result();
  int rows() const;
  bool IsNull(int row, int column) const;
  std::string Text(int row, int column) const;
  int64_t Int(int row, int column) const;
  // A bytea column (text format, hex) decoded.
  std::string Bytes(int row, int column) const;
  pg_result* raw() const { return result_; }

 private:
  pg_result* result_;
};

// One parameter: text, or binary (a bytea); nullopt is SQL NULL.
struct Param {
  std::optional<std::string> value;
  bool binary = false;
};
inline Param Text(std::string s) { return {std::move(s), false}; }
inline Param Binary(std::string s) { return {std::move(s), true}; }
inline Param Null() { return {std::nullopt, false}; }

class Connection {
 public:
  // UNAVAILABLE naming the host and libpq's reason where it does not answer.
  static absl::StatusOr<std::unique_ptr<Connection>> Open(const std::string& url);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // One statement with $1.. parameters; UNAVAILABLE where the connection broke (the pool drops
  // it), INTERNAL with the server's message for an SQL error.
  absl::StatusOr<Result> Exec(const std::string& sql, const std::vector<Param>& params = {});
  // Several statements, no parameters (a schema migration).
  absl::Status ExecScript(const std::string& sql);
  bool Broken() const;
  // Reads what waits on the socket: false where the server closed the connection meanwhile.
  bool Alive();
  // LISTEN support: the socket to poll, and the channel payloads that arrived.
  int Socket() const;
  absl::StatusOr<std::vector<std::string>> TakeNotifications();

 private:
  absl::StatusOr<Result> Checked(Result result);
  explicit Connection(pg_conn* conn, std::string where) : conn_(conn), where_(std::move(where)) {}
  pg_conn* conn_;
  std::string where_;  // DescribeUrl's
};

// Connections for a replica's threads, opened as needed (at most `max_open`, then callers
// wait), and a broken one dropped rather than returned.
class Pool {
 public:
  Pool(std::string url, int max_open) : url_(std::move(url)), max_open_(max_open) {}
  class Lease {
   public:
    Lease(Pool* pool, std::unique_ptr<Connection> conn) : pool_(pool), conn_(std::move(conn)) {}
    Lease(Lease&&) = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    Connection* operator->() { return conn_.get(); }
    Connection& operator*() { return *conn_; }

   private:
    Pool* pool_;
    std::unique_ptr<Connection> conn_;
  };
  absl::StatusOr<Lease> Acquire();

 private:
  void Return(std::unique_ptr<Connection> conn);
  const std::string url_;
  const int max_open_;
  std::mutex mu_;
  std::condition_variable returned_;
  std::vector<std::unique_ptr<Connection>> idle_;
  int open_ = 0;
};

}  // namespace superweight::server::pg
