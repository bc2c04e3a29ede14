#include "mfs/base/status.h"

#include <cstring>

namespace mfs {

Status Status::Error(int err, std::string_view message) {
  return Status(err == 0 ? EINVAL : err, std::string(message));
}

Status Status::PosixError(std::string_view context, int err) {
  std::string msg(context);
  msg += ": ";
  msg += std::strerror(err);
  return Status(err == 0 ? EIO : err, std::move(msg));
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return message_;
}

Status Status::Annotate(std::string_view context) const {
  if (ok()) return *this;
  std::string msg(context);
  msg += ": ";
  msg += message_;
  return Status(code_, std::move(msg));
}

}  // namespace mfs
