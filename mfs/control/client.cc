#include "mfs/control/client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <chrono>
#include <cstring>

#include "mfs/control/protocol.h"

namespace mfs::control {

std::string SocketPath(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = getenv("MFS_SOCKET"); env && *env) return env;
  return kDefaultSocket;
}

Result<Client> Client::Connect(const std::string& path, int timeout_ms) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return Status::Error(ENAMETOOLONG, "control socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Status::FromErrno("socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    return Status::PosixError("cannot reach mfsd at " + path + " (is mfsd running?)", err);
  }
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return Client(std::move(fd), path);
}

Result<nlohmann::json> Client::Call(const nlohmann::json& request) {
  std::string line = request.dump() + "\n";
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::send(fd_.get(), line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("send to mfsd at " + path_);
    }
    off += static_cast<size_t>(n);
  }
  for (;;) {
    auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string resp = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      nlohmann::json j = nlohmann::json::parse(resp, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object()) {
        return Status::Corruption("malformed reply from mfsd at " + path_);
      }
      if (!j.value("ok", false)) {
        int err = j.value("errno", EIO);
        return Status::Error(err, j.value("error", std::string("mfsd error")));
      }
      return j;
    }
    if (buffer_.size() > kMaxLine) return Status::Error(EMSGSIZE, "reply from mfsd too long");
    char buf[65536];
    ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return Status::TimedOut("mfsd at " + path_ + " did not answer in time");
      }
      return Status::FromErrno("recv from mfsd at " + path_);
    }
    if (n == 0) return Status::Error(ECONNRESET, "mfsd at " + path_ + " closed the connection");
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

Result<nlohmann::json> Call(const std::string& socket_path, const nlohmann::json& request,
                            int timeout_ms) {
  MFS_ASSIGN_OR_RETURN(Client c, Client::Connect(socket_path, timeout_ms));
  return c.Call(request);
}

}  // namespace mfs::control
