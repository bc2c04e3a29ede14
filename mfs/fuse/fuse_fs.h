// FuseFs: the /mfs mount — libfuse3's low-level API over a client::Client.
//
// The only place that includes fuse_lowlevel.h. Each handler unpacks the
// request (copying names and file info before anything asynchronous),
// calls the Client or the inode's Backend, and answers exactly once from the
// callback — at once for the local fast path, from a network thread for a
// remote file. Reads and writes on local files splice straight between the
// FUSE device and the backing fd. Runs fuse_session_loop_mt, and, where the
// kernel agrees to FUSE over io_uring, serves requests off per-CPU rings
// too (uring.h).
//
// Thread-safety: handlers run concurrently on libfuse's worker threads;
// all shared state lives in the Client. No lock is held across a reply.
#pragma once

#include <memory>
#include <string>

#include "mfs/base/status.h"
#include "mfs/client/client.h"
#include "mfs/client/remote_backend.h"

struct fuse_session;

namespace mfs::fuse {

struct FuseCtx;
class UringTransport;

// FUSE passthrough for files of this node's export (kernel >= 6.9): the
// kernel reads, writes and maps the backing file itself, so mount.mfs never
// sees those bytes. kAuto: only while locality accounting is off (it counts
// the bytes it sees); kOn: always (local I/O bytes go uncounted); kOff: never.
enum class Passthrough { kOff, kAuto, kOn };
// "auto", "on", "off" (also true/false, yes/no, 1/0 for on/off).
Result<Passthrough> ParsePassthrough(const std::string& s);

// FUSE over io_uring (kernel >= 6.14, uring.h): kAuto uses it whenever the
// kernel offers it (/sys/module/fuse/parameters/enable_uring set); kOn
// first sets that parameter (root; it stays set); kOff never uses it.
enum class IoUring { kOff, kAuto, kOn };
// "auto", "on", "off" (also true/false, yes/no, 1/0 for on/off).
Result<IoUring> ParseIoUring(const std::string& s);

struct FuseOptions {
  std::string mountpoint;
  Passthrough passthrough = Passthrough::kAuto;
  IoUring io_uring = IoUring::kAuto;
  std::string extra_options;  // comma-separated, passed to the kernel mount
  unsigned max_threads = 16;
  bool debug = false;
};

class FuseFs : public client::Invalidator {
 public:
  FuseFs(client::Client* client, FuseOptions opts);
  ~FuseFs() override;
  FuseFs(const FuseFs&) = delete;
  FuseFs& operator=(const FuseFs&) = delete;

  // Creates the session and mounts; installs SIGINT/SIGTERM/SIGHUP handlers
  // that end Run().
  Status Mount();
  // Detaches from the terminal (fork; the parent exits once mounted).
  // REQUIRES: no threads started yet.
  void Daemonize(bool foreground);
  // Serves requests until unmounted, signalled or Stop()ped.
  Status Run();
  // Ends Run() from another thread: detaches the mount (MNT_DETACH), so the
  // kernel ends the connection and every worker sees ENODEV, instead of
  // closing the device under workers still reading it (a closed fd number
  // can be reused, and a worker then blocks on somebody else's file).
  // Files still open on the mount keep it served until they close. Falls
  // back to Unmount() where detaching is not permitted.
  void Stop();
  // Unmounts and closes the device. Call after Run() has returned.
  void Unmount();

  // Cache invalidation pushed into the kernel (coherence). Called from one
  // thread (RemoteBackend's), never from a FUSE handler holding a client
  // lock. An inode's may be skipped: see InvalidateInode in fuse_fs.cc.
  void InvalidateInode(uint64_t ino, int64_t ctime) override;
  void InvalidateEntry(uint64_t parent, const std::string& name) override;

  // Whether the kernel agreed to FUSE passthrough (after Run() began).
  bool passthrough_negotiated() const;

 private:
  Status NegotiateInit();
  void ProbePassthrough();

  client::Client* client_;
  FuseOptions opts_;
  ::fuse_session* se_ = nullptr;
  bool mounted_ = false;
  bool signals_ = false;
  std::unique_ptr<FuseCtx> ctx_;
  std::unique_ptr<UringTransport> uring_;  // after INIT, when agreed
};

// st_dev of the file system mounted at `mountpoint`, from
// /proc/self/mountinfo (no request to that file system).
Result<dev_t> MountDev(const std::string& mountpoint);

}  // namespace mfs::fuse
