#include "mfs/client/control_query.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "mfs/base/unique_fd.h"

namespace mfs::client {

Result<nlohmann::json> ControlQuery(const std::string& socket_path, const nlohmann::json& request,
                                    std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  if (socket_path.size() >= sizeof(addr.sun_path))
    return Status::Error(ENAMETOOLONG, "control socket path too long");
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Status::FromErrno("socket");
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0)
    return Status::FromErrno("connect " + socket_path);
  std::string line = request.dump() + "\n";
  auto deadline = std::chrono::steady_clock::now() + timeout;
  size_t sent = 0;
  while (sent < line.size()) {
    ssize_t n = send(fd.get(), line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("send to " + socket_path);
    }
    sent += static_cast<size_t>(n);
  }
  std::string in;
  char buf[4096];
  while (in.find('\n') == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Status::TimedOut("control socket " + socket_path);
    pollfd p{fd.get(), POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::FromErrno("poll");
    if (r == 0) continue;
    ssize_t n = recv(fd.get(), buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno("recv from " + socket_path);
    if (n == 0) break;
    in.append(buf, static_cast<size_t>(n));
    if (in.size() > (4u << 20)) return Status::Error(EMSGSIZE, "control reply too large");
  }
  auto j = nlohmann::json::parse(in.substr(0, in.find('\n')), nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return Status::Error(EBADMSG, "control socket " + socket_path + ": malformed reply");
  return j;
}

}  // namespace mfs::client
