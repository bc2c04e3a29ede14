// ClientObserver: plugs an IoRecorder into the /mfs client's I/O hook
// (mfs::client::IoObserver, mfs/client/locality.h). Compiled only where the
// client's header exists (branch fs). In mount.mfs, after creating the
// client, one line wires accounting:
//
//   client->SetIoObserver(mfs::locality::MakeClientObserver(control_socket));
//
// The client passes the FUSE request's thread id: the
// recorder maps it to its process itself, once per thread, from a cache
// (reading /proc per operation would cost more than the operation).
// Thread-safe (IoRecorder is).
#pragma once

#if __has_include("mfs/client/locality.h")
#include <memory>
#include <string>

#include "mfs/client/locality.h"
#include "mfs/locality/recorder.h"

namespace mfs::locality {

static_assert(static_cast<int>(client::IoOp::kOpen) == static_cast<int>(IoOp::kOpen) &&
                  static_cast<int>(client::IoOp::kCreate) == static_cast<int>(IoOp::kCreate) &&
                  static_cast<int>(client::IoOp::kRead) == static_cast<int>(IoOp::kRead) &&
                  static_cast<int>(client::IoOp::kWrite) == static_cast<int>(IoOp::kWrite),
              "mfs::client::IoOp and mfs::locality::IoOp must keep the same values");

class ClientObserver final : public client::IoObserver {
 public:
  explicit ClientObserver(std::shared_ptr<IoRecorder> recorder) : rec_(std::move(recorder)) {}
  void OnIo(pid_t tid, uint32_t owner_node, client::IoOp op, uint64_t bytes) override {
    rec_->Record(tid, owner_node, static_cast<IoOp>(op), bytes);
  }
  bool Accounting() const override { return rec_->accounting(); }
  IoRecorder& recorder() { return *rec_; }

 private:
  std::shared_ptr<IoRecorder> rec_;
};

// A recorder reporting to the mfsd at `control_socket`, honouring
// MFS_LOCALITY / MFS_LOCALITY_FLUSH_MS (RecorderOptions::FromEnvironment).
// Its flush thread starts with the first operation recorded, so it may be
// made before mount.mfs daemonizes (forks).
inline std::shared_ptr<ClientObserver> MakeClientObserver(const std::string& control_socket) {
  return std::make_shared<ClientObserver>(
      std::make_shared<IoRecorder>(RecorderOptions::FromEnvironment(control_socket)));
}

}  // namespace mfs::locality
#endif
