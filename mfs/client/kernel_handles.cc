#include "mfs/client/kernel_handles.h"

#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "mfs/base/coding.h"

namespace mfs::client::ops {

namespace {
constexpr uint32_t kMaxHandleBytes = MAX_HANDLE_SZ;
}  // namespace

std::string UnescapeMountInfoPath(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    auto octal = [&](size_t j) { return j < s.size() && s[j] >= '0' && s[j] <= '7'; };
    if (s[i] == '\\' && octal(i + 1) && octal(i + 2) && octal(i + 3)) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

Result<std::string> KernelHandles::Make(int fd) {
  std::vector<char> buf(sizeof(file_handle) + kMaxHandleBytes);
  auto* fh = reinterpret_cast<file_handle*>(buf.data());
  fh->handle_bytes = kMaxHandleBytes;
  int mount_id = 0;
  if (name_to_handle_at(fd, "", fh, &mount_id, AT_EMPTY_PATH) < 0)
    return Status::FromErrno("name_to_handle_at");
  MFS_RETURN_IF_ERROR(MountFd(mount_id).status());
  std::string out;
  Writer w(&out);
  w.U32(static_cast<uint32_t>(fh->handle_type));
  w.U32(static_cast<uint32_t>(mount_id));
  w.Bytes(std::string_view(reinterpret_cast<char*>(fh->f_handle), fh->handle_bytes));
  return out;
}

// An fd on the root of mount `mount_id`, found in mountinfo. Not O_PATH:
// open_by_handle_at(2) refuses O_PATH mount fds (EBADF).
Result<int> KernelHandles::MountFd(int mount_id) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = mounts_.find(mount_id);
  if (it != mounts_.end()) return it->second.get();
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    int id = 0;
    std::string parent, majmin, root, mp;
    ls >> id >> parent >> majmin >> root >> mp;
    if (id != mount_id) continue;
    mp = UnescapeMountInfoPath(mp);
    int fd = open(mp.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno("open mount " + mp);
    mounts_.emplace(mount_id, UniqueFd(fd));
    return fd;
  }
  return Status::Error(ESTALE, "handle names an unknown mount");
}

Result<UniqueFd> KernelHandles::Open(std::string_view handle, int flags) {
  Reader r(handle);
  int type = static_cast<int>(r.U32());
  int mount_id = static_cast<int>(r.U32());
  std::string_view bytes = r.Bytes();
  if (!r.done() || bytes.size() > kMaxHandleBytes) return Status::Error(EBADMSG, "bad file handle");
  MFS_ASSIGN_OR_RETURN(int mfd, MountFd(mount_id));
  std::vector<char> buf(sizeof(file_handle) + bytes.size());
  auto* fh = reinterpret_cast<file_handle*>(buf.data());
  fh->handle_bytes = static_cast<unsigned>(bytes.size());
  fh->handle_type = type;
  std::memcpy(fh->f_handle, bytes.data(), bytes.size());
  int fd = open_by_handle_at(mfd, fh, flags | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("open_by_handle_at");
  return UniqueFd(fd);
}

bool KernelHandles::Usable(int dirfd) {
  auto h = Make(dirfd);
  return h.ok() && Open(*h).ok();
}

}  // namespace mfs::client::ops
