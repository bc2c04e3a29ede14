#include "mfs/wire/auth.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include "mfs/base/coding.h"
#include "mfs/base/unique_fd.h"

namespace mfs::wire {
namespace {

constexpr std::string_view kClientLabel = "mfs-auth-v1/client";
constexpr std::string_view kServerLabel = "mfs-auth-v1/server";

std::string Mac(const std::string& secret, std::string_view label, std::string_view n1,
                std::string_view n2, uint32_t id1, uint32_t id2, PeerRole role) {
  std::string msg(label);
  msg.append(n1.data(), n1.size());
  msg.append(n2.data(), n2.size());
  Writer w(&msg);
  w.U32(id1);
  w.U32(id2);
  w.U8(static_cast<uint8_t>(role));
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

bool SameMac(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    // OpenSSL's CSPRNG failing is not recoverable; fall back to the kernel.
    UniqueFd fd(::open("/dev/urandom", O_RDONLY | O_CLOEXEC));
    size_t got = 0;
    while (fd && got < n) {
      ssize_t r = ::read(fd.get(), out.data() + got, n - got);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
  }
  return out;
}

Result<std::string> LoadSecret(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno("cluster secret " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno("cluster secret " + path);
  if (st.st_mode & 077) {
    return Status::PermissionDenied("cluster secret " + path +
                                    ": readable by group or others (chmod 600 it)");
  }
  std::string secret;
  char buf[4096];
  for (;;) {
    ssize_t r = ::read(fd.get(), buf, sizeof buf);
    if (r < 0) return Status::FromErrno("cluster secret " + path);
    if (r == 0) break;
    secret.append(buf, static_cast<size_t>(r));
    if (secret.size() > (1u << 16)) return Status::InvalidArgument("cluster secret " + path + ": too large");
  }
  while (!secret.empty() && isspace(static_cast<unsigned char>(secret.back()))) secret.pop_back();
  if (secret.size() < kMinSecretSize) {
    return Status::InvalidArgument("cluster secret " + path + ": shorter than " +
                                   std::to_string(kMinSecretSize) + " bytes");
  }
  return secret;
}

ServerHandshake::ServerHandshake(std::string secret, uint32_t server_id)
    : secret_(std::move(secret)), server_id_(server_id) {}

std::string ServerHandshake::Hello() {
  nonce_s_ = RandomBytes(kNonceSize);
  std::string out;
  Writer w(&out);
  w.U32(server_id_);
  w.Raw(nonce_s_);
  return out;
}

Result<std::string> ServerHandshake::Verify(std::string_view prove) {
  if (nonce_s_.empty()) return Status::Error(EPROTO, "auth: proof before hello");
  Reader r(prove);
  uint32_t client_id = r.U32();
  uint8_t role = r.U8();
  std::string_view nonce_c = r.Raw(kNonceSize);
  std::string_view mac = r.Raw(kMacSize);
  if (!r.done()) return Status::Corruption("auth: malformed proof");
  if (role < 1 || role > 3) return Status::Corruption("auth: unknown peer role");
  auto peer_role = static_cast<PeerRole>(role);
  if (!SameMac(mac, Mac(secret_, kClientLabel, nonce_s_, nonce_c, client_id, server_id_,
                        peer_role))) {
    return Status::PermissionDenied("auth: peer " + std::to_string(client_id) +
                                    " failed the challenge (wrong cluster secret)");
  }
  peer_id_ = client_id;
  peer_role_ = peer_role;
  std::string accept = Mac(secret_, kServerLabel, nonce_c, nonce_s_, server_id_, client_id,
                           peer_role);
  nonce_s_.clear();  // one proof per hello
  return accept;
}

ClientHandshake::ClientHandshake(std::string secret, uint32_t client_id, PeerRole role)
    : secret_(std::move(secret)), client_id_(client_id), role_(role) {}

Result<std::string> ClientHandshake::Prove(std::string_view hello) {
  Reader r(hello);
  server_id_ = r.U32();
  std::string_view nonce_s = r.Raw(kNonceSize);
  if (!r.done()) return Status::Corruption("auth: malformed hello");
  nonce_s_.assign(nonce_s);
  nonce_c_ = RandomBytes(kNonceSize);
  std::string out;
  Writer w(&out);
  w.U32(client_id_);
  w.U8(static_cast<uint8_t>(role_));
  w.Raw(nonce_c_);
  w.Raw(Mac(secret_, kClientLabel, nonce_s_, nonce_c_, client_id_, server_id_, role_));
  return out;
}

Status ClientHandshake::Finish(std::string_view accept) {
  if (nonce_c_.empty()) return Status::Error(EPROTO, "auth: accept before proof");
  if (!SameMac(accept,
               Mac(secret_, kServerLabel, nonce_c_, nonce_s_, server_id_, client_id_, role_))) {
    return Status::PermissionDenied("auth: node " + std::to_string(server_id_) +
                                    " could not prove the cluster secret");
  }
  return Status::OK();
}

}  // namespace mfs::wire
