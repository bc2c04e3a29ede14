#include "mfs/server/handles.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace mfs::server {

namespace {
constexpr size_t kMacLen = 16;

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
  MFS_ASSIGN_OR_RETURN(std::string body, kernel_.Make(fd));
  return body + Mac(body);
}

Result<UniqueFd> HandleCodec::Open(std::string_view handle) {
  if (handle.size() < 12 + kMacLen) return Status::Error(EBADMSG, "short file handle");
  std::string_view body = handle.substr(0, handle.size() - kMacLen);
  std::string mac = Mac(body);
  if (CRYPTO_memcmp(mac.data(), handle.data() + body.size(), kMacLen) != 0)
    return Status::Error(ESTALE, "file handle not issued by this node");
  return kernel_.Open(body);
}

}  // namespace mfs::server
