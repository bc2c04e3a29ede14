// Status and Result<T>: errors as values.
//
// Every fallible call returns a Status (or a Result<T>). A Status carries the
// errno that describes the failure — never flattened to EIO or ENOENT — and a
// human message naming what failed. Status objects are immutable values and
// are safe to share between threads.
#pragma once

#include <cerrno>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace mfs {

class [[nodiscard]] Status {
 public:
  Status() = default;

  static Status OK() { return Status(); }
  // An error with an explicit errno and a message.
  static Status Error(int err, std::string_view message);
  // PosixError(context, errno): "context: strerror(err)".
  static Status PosixError(std::string_view context, int err);
  // Same, reading the thread's current errno.
  static Status FromErrno(std::string_view context) { return PosixError(context, errno); }
  static Status InvalidArgument(std::string_view msg) { return Error(EINVAL, msg); }
  static Status NotFound(std::string_view msg) { return Error(ENOENT, msg); }
  static Status Corruption(std::string_view msg) { return Error(EBADMSG, msg); }
  static Status PermissionDenied(std::string_view msg) { return Error(EACCES, msg); }
  static Status Unavailable(std::string_view msg) { return Error(EHOSTDOWN, msg); }
  static Status TimedOut(std::string_view msg) { return Error(ETIMEDOUT, msg); }

  bool ok() const { return code_ == 0; }
  // The errno; 0 when ok().
  int code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;
  // Returns a copy whose message is prefixed with `context: `.
  Status Annotate(std::string_view context) const;
  // Marks an error as deliberately ignored.
  void IgnoreError() const {}

 private:
  Status(int code, std::string message) : code_(code), message_(std::move(message)) {}
  int code_ = 0;
  std::string message_;
};

// Result<T>: a T or an error Status. Not thread-safe for concurrent mutation.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    if (status_.ok()) status_ = Status::Error(EINVAL, "Result built from an OK status");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace mfs

// Propagates a non-OK Status from an expression.
#define MFS_RETURN_IF_ERROR(expr)            \
  do {                                       \
    ::mfs::Status _mfs_s = (expr);           \
    if (!_mfs_s.ok()) return _mfs_s;         \
  } while (0)

#define MFS_CONCAT_INNER(a, b) a##b
#define MFS_CONCAT(a, b) MFS_CONCAT_INNER(a, b)
// MFS_ASSIGN_OR_RETURN(auto x, Foo()); — unwraps a Result or returns its Status.
#define MFS_ASSIGN_OR_RETURN(lhs, expr) \
  MFS_ASSIGN_OR_RETURN_IMPL(MFS_CONCAT(_mfs_r, __LINE__), lhs, expr)
#define MFS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
