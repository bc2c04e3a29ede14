#include "mfs/server/handles.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "mfs/base/coding.h"

namespace mfs::server {

namespace {
constexpr size_t kMacLen = 16;
constexpr uint32_t kMaxHandleBytes = MAX_HANDLE_SZ;

std::string Hmac(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}
}  // namespace

HandleCodec::HandleCodec(std::string_view secret, uint32_t node_id)
    : key_(Hmac(secret, "mfs-fs-handle-v1/" + std::to_string(node_id))) {}

std::string HandleCodec::Mac(std::string_view body) const {
  return Hmac(key_, body).substr(0, kMacLen);
}

Result<std::string> HandleCodec::Make(int fd) {
  std::vector<char> buf(sizeof(file_handle) + kMaxHandleBytes);
  auto* fh = reinterpret_cast<file_handle*>(buf.data());
  fh->handle_bytes = kMaxHandleBytes;
  int mount_id = 0;
  if (name_to_handle_at(fd, "", fh, &mount_id, AT_EMPTY_PATH) < 0)
    return Status::FromErrno("name_to_handle_at");
  MFS_RETURN_IF_ERROR(MountFd(mount_id).status());
  std::string body;
  Writer w(&body);
  w.U32(static_cast<uint32_t>(fh->handle_type));
  w.U32(static_cast<uint32_t>(mount_id));
  w.Bytes(std::string_view(reinterpret_cast<char*>(fh->f_handle), fh->handle_bytes));
  return body + Mac(body);
}

// An fd on the root of mount `mount_id`, found in mountinfo. Not O_PATH:
// open_by_handle_at(2) refuses O_PATH mount fds (EBADF).
Result<int> HandleCodec::MountFd(int mount_id) {
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
    int fd = open(mp.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno("open mount " + mp);
    mounts_.emplace(mount_id, UniqueFd(fd));
    return fd;
  }
  return Status::Error(ESTALE, "handle names an unknown mount");
}

Result<UniqueFd> HandleCodec::Open(std::string_view handle) {
  if (handle.size() < 12 + kMacLen) return Status::Error(EBADMSG, "short file handle");
  std::string_view body = handle.substr(0, handle.size() - kMacLen);
  std::string mac = Mac(body);
  if (CRYPTO_memcmp(mac.data(), handle.data() + body.size(), kMacLen) != 0)
    return Status::Error(ESTALE, "file handle not issued by this node");
  Reader r(body);
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
  int fd = open_by_handle_at(mfd, fh, O_PATH | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return Status::FromErrno("open_by_handle_at");
  return UniqueFd(fd);
}

}  // namespace mfs::server
