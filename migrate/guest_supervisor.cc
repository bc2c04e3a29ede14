// GuestSupervisor: see supervisor.h.
#include <fcntl.h>
#include <linux/kcmp.h>
#include <linux/seccomp.h>
#include <malloc.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "mfs/base/coding.h"
#include "mfs/base/log.h"
#include "mfs/base/unique_fd.h"
#include "mfs/control/client.h"
#include "mfs/control/server.h"
#include "mfs/wire/auth.h"
#include "mfs/wire/connection.h"
#include "migrate/checkpoint.h"
#include "migrate/deputy.h"
#include "migrate/fault.h"
#include "migrate/job_thread.h"
#include "migrate/prepare.h"
#include "migrate/proc_maps.h"
#include "migrate/protocol.h"
#include "migrate/restore.h"
#include "migrate/supervisor.h"
#include "migrate/syscall_table.h"
#include "migrate/transfer.h"

namespace mfs::migrate {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using json = nlohmann::json;

// The remote dies with its supervisor; its exit stop (TRACEEXIT) shows the
// offsets of its DFSA files, which the home's fds take at the end.
constexpr long kTargetOptions = PTRACE_O_EXITKILL | PTRACE_O_TRACEEXIT;

constexpr int kIoctlTcgets = 0x5401, kIoctlTcsets = 0x5402, kIoctlTcsetsw = 0x5403, kIoctlTcsetsf = 0x5404;
constexpr int kIoctlTiocgpgrp = 0x540F, kIoctlTiocspgrp = 0x5410, kIoctlTiocgwinsz = 0x5413,
              kIoctlTiocswinsz = 0x5414, kIoctlFionread = 0x541B, kIoctlFionbio = 0x5421,
              kIoctlFionclex = 0x5450, kIoctlFioclex = 0x5451;
constexpr uint32_t kKernelTermios = 36;
constexpr int kMadvPopulateWrite = 23;  // Linux 5.14


class Guest {
 public:
  Guest(asio::io_context& io, SupervisorConfig cfg, uint32_t home_node, int home_pid)
      : io_(io), cfg_(std::move(cfg)), home_node_(home_node), home_pid_(home_pid), acceptor_(io),
        sigchld_(io, SIGCHLD), accept_timer_(io), k_(ProbeKernel()) {}

  Result<uint16_t> Listen() {
    MFS_ASSIGN_OR_RETURN(secret_, wire::LoadSecret(cfg_.secret_file));
    boost::system::error_code ec;
    tcp::endpoint ep(asio::ip::make_address(cfg_.address, ec), 0);
    if (ec) return Status::InvalidArgument("bad address " + cfg_.address);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(4, ec);
    if (ec) return Status::Error(ec.value(), "guest listen: " + ec.message());
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket s) { OnAccept(ec, std::move(s)); });
    accept_timer_.expires_after(std::chrono::seconds(30));
    accept_timer_.async_wait([this](boost::system::error_code ec) {
      if (!ec && !conn_) {
        spdlog::error("guest: no home connected within 30 s");
        Quit(1);
      }
    });
    sigchld_.async_wait([this](auto ec, int) { OnSigchld(ec); });
    return acceptor_.local_endpoint().port();
  }

  int exit_code() const { return exit_code_; }

 private:
  void Quit(int code) {
    exit_code_ = code;
    KillRemote();
    if (control_) control_->Stop();
    if (conn_) conn_->Close(Status::OK());
    asio::post(io_, [this] { io_.stop(); });
  }

  // SIGKILL for the whole remote; its threads are reaped before the main
  // thread (the kernel reports a group leader only after its threads).
  void KillRemote() {
    writer_.Drain();
    if (!remote_ || remote_->dead()) return;
    kill(remote_->tid(), SIGKILL);
    for (auto& t : threads_) t->Kill();
    threads_.clear();
    remote_->Kill();
  }

  // The real tid of the remote's thread that the program knows as `vtid`
  // (0: none).
  pid_t RealTid(pid_t vtid) const {
    for (const auto& [real, v] : vtid_of_)
      if (v == vtid) return real;
    return 0;
  }

  void OnAccept(boost::system::error_code ec, tcp::socket s) {
    if (ec) return Quit(1);
    wire::AuthConfig auth{secret_, cfg_.node_id, wire::PeerRole::kNode, std::chrono::milliseconds(5000)};
    wire::Connection::Accept(
        std::move(s), auth,
        [this](const wire::Connection::Ptr& c, wire::Frame f) { OnRequest(c, std::move(f)); },
        [this](const wire::Connection::Ptr&, const Status& why) {
          if (!quitting_) {
            spdlog::warn("guest: home connection closed ({}): killing the remote", why.ToString());
            quitting_ = true;
            Quit(1);
          }
        },
        [this](Result<wire::Connection::Ptr> r) {
          if (!r.ok()) {
            spdlog::error("guest: handshake failed: {}", r.status().ToString());
            return Quit(1);
          }
          conn_ = *r;
          accept_timer_.cancel();
          acceptor_.close();
          FaultPoint("guest-accept");
          // The process to restore into, made before the home freezes its
          // program (off the critical path); kImage makes one if this failed.
          auto t = SpawnRestoreTarget({}, kTargetOptions);
          if (t.ok()) target_ = std::move(*t);
        });
  }

  void OnRequest(const wire::Connection::Ptr& c, wire::Frame f) {
    switch (f.type()) {
      case kPrepare: return Prepare(c, std::move(f));
      case kPrecopy: {
        // Pages of the still running process, into the prepared memory (on
        // the writer thread; answered once written).
        if (!prepared_ || restorer_ || !target_)
          return c->ReplyError(f, Status::Error(EINVAL, "pre-copy without prepared memory"));
        auto job = std::make_shared<wire::Frame>(std::move(f));
        writer_.Post([this, c, job, pieces = prepared_->pieces, target = target_.get()] {
          Status ws = ForEachPageRun(job->payload, [&](uint64_t addr, std::string_view data) {
            auto it = std::upper_bound(pieces.begin(), pieces.end(), addr,
                                       [](uint64_t a, const PreparedPiece& p) { return a < p.start; });
            if (it == pieces.begin()) return Status::Corruption("pre-copy: pages outside the prepared memory");
            const PreparedPiece& p = *std::prev(it);
            if (addr + data.size() > p.end) return Status::Corruption("pre-copy: pages outside the prepared memory");
            return target->WriteMem(p.scratch + (addr - p.start), data.data(), data.size());
          });
          job->payload.clear();
          job->payload.shrink_to_fit();
          asio::post(io_, [c, job, ws] { return ws.ok() ? c->Reply(*job, "") : c->ReplyError(*job, ws); });
        });
        return;
      }
      case kImage: {
        writer_.Drain();
        Status s = BeginRestore(f.payload);
        FaultPoint("guest-header");
        if (!s.ok()) restore_error_ = s;
        // The reply names the mappings whose prepared (and pre-copied)
        // memory is in place.
        return s.ok() ? c->Reply(f, EncodeRanges(prepared_ ? prepared_->moved
                                                           : std::vector<std::pair<uint64_t, uint64_t>>()))
                      : c->ReplyError(f, s);
      }
      case kPages: {
        // Written into the process as they arrive (verified first).
        // The reply goes out once the batch is in the process: the home
        // sends kStart only after every batch is answered.
        Status s = restore_error_;
        if (s.ok() && !restorer_) s = Status::InvalidArgument("pages before the image header");
        if (!s.ok()) {
          FaultPoint("guest-pages");
          restore_error_ = s;
          return c->ReplyError(f, s);
        }
        auto job = std::make_shared<wire::Frame>(std::move(f));
        writer_.Post([this, c, job, restorer = restorer_.get()] {
          Status ws =
              ForEachPageRun(job->payload, [restorer](uint64_t addr, std::string_view data) {
                return restorer->WritePages(addr, data);
              });
          job->payload.clear();
          job->payload.shrink_to_fit();
          asio::post(io_, [this, c, job, ws] {
            FaultPoint("guest-pages");
            if (!ws.ok() && restore_error_.ok()) restore_error_ = ws;
            return ws.ok() ? c->Reply(*job, "") : c->ReplyError(*job, ws);
          });
        });
        return;
      }
      case kStart: {
        writer_.Drain();
        auto t0 = std::chrono::steady_clock::now();
        auto r = StartRemote();
        if (!r.ok()) {
          spdlog::error("guest: restore failed: {}", r.status().ToString());
          restorer_.reset();
          KillRemote();
          remote_.reset();
          c->ReplyError(f, r.status());
          quitting_ = true;
          return Quit(1);
        }
        restorer_.reset();
        incoming_ = ProcessImage();
        asio::post(io_, [] { malloc_trim(0); });  // after the reply below
        // u32 remote pid, u32 restore time in µs (the home's phase timings),
        // u32 prepared pieces and u32 prepared pages the restore moved in.
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
        const uint64_t moved_pieces = prepared_ ? prepared_->pieces_moved : 0;
        const uint64_t moved_pages = prepared_ ? prepared_->pages_moved : 0;
        prepared_.reset();
        c->Reply(f, EncodeU32(static_cast<uint32_t>(*r)) + EncodeU32(static_cast<uint32_t>(us.count())) +
                        EncodeU32(static_cast<uint32_t>(moved_pieces)) +
                        EncodeU32(static_cast<uint32_t>(std::min<uint64_t>(moved_pages, UINT32_MAX))));
        // Once the reply has left (the home has then committed the move).
        if (FaultArmed("guest-running")) {
          auto t = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(200));
          t->async_wait([t](auto) { FaultPoint("guest-running"); });
        }
        return;
      }
      case kSignal: {
        auto sig = DecodeSignal(f.payload);
        if (!sig.ok()) {
          spdlog::warn("guest: bad signal frame: {}", sig.status().ToString());
          return;
        }
        // A signal sent to the home pid: process-directed here too.
        if (IsJobStopSignal(sig->sig)) home_pgrp_orphaned_ = sig->orphaned;
        if (remote_ && !remote_->dead()) kill(remote_->tid(), static_cast<int>(sig->sig));
        return;
      }
      case kFetch: {
        auto r = Fetch();
        if (!r.ok()) return c->ReplyError(f, r.status());
        return c->Reply(f, *r);
      }
      case kFetchPages: {
        auto i = DecodeU32(f.payload);
        if (!i.ok() || !outgoing_) return c->ReplyError(f, Status::InvalidArgument("no fetch in progress"));
        return c->Reply(f, EncodePageBatch(*outgoing_, *i));
      }
      case kResume: {
        Status s = ResumeFrozen();
        return s.ok() ? c->Reply(f, "") : c->ReplyError(f, s);
      }
      case kDirect:
        return OfferDirect(c, f);
      case kDirectEnd: {
        auto e = DecodeDirectEnd(f.payload);
        if (!e.ok()) {
          spdlog::warn("guest: {}", e.status().ToString());
          return;
        }
        return EndDirect(*e);
      }
      case kDirectReply: {
        Reader rd(f.payload);
        uint32_t seq = rd.U32();
        int64_t ret = static_cast<int64_t>(rd.U64());
        if (!rd.done() || !direct_) return;
        auto it = direct_->inflight.find(seq);
        if (it == direct_->inflight.end()) return;
        DirectCall call = std::move(it->second);
        direct_->inflight.erase(it);
        return CompleteDirect(call, ret, "");
      }
      case kKill: {
        quitting_ = true;
        KillRemote();
        c->Reply(f, "");
        // Let the reply leave before the connection goes.
        auto t = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(50));
        t->async_wait([this, t](auto) { Quit(0); });
        return;
      }
      default:
        return c->ReplyError(f, Status::Error(ENOSYS, "unknown migration frame " + std::to_string(f.type())));
    }
  }

  // kPrepare (prepare.h): a scratch for the hinted mappings in the target
  // made at accept time, populated one chunk per turn of the io thread (a
  // kImage arriving meanwhile ends it and uses what is there), answered
  // once populated: u32 pages, u32 µs.
  void Prepare(const wire::Connection::Ptr& c, wire::Frame f) {
    const auto t0 = std::chrono::steady_clock::now();
    if (FaultArmed("prepare-refused"))
      return c->ReplyError(f, Status::Error(ENOTSUP, "prepare refused (MFS_MIGRATE_FAULT)"));
    FaultPoint("guest-prepare");
    if (!target_ || restorer_ || prepared_)
      return c->ReplyError(f, Status::Error(EINVAL, "prepare: no fresh restore target"));
    auto hint = DecodePrepareHint(f.payload);
    if (!hint.ok()) return c->ReplyError(f, hint.status());
    Status s = MapPrepared(*hint);
    if (!s.ok()) {
      prepared_.reset();
      return c->ReplyError(f, s);
    }
    WarmHeap(hint->pages() * kPageSize);
    PopulateNext(c, std::make_shared<wire::Frame>(std::move(f)), ++prepare_gen_, 0, t0);
  }

  Status MapPrepared(const PrepareHint& hint) {
    MFS_ASSIGN_OR_RETURN(auto maps, ReadMaps(target_->tid()));
    std::vector<std::pair<uint64_t, uint64_t>> used;
    uint64_t vdso = 0;
    for (const auto& e : maps) {
      used.push_back({e.start, e.end});
      if (e.path == "[vdso]") vdso = e.start;
    }
    if (vdso == 0 || k_.vdso_syscall_offset < 0) return Status::Error(ENOTSUP, "prepare: no syscall gadget");
    const uint64_t gadget = vdso + static_cast<uint64_t>(k_.vdso_syscall_offset);
    uint8_t insn[2] = {};
    MFS_RETURN_IF_ERROR(target_->ReadMem(gadget, insn, 2));
    if (insn[0] != kSyscallInsn[0] || insn[1] != kSyscallInsn[1])
      return Status::Error(ENOTSUP, "prepare: no syscall at the probed [vdso] offset");
    MFS_ASSIGN_OR_RETURN(PreparedMemory m, PlanPrepared(hint, std::move(used)));
    if (m.size == 0) return Status::Error(ENODATA, "prepare: nothing to prepare");
    target_->set_gadget(gadget);
    MFS_ASSIGN_OR_RETURN(uint64_t at, target_->CheckedSyscall("mmap prepared", SYS_mmap, m.base, m.size,
                                                              PROT_READ | PROT_WRITE,
                                                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                                                              static_cast<uint64_t>(-1), 0));
    if (at != m.base) {
      target_->Syscall(SYS_munmap, at, m.size).status().IgnoreError();
      return Status::Error(EEXIST, "prepare: scratch not placed where planned");
    }
    prepared_ = std::move(m);
    return Status::OK();
  }

  void PopulateNext(const wire::Connection::Ptr& c, std::shared_ptr<wire::Frame> f, uint64_t gen, size_t i,
                    std::chrono::steady_clock::time_point t0) {
    if (gen != prepare_gen_ || !prepared_) return;  // kImage came: it uses what is there
    PreparedMemory& m = *prepared_;
    if (i < m.populate.size()) {
      const auto& sp = m.populate[i];
      Status s;
      if (!prepare_zero_fill_) {
        auto r = target_->Syscall(SYS_madvise, sp.addr, sp.len, kMadvPopulateWrite);
        if (!r.ok()) s = r.status();
        else if (*r == -EINVAL) prepare_zero_fill_ = true;  // before Linux 5.14: touch instead
        else if (*r < 0) s = Status::PosixError("prepare: madvise(MADV_POPULATE_WRITE)", static_cast<int>(-*r));
      }
      if (s.ok() && prepare_zero_fill_) {
        static const std::string zeros(1 << 20, '\0');
        for (uint64_t at = 0; at < sp.len && s.ok(); at += zeros.size())
          s = target_->WriteMem(sp.addr + at, zeros.data(), std::min<uint64_t>(zeros.size(), sp.len - at));
      }
      if (s.ok()) {
        m.pieces[sp.piece].pages += sp.len / kPageSize;
        asio::post(io_, [this, c, f, gen, i, t0] { PopulateNext(c, f, gen, i + 1, t0); });
        return;
      }
      spdlog::info("guest: preparing memory stopped: {}", s.ToString());
    }
    uint64_t pages = 0;
    for (const auto& p : m.pieces) pages += p.pages;
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    c->Reply(*f, EncodeU32(static_cast<uint32_t>(std::min<uint64_t>(pages, UINT32_MAX))) +
                     EncodeU32(static_cast<uint32_t>(us.count())));
  }

  // kImage: the header, and the restore's first steps (Restorer::Begin) in
  // the target made at accept time.
  Status BeginRestore(std::string_view header) {
    restorer_.reset();
    restore_error_ = Status::OK();
    incoming_ = ProcessImage();
    ++prepare_gen_;  // populating ends here
    MFS_RETURN_IF_ERROR(DecodeHeader(header, &incoming_));
    if (incoming_.threads.empty()) return Status::InvalidArgument("no image received");
    if (!incoming_.files.empty()) {
      // DFSA: the process's files on /mfs, re-opened here and installed at
      // their numbers in a target made for them (the one made at accept
      // time has none; its prepared memory goes with it).
      prepared_.reset();
      target_.reset();
      std::vector<UniqueFd> opened;
      MFS_ASSIGN_OR_RETURN(auto install, OpenFiles(incoming_.files, &opened));
      MFS_ASSIGN_OR_RETURN(target_, SpawnRestoreTarget(install, kTargetOptions));
    } else if (!target_) {
      prepared_.reset();
      MFS_ASSIGN_OR_RETURN(target_, SpawnRestoreTarget({}, kTargetOptions));
    }
    remote_ = std::move(target_);
    RestoreOptions opts;
    opts.prepared = prepared_ ? &*prepared_ : nullptr;
    opts.keep_stub = true;
    opts.map_path = [this](const std::string& p) { return MapPath(p); };
    opts.before_registers = [this](Tracee& t, const Scratch& stub) -> Status {
      // dup2 in the target cleared close-on-exec.
      for (const auto& f : incoming_.files)
        if (f.cloexec)
          MFS_RETURN_IF_ERROR(
              t.CheckedSyscall("fcntl(F_SETFD)", SYS_fcntl, f.fd, F_SETFD, FD_CLOEXEC).status());
      return InstallFilter(t, stub);
    };
    restorer_ = std::make_unique<Restorer>(*remote_, incoming_, k_, std::move(opts));
    return restorer_->Begin();
  }

  Result<pid_t> StartRemote() {
    MFS_RETURN_IF_ERROR(restore_error_);
    if (!restorer_ || !remote_) return Status::InvalidArgument("no image received");
    MFS_ASSIGN_OR_RETURN(RestoreResult rr, restorer_->Finish());
    for (const auto& w : rr.warnings) spdlog::warn("guest: restore: {}", w);
    FaultPoint("guest-restore");
    stub_ = rr.stub;
    dfsa_.clear();
    for (const auto& f : incoming_.files) dfsa_.insert(f.fd);
    remote_->set_gadget(stub_.gadget());
    threads_ = std::move(rr.threads);
    vtid_of_.clear();
    vtid_of_[remote_->tid()] = home_pid_;
    for (size_t i = 0; i < threads_.size(); ++i) {
      threads_[i]->set_gadget(stub_.gadget());
      vtid_of_[threads_[i]->tid()] = incoming_.threads[i + 1].tid;
    }
    // Its I/O on /mfs here is its home identity's (mfsstat): tell the
    // locality service before it runs. Without an answer it is still
    // found through proc.where.
    if (!cfg_.mfsd_socket.empty()) {
      auto r = control::Call(cfg_.mfsd_socket,
                             json{{"op", "locality.identity"},
                                  {"pid", remote_->tid()},
                                  {"home", home_node_},
                                  {"home_pid", home_pid_}},
                             1000);
      if (!r.ok())
        spdlog::info("guest: locality identity of {}: {}", remote_->tid(), r.status().ToString());
    }
    MFS_RETURN_IF_ERROR(remote_->Cont());
    for (auto& t : threads_) MFS_RETURN_IF_ERROR(t->Cont());
    ArmNotify();
    control_ = std::make_unique<control::ControlServer>(io_);
    control_->RegisterSync("info", [this](const json&, const control::Caller&) -> Result<json> {
      pid_t pid = remote_ ? remote_->tid() : 0;
      std::string command;  // the restored process keeps its argv
      if (auto cmd = ReadFileToString("/proc/" + std::to_string(pid) + "/cmdline"); cmd.ok()) {
        for (char& c : *cmd)
          if (c == '\0') c = ' ';
        while (!cmd->empty() && cmd->back() == ' ') cmd->pop_back();
        command = *cmd;
      }
      return json{{"home", home_node_},
                  {"home_pid", home_pid_},
                  {"where", cfg_.node_id},
                  {"pid", pid},
                  {"role", "guest"},
                  {"command", command},
                  {"dfsa_fds", std::vector<int>(dfsa_.begin(), dfsa_.end())},
                  {"dfsa_calls", dfsa_calls_},
                  {"dfsa_opens", dfsa_opens_}};
    });
    control_->Start(GuestSocketPath(cfg_.run_dir, remote_->tid())).IgnoreError();
    return remote_->tid();
  }

  // Opens the DFSA files of an image here (path, flags without the creating
  // ones, offset); returns (fd here, fd number in the remote) pairs, one fd
  // per shared open file description. A file that cannot be opened fails
  // the restore: the process stays where it was, never with a wrong fd.
  Result<std::vector<std::pair<int, int>>> OpenFiles(const std::vector<FileImage>& files,
                                                     std::vector<UniqueFd>* opened) {
    std::vector<std::pair<int, int>> install;
    std::map<int, int> by_group;  // group -> fd here
    for (const auto& f : files) {
      auto g = by_group.find(f.group);
      if (g != by_group.end()) {
        install.emplace_back(g->second, f.fd);
        continue;
      }
      if (!IsMfsNodePath(f.path))
        return Status::Error(EBUSY, "fd " + std::to_string(f.fd) + ": " + f.path +
                                        " cannot be re-opened on node " +
                                        std::to_string(cfg_.node_id));
      const int flags = static_cast<int>(f.flags & ~static_cast<uint32_t>(O_CREAT | O_EXCL |
                                                                          O_TRUNC | O_NOCTTY)) |
                        O_CLOEXEC | O_NOFOLLOW;
      UniqueFd fd(open(f.path.c_str(), flags));
      if (!fd)
        return Status::FromErrno("DFSA: re-opening fd " + std::to_string(f.fd) + " " + f.path);
      struct stat st;
      if (fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
        return Status::Error(EBUSY, "DFSA: " + f.path + " is no longer a regular file");
      if (lseek(fd.get(), static_cast<off_t>(f.offset), SEEK_SET) < 0)
        return Status::FromErrno("DFSA: seeking " + f.path);
      by_group[f.group] = fd.get();
      install.emplace_back(fd.get(), f.fd);
      opened->push_back(std::move(fd));
    }
    return install;
  }

  // How a trapped call that names a DFSA fd runs: the rule of DfsaTable
  // (syscall_table.h), with the conditions it names checked here.
  DfsaRule ClassifyDfsa(const seccomp_notif& req) {
    const DfsaSpec* d = LookupDfsa(req.data.nr);
    if (!d) return DfsaRule::kNone;
    const __u64* a = req.data.args;
    auto is = [this](uint64_t fd) {
      return fd <= INT32_MAX && dfsa_.count(static_cast<int>(fd)) > 0;
    };
    if (req.data.nr == SYS_close_range) {
      for (int fd : dfsa_)
        if (static_cast<uint64_t>(fd) >= a[0] && static_cast<uint64_t>(fd) <= a[1])
          return DfsaRule::kHome;
      return DfsaRule::kNone;
    }
    bool names = false;
    for (int i = 0; i < 6; ++i)
      if ((d->fd_args & (1u << i)) && is(a[i])) names = true;
    if (!names) return DfsaRule::kNone;
    auto empty_path = [this](uint64_t addr) {
      char c = 1;
      return addr != 0 && ReadRemote(addr, &c, 1).ok() && c == 0;
    };
    switch (req.data.nr) {
      case SYS_fcntl: {
        const int cmd = static_cast<int>(a[1]);
        return cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC ? DfsaRule::kHome : DfsaRule::kNative;
      }
      case SYS_newfstatat:  // otherwise a path relative to a file: forwarded (ENOTDIR)
        return (a[3] & AT_EMPTY_PATH) && empty_path(a[1]) ? DfsaRule::kNative : DfsaRule::kNone;
      case SYS_statx:
        return (a[2] & AT_EMPTY_PATH) && empty_path(a[1]) ? DfsaRule::kNative : DfsaRule::kNone;
      case SYS_mmap:  // a writable shared mapping could not move again: it runs at home
        return (a[3] & MAP_SHARED) && (a[2] & PROT_WRITE) ? DfsaRule::kHome : DfsaRule::kNative;
      default:
        return d->rule;
    }
  }

  // An open forwarded home returned `fd` on a /mfs file: open it here too
  // and install it at the same number as the call's result
  // (SECCOMP_IOCTL_NOTIF_ADDFD with SETFD|SEND, Linux 5.14). false: not
  // installed (the home's fd then serves, through the deputy).
  bool InstallOpened(uint64_t id, int64_t fd, const std::string& path, uint32_t flags) {
    if (fd < 0 || fd >= 1000 || !IsMfsNodePath(path)) return false;
    const int oflags = static_cast<int>(flags & ~static_cast<uint32_t>(O_CREAT | O_EXCL | O_TRUNC |
                                                                       O_NOCTTY | O_CLOEXEC)) |
                       O_CLOEXEC | O_NOFOLLOW;
    UniqueFd local(open(path.c_str(), oflags));
    struct stat st;
    if (!local || fstat(local.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
      spdlog::info("guest: DFSA open of {} here failed ({}); its I/O goes through the deputy", path,
                   strerror(errno));
      return false;
    }
    seccomp_notif_addfd add{};
    add.id = id;
    add.flags = SECCOMP_ADDFD_FLAG_SETFD | SECCOMP_ADDFD_FLAG_SEND;
    add.srcfd = static_cast<uint32_t>(local.get());
    add.newfd = static_cast<uint32_t>(fd);
    add.newfd_flags = (flags & O_CLOEXEC) ? O_CLOEXEC : 0;
    int r = ioctl(notify_fd_.get(), SECCOMP_IOCTL_NOTIF_ADDFD, &add);
    if (r < 0) {
      if (errno == ENOENT) {
        // The caller is gone (killed): the program never saw this fd, so
        // the home does not keep it either.
        pending_ids_.erase(id);
        SyscallRequest close_home;
        close_home.nr = SYS_close;
        close_home.args[0] = static_cast<uint64_t>(fd);
        ++unanswered_closes_;
        conn_->Call(
            kSyscall, EncodeSyscallRequest(close_home),
            [this](Result<wire::Frame>) { --unanswered_closes_; }, std::chrono::seconds(60));
        return true;
      }
      spdlog::info("guest: installing DFSA fd {} ({}) failed: {}", fd, path, strerror(errno));
      return false;
    }
    pending_ids_.erase(id);
    dfsa_.insert(static_cast<int>(fd));
    ++dfsa_opens_;
    return true;
  }

  void RespondContinue(uint64_t id) {
    pending_ids_.erase(id);
    seccomp_notif_resp resp{};
    resp.id = id;
    resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    ioctl(notify_fd_.get(), SECCOMP_IOCTL_NOTIF_SEND, &resp);  // ENOENT: the call was interrupted
  }

  // A file of the home node: the same path where /mfs does not exist (one
  // machine: every node sees the host's files), else /mfs/<home>/path.
  std::string MapPath(const std::string& p) {
    if (access("/mfs", F_OK) != 0) return p;
    std::string via = "/mfs/" + std::to_string(home_node_) + p;
    if (access(via.c_str(), R_OK) == 0) return via;
    return p;
  }

  Status InstallFilter(Tracee& t, const Scratch& stub) {
    MFS_ASSIGN_OR_RETURN(std::string bpf, BuildRemoteFilter(stub.gadget()));
    const uint64_t prog_addr = stub.buffer() + 8192;
    const uint64_t insns_addr = stub.buffer() + 8192 + 64;
    MFS_RETURN_IF_ERROR(t.WriteMem(insns_addr, bpf.data(), bpf.size()));
    struct {
      uint16_t len;
      uint8_t pad[6];
      uint64_t filter;
    } prog{static_cast<uint16_t>(bpf.size() / 8), {}, insns_addr};
    MFS_RETURN_IF_ERROR(t.WriteMem(prog_addr, &prog, sizeof prog));
    // WAIT_KILLABLE_RECV (5.19): once we have received a call, only a fatal
    // signal interrupts the remote's wait. Otherwise a signal arriving while
    // the deputy runs the call would make the kernel restart it: executed
    // twice at home.
    constexpr uint64_t kWaitKillableRecv = 1ull << 5;
    MFS_ASSIGN_OR_RETURN(uint64_t fd, t.CheckedSyscall("seccomp", SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                                                       SECCOMP_FILTER_FLAG_NEW_LISTENER | kWaitKillableRecv,
                                                       prog_addr));
    UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, t.tid(), 0)));
    if (!pidfd) return Status::FromErrno("pidfd_open");
    notify_fd_.Reset(static_cast<int>(syscall(SYS_pidfd_getfd, pidfd.get(), static_cast<int>(fd), 0)));
    if (!notify_fd_) return Status::FromErrno("pidfd_getfd");
    MFS_RETURN_IF_ERROR(t.CheckedSyscall("close", SYS_close, fd).status());
    return Status::OK();
  }

  void ArmNotify() {
    notify_sd_ = std::make_unique<asio::posix::stream_descriptor>(io_, dup(notify_fd_.get()));
    WaitNotify();
  }
  void WaitNotify() {
    notify_sd_->async_wait(asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
      if (ec) return;
      OnNotify();
      if (notify_sd_) WaitNotify();
    });
  }

  void Respond(uint64_t id, int64_t ret) {
    pending_ids_.erase(id);
    seccomp_notif_resp resp{};
    resp.id = id;
    // Restart codes (-512..-516) pass through: with the signal that caused
    // them already queued, the kernel restarts or fails the call as it would
    // have at home.
    if (ret < 0 && ret > -4096) resp.error = static_cast<int32_t>(ret);
    else resp.val = ret;
    ioctl(notify_fd_.get(), SECCOMP_IOCTL_NOTIF_SEND, &resp);  // ENOENT: the call was interrupted
  }

  Status ReadRemote(uint64_t addr, void* buf, size_t len) {
    iovec l{buf, len}, r{reinterpret_cast<void*>(addr), len};
    if (process_vm_readv(remote_->tid(), &l, 1, &r, 1, 0) == static_cast<ssize_t>(len)) return Status::OK();
    return Status::Error(EFAULT, "bad address");
  }
  Status WriteRemote(uint64_t addr, const void* buf, size_t len) {
    if (len == 0) return Status::OK();
    iovec l{const_cast<void*>(buf), len}, r{reinterpret_cast<void*>(addr), len};
    if (process_vm_writev(remote_->tid(), &l, 1, &r, 1, 0) == static_cast<ssize_t>(len)) return Status::OK();
    return Status::Error(EFAULT, "bad address");
  }
  Result<std::string> ReadPath(uint64_t addr) {
    std::string out;
    char chunk[256];
    while (out.size() < 4096) {
      // Never cross a page in one read: the next page may be unmapped.
      size_t n = std::min<size_t>(sizeof chunk, kPageSize - (addr % kPageSize));
      MFS_RETURN_IF_ERROR(ReadRemote(addr, chunk, n));
      for (size_t i = 0; i < n; ++i) {
        if (chunk[i] == 0) return out;
        out.push_back(chunk[i]);
      }
      addr += n;
    }
    return Status::Error(ENAMETOOLONG, "path too long");
  }

  void OnNotify() {
    seccomp_notif req{};
    if (ioctl(notify_fd_.get(), SECCOMP_IOCTL_NOTIF_RECV, &req) != 0) return;
    pending_ids_[req.id] = static_cast<pid_t>(req.pid);
    const int nr = req.data.nr;
    const SyscallSpec& spec = LookupSyscall(nr);
    uint64_t a[6];
    for (int i = 0; i < 6; ++i) a[i] = req.data.args[i];

    if (spec.cls == SyscallClass::kSelf) {
      if (nr == SYS_gettid) {
        // The tid the program knows: the home pid for the main thread, the
        // first tid of each other thread (see man/mfs-migration.7).
        auto it = vtid_of_.find(static_cast<pid_t>(req.pid));
        return Respond(req.id, it == vtid_of_.end() ? home_pid_ : it->second);
      }
      // kill(home pid), tgkill(home pid, tid, …), tkill(tid, …) with a tid
      // of this process (as the program knows it).
      pid_t target = 0;  // 0: not this process; -1: the process as a whole
      if (nr == SYS_kill && static_cast<int>(a[0]) == home_pid_) target = -1;
      if (nr == SYS_tgkill && static_cast<int>(a[0]) == home_pid_) target = RealTid(static_cast<pid_t>(a[1]));
      if (nr == SYS_tkill) target = RealTid(static_cast<pid_t>(a[0]));
      if (nr == SYS_tgkill && static_cast<int>(a[0]) == home_pid_ && target == 0) return Respond(req.id, -ESRCH);
      if (target != 0) {
        // The remote waits killably (WAIT_KILLABLE_RECV): queue the signal,
        // then answer; it is taken on the way out of kill(), as at home.
        int sig = static_cast<int>(nr == SYS_tgkill ? a[2] : a[1]);
        if (sig < 0 || sig > 64) return Respond(req.id, -EINVAL);
        if (sig != 0) {
          if (target == -1) kill(remote_->tid(), sig);
          else syscall(SYS_tgkill, remote_->tid(), target, sig);
        }
        return Respond(req.id, 0);
      }
    }
    if (NamesDeputyFd(req)) return Respond(req.id, -EBADF);
    bool dfsa_home = false;
    if (!dfsa_.empty()) {
      switch (ClassifyDfsa(req)) {
        case DfsaRule::kNative:
          ++dfsa_calls_;
          return RespondContinue(req.id);
        case DfsaRule::kClose: {
          // Closed here now, and at home (fire and forget, in order with
          // every later call): the number is free on both sides before any
          // call made after this close can reach the home.
          ++dfsa_calls_;
          dfsa_.erase(static_cast<int>(a[0]));
          SyscallRequest close_home;
          close_home.nr = SYS_close;
          close_home.args[0] = a[0];
          ++unanswered_closes_;
          conn_->Call(
              kSyscall, EncodeSyscallRequest(close_home),
              [this](Result<wire::Frame>) { --unanswered_closes_; }, std::chrono::seconds(60));
          return RespondContinue(req.id);
        }
        case DfsaRule::kHome:
          dfsa_home = true;
          break;
        case DfsaRule::kNone:
          break;
      }
    }
    SyscallRequest call;
    call.nr = nr;
    for (int i = 0; i < 6; ++i) call.args[i] = a[i];
    // Scatter plan for readv: (address, length) pieces of the one buffer.
    std::vector<std::pair<uint64_t, uint64_t>> scatter;
    bool home = spec.cls == SyscallClass::kHome || spec.cls == SyscallClass::kNative || dfsa_home;
    int64_t early = 1;  // != 1: answer at once with this
    if (!home) {
      if (nr == SYS_readv || nr == SYS_writev || nr == SYS_preadv || nr == SYS_pwritev) {
        early = Vectored(req, call, &scatter);
      } else if (nr == SYS_ioctl) {
        home = !IoctlSpec(call);
      } else if (nr == SYS_fcntl) {
        int cmd = static_cast<int>(a[1]);
        if ((cmd >= 5 && cmd <= 7) || (cmd >= 36 && cmd <= 38))
          call.buffers.push_back({2, kDirIn | kDirOut, 0, 32, {}});
      } else {
        early = Marshal(spec, call);
      }
    }
    if (home) {
      // The call waits, frozen in the kernel, for the move home; it is then
      // re-executed natively there.
      spdlog::info("guest: {} ({}) must run at home (args {:#x} {:#x} {:#x} {:#x} {:#x})",
                   spec.name[0] ? spec.name : "syscall", nr, a[0], a[1], a[2], a[3], a[4]);
      if (!want_home_sent_) {
        want_home_sent_ = true;
        conn_->Send(kWantHome, std::string(spec.name[0] ? spec.name : "unknown syscall") + " " + std::to_string(nr));
      }
      return;
    }
    if (early != 1) return Respond(req.id, early);
    for (auto& b : call.buffers) {
      if (b.dir & kDirIn) {
        if (b.data.size() == b.size) continue;  // already filled (vectored)
        b.data.resize(b.size);
        if (!ReadRemote(call.args[b.arg], b.data.data(), b.size).ok()) return Respond(req.id, -EFAULT);
      }
    }
    std::vector<uint64_t> dest(6);
    for (int i = 0; i < 6; ++i) dest[i] = a[i];
    uint64_t id = req.id;
    if (!SendDirect(id, nr, call, dest, scatter)) SendHome(id, call, std::move(dest), std::move(scatter));
    WatchContention();
  }

  // One deputy executes the forwarded calls of every remote thread, one at a
  // time. When the calls of two or more threads have all been waiting for
  // kContentionWait, the one running may be waiting on one queued behind it
  // (a thread reading a pipe that another thread of the process writes):
  // the process is brought home, where each thread makes its own calls
  // (those the move cuts are issued again there). man/mfs-migration.7.
  static constexpr auto kContentionWait = std::chrono::milliseconds(500);

  void WatchContention() {
    if (want_home_sent_ || contention_armed_ || pending_ids_.size() < 2 || !conn_) return;
    contention_armed_ = true;
    std::vector<uint64_t> waiting;
    for (const auto& [id, tid] : pending_ids_) waiting.push_back(id);
    contention_timer_.expires_after(kContentionWait);
    contention_timer_.async_wait([this, waiting = std::move(waiting)](boost::system::error_code ec) {
      contention_armed_ = false;
      if (ec) return;
      std::set<pid_t> threads;
      for (uint64_t id : waiting)
        if (auto it = pending_ids_.find(id); it != pending_ids_.end()) threads.insert(it->second);
      if (threads.size() >= 2 && !want_home_sent_ && conn_) {
        want_home_sent_ = true;
        spdlog::info("guest: forwarded calls of {} threads have waited {} ms on the one deputy: asking for home",
                     threads.size(), kContentionWait.count());
        conn_->Send(kWantHome, "forwarded calls of " + std::to_string(threads.size()) +
                                   " threads waited on one deputy");
        return;
      }
      WatchContention();  // others may be waiting together now
    });
  }

  // Forwards `call` to the home supervisor (kSyscall) and answers
  // notification `id` with its reply.
  void SendHome(uint64_t id, const SyscallRequest& call, std::vector<uint64_t> dest,
                std::vector<std::pair<uint64_t, uint64_t>> scatter) {
    conn_->Call(kSyscall, EncodeSyscallRequest(call),
                [this, id, dest, scatter = std::move(scatter)](Result<wire::Frame> r) {
                  if (!r.ok()) return Respond(id, -r.status().code());
                  auto rep = DecodeSyscallReply(r->payload);
                  if (!rep.ok()) return Respond(id, -EIO);
                  if (!scatter.empty()) {
                    size_t off = 0;
                    for (const auto& b : rep->buffers)
                      for (const auto& [addr, len] : scatter) {
                        if (off >= b.data.size()) break;
                        size_t n = std::min<size_t>(len, b.data.size() - off);
                        WriteRemote(addr, b.data.data() + off, n).IgnoreError();
                        off += n;
                      }
                  } else {
                    for (const auto& b : rep->buffers)
                      if (!WriteRemote(dest[b.arg], b.data.data(), b.data.size()).ok()) return Respond(id, -EFAULT);
                  }
                  if (!rep->dfsa_path.empty() &&
                      InstallOpened(id, rep->ret, rep->dfsa_path, rep->dfsa_flags))
                    return;
                  Respond(id, rep->ret);
                },
                std::chrono::hours(24 * 365));  // a forwarded read may wait for input forever
  }

  // ---- The direct path (deputy.h): simple forwarded calls go to the
  // deputy's own socket, not through the home supervisor.

  // A direct call in flight: the notification to answer, and where its
  // out-buffers go in the remote.
  struct DirectCall {
    uint64_t id = 0;
    std::vector<std::pair<uint8_t, uint32_t>> outs;  // (argument, size), reply order
    int ret_bounded = -1;                            // index in outs cut to ret
    std::vector<uint64_t> dest;
    std::vector<std::pair<uint64_t, uint64_t>> scatter;
    SyscallRequest req;  // to send home instead if the deputy does not run it
  };
  struct Direct {
    Direct(tcp::socket s, uint64_t g) : sock(std::move(s)), gen(g) {}
    tcp::socket sock;
    uint64_t gen;  // tells the async waits of an ended one from the current one's
    DirectHello hello{};
    size_t hello_got = 0;
    bool ready = false;   // hello checked
    bool ending = false;  // EOF or an error: no new calls; kDirectEnd settles the rest
    bool reading = false, writing = false;
    uint32_t next_seq = 1;
    std::map<uint32_t, DirectCall> inflight;
    std::string rx, tx;
  };

  // kDirect: listen (once) for the deputy's socket; answer u16 port,
  // 16-byte token, u32 IPv4 address (host order).
  void OfferDirect(const wire::Connection::Ptr& c, const wire::Frame& f) {
    if (direct_ || direct_acceptor_)
      return c->ReplyError(f, Status::Error(EALREADY, "direct path exists"));
    boost::system::error_code ec;
    auto addr = asio::ip::make_address_v4(cfg_.address, ec);
    if (ec)
      return c->ReplyError(f, Status::InvalidArgument("direct path: not IPv4: " + cfg_.address));
    auto acc = std::make_shared<tcp::acceptor>(io_);
    tcp::endpoint ep(addr, 0);
    acc->open(ep.protocol(), ec);
    if (!ec) acc->bind(ep, ec);
    if (!ec) acc->listen(1, ec);
    if (ec) return c->ReplyError(f, Status::Error(ec.value(), "direct listen: " + ec.message()));
    if (getrandom(direct_token_, sizeof direct_token_, 0) != sizeof direct_token_)
      return c->ReplyError(f, Status::FromErrno("getrandom"));
    direct_acceptor_ = acc;
    std::string out;
    Writer w(&out);
    w.U16(acc->local_endpoint().port());
    w.Raw(std::string_view(reinterpret_cast<const char*>(direct_token_), sizeof direct_token_));
    w.U32(addr.to_uint());
    auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::seconds(5));
    timer->async_wait([this, acc](boost::system::error_code ec) {
      if (ec || direct_acceptor_ != acc) return;
      spdlog::info("guest: no direct socket from the deputy within 5 s");
      acc->close();
      direct_acceptor_.reset();
      if (direct_ && !direct_->ready) direct_.reset();
    });
    acc->async_accept([this, acc, timer](boost::system::error_code ec, tcp::socket sock) {
      if (direct_acceptor_ != acc) return;
      acc->close();
      if (ec) {
        direct_acceptor_.reset();
        return;
      }
      sock.set_option(tcp::no_delay(true), ec);
      sock.non_blocking(true, ec);
      direct_ = std::make_unique<Direct>(std::move(sock), ++direct_gen_);
      WaitDirectRead();
    });
    c->Reply(f, out);
  }

  void WaitDirectRead() {
    if (!direct_ || direct_->reading || direct_->ending) return;
    direct_->reading = true;
    Direct* d = direct_.get();
    d->sock.async_wait(tcp::socket::wait_read, [this, d, g = d->gen](boost::system::error_code ec) {
      if (!direct_ || direct_->gen != g) return;
      d->reading = false;
      if (ec) return LoseDirect("wait");
      ReadDirect(0);
      WaitDirectRead();
    });
  }

  // Reads what the socket has (waiting up to `wait_ms` for more, until EOF,
  // when > 0) and completes the calls whose replies are whole.
  void ReadDirect(int wait_ms) {
    Direct* d = direct_.get();
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    char buf[65536];
    for (;;) {
      if (!d->ready) {
        ssize_t n = recv(d->sock.native_handle(), reinterpret_cast<char*>(&d->hello) + d->hello_got,
                         sizeof d->hello - d->hello_got, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return LoseDirect("hello");
        if (n < 0) return;
        d->hello_got += static_cast<size_t>(n);
        if (d->hello_got < sizeof d->hello) continue;
        uint8_t diff = 0;
        for (size_t i = 0; i < sizeof direct_token_; ++i)
          diff |= d->hello.token[i] ^ direct_token_[i];
        direct_acceptor_.reset();
        if (diff != 0 || d->hello.area_size < (1u << 20)) {
          spdlog::warn("guest: a direct socket with a bad token: closed");
          direct_.reset();
          return;
        }
        d->ready = true;
        deputy_fds_ = {d->hello.sock_fd, d->hello.event_fd};
        spdlog::info("guest: direct path to the deputy of {} (its fds {} and {})", home_pid_,
                     d->hello.sock_fd, d->hello.event_fd);
        continue;
      }
      ssize_t n = recv(d->sock.native_handle(), buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        d->rx.append(buf, static_cast<size_t>(n));
        ParseDirect();
        if (direct_.get() != d) return;
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        d->ending = true;  // kDirectEnd settles what is in flight
        return;
      }
      if (errno == EINTR) continue;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          until - std::chrono::steady_clock::now());
      if (wait_ms <= 0 || left.count() <= 0) return;
      pollfd p{d->sock.native_handle(), POLLIN, 0};
      poll(&p, 1, static_cast<int>(left.count()));
    }
  }

  void ParseDirect() {
    Direct* d = direct_.get();
    size_t at = 0;
    while (d->rx.size() - at >= sizeof(DirectReplyHeader)) {
      DirectReplyHeader h;
      std::memcpy(&h, d->rx.data() + at, sizeof h);
      auto it = d->inflight.find(h.seq);
      if (it == d->inflight.end()) {
        spdlog::warn("guest: direct reply for unknown call {}: ending the direct path", h.seq);
        d->rx.clear();
        return LoseDirect("protocol");
      }
      size_t need = 0;
      if (h.ret >= 0)
        for (size_t i = 0; i < it->second.outs.size(); ++i)
          need += static_cast<int>(i) == it->second.ret_bounded
                      ? std::min<uint64_t>(static_cast<uint64_t>(h.ret), it->second.outs[i].second)
                      : it->second.outs[i].second;
      if (d->rx.size() - at - sizeof h < need) break;
      DirectCall call = std::move(it->second);
      d->inflight.erase(it);
      CompleteDirect(call, h.ret, std::string_view(d->rx).substr(at + sizeof h, need));
      at += sizeof h + need;
    }
    d->rx.erase(0, at);
  }

  // The direct socket failed here: no new calls on it; the home's
  // kDirectEnd (its deputy's loop notices too) settles the ones in flight.
  void LoseDirect(const char* why) {
    if (!direct_ || direct_->ending) return;
    spdlog::info("guest: direct path of {} ends ({})", home_pid_, why);
    direct_->ending = true;
    // Our end only: the deputy's loop sees EOF and stops; what it sent stays
    // readable for kDirectEnd.
    boost::system::error_code ec;
    direct_->sock.shutdown(tcp::socket::shutdown_send, ec);
  }

  // kDirectEnd: everything the deputy sent comes first, then the call it
  // names; every other one in flight did not run and goes home instead, in
  // order (during a move the home holds it, and kFetch has the remote
  // re-issue it where it goes). An answer -ERESTARTNOINTR would not do: with
  // no signal pending the remote's kernel does not restart the call.
  void EndDirect(const DirectEnd& e) {
    direct_acceptor_.reset();
    if (!direct_) return;
    if (direct_->ready) ReadDirect(2000);
    if (!direct_) return;
    auto inflight = std::move(direct_->inflight);
    if (direct_->ready) deputy_fds_.erase(direct_->hello.sock_fd);  // that number is free again
    direct_.reset();
    if (e.ran) {
      auto it = inflight.find(e.seq);
      if (it != inflight.end()) {
        CompleteDirect(it->second, e.ret, e.out);
        inflight.erase(it);
      }
    }
    for (auto& [seq, call] : inflight)
      if (conn_ && pending_ids_.count(call.id))
        SendHome(call.id, call.req, std::move(call.dest), std::move(call.scatter));
  }

  // Writes a direct call's out-buffers into the remote and answers it.
  void CompleteDirect(const DirectCall& call, int64_t ret, std::string_view out) {
    size_t off = 0;
    if (!call.scatter.empty()) {
      for (const auto& [addr, len] : call.scatter) {
        if (off >= out.size()) break;
        size_t n = std::min<size_t>(len, out.size() - off);
        WriteRemote(addr, out.data() + off, n).IgnoreError();
        off += n;
      }
      return Respond(call.id, ret);
    }
    if (ret >= 0)
      for (size_t i = 0; i < call.outs.size(); ++i) {
        size_t n = static_cast<int>(i) == call.ret_bounded
                       ? std::min<uint64_t>(static_cast<uint64_t>(ret), call.outs[i].second)
                       : call.outs[i].second;
        n = std::min(n, out.size() - off);
        if (!WriteRemote(call.dest[call.outs[i].first], out.data() + off, n).ok())
          return Respond(call.id, -EFAULT);
        off += n;
      }
    Respond(call.id, ret);
  }

  // Whether a trapped call names one of the deputy's own fds (its eventfd,
  // its direct socket): the program has no such fd, as at home.
  bool NamesDeputyFd(const seccomp_notif& req) const {
    if (deputy_fds_.empty()) return false;
    const DfsaSpec* d = LookupDfsa(req.data.nr);
    if (!d) return false;
    for (int i = 0; i < 6; ++i)
      if ((d->fd_args & (1u << i)) && req.data.args[i] <= INT32_MAX &&
          deputy_fds_.count(static_cast<int>(req.data.args[i])))
        return true;
    return false;
  }

  // Sends `call` (marshalled, in-buffers read) on the direct path if it
  // takes it: a forwarded call the home supervisor has nothing to add to
  // (not an open: DFSA; not one that changes the fd table), with no close
  // of a DFSA fd still on its way home (it must run first).
  bool SendDirect(uint64_t id, int nr, SyscallRequest& call, const std::vector<uint64_t>& dest,
                  std::vector<std::pair<uint64_t, uint64_t>>& scatter) {
    if (!direct_ || !direct_->ready || direct_->ending || unanswered_closes_ > 0) return false;
    switch (nr) {
      case SYS_open:
      case SYS_openat:
      case SYS_creat:
      case SYS_close:
      case SYS_close_range:
      case SYS_dup:
      case SYS_dup2:
      case SYS_dup3:
      case SYS_fcntl:
        return false;
      default:
        break;
    }
    const DirectHello& h = direct_->hello;
    // In the direct area: msghdr, iovecs, in-buffers (received), out-only buffers.
    constexpr uint64_t kIovOffset = 64;
    size_t nout = 0;
    for (const auto& b : call.buffers) nout += (b.dir & kDirOut) ? 1 : 0;
    uint64_t in_end = kIovOffset + 16 * (1 + nout);
    auto align = [](uint64_t x) { return (x + 15) & ~15ull; };
    in_end = align(in_end);
    uint64_t end = in_end;
    for (const auto& b : call.buffers)
      if (b.dir & kDirIn) end += align(b.size);
    in_end = end;
    for (const auto& b : call.buffers)
      if (!(b.dir & kDirIn)) end += align(b.size);
    if (end > h.area_size) return false;
    std::string in(in_end, '\0');
    std::vector<uint64_t> iov;  // pairs
    iov.push_back(h.block + kDirectReplyHeaderOffset);
    iov.push_back(sizeof(DirectReplyHeader));
    DirectCall dc;
    dc.id = id;
    dc.dest = dest;
    uint64_t in_at = align(kIovOffset + 16 * (1 + nout)), out_at = in_end;
    for (const auto& b : call.buffers) {
      uint64_t at;
      if (b.dir & kDirIn) {
        at = in_at;
        in_at += align(b.size);
        std::memcpy(in.data() + at, b.data.data(), std::min<size_t>(b.data.size(), b.size));
      } else {
        at = out_at;
        out_at += align(b.size);
      }
      call.args[b.arg] = h.area + at;
      if (b.dir & kDirOut) {
        if (b.ret_bounded) dc.ret_bounded = static_cast<int>(dc.outs.size());
        dc.outs.emplace_back(b.arg, b.size);
        iov.push_back(h.area + at);
        iov.push_back(b.size);
      }
    }
    struct {
      uint64_t name, namelen, iov, iovlen, control, controllen, flags;
    } msg{0, 0, h.area + kIovOffset, iov.size() / 2, 0, 0, 0};
    static_assert(sizeof msg == 56);
    std::memcpy(in.data(), &msg, sizeof msg);
    std::memcpy(in.data() + kIovOffset, iov.data(), iov.size() * 8);
    DirectRequest r{};
    r.seq = direct_->next_seq++;
    if (direct_->next_seq == 0) direct_->next_seq = 1;
    r.in_len = static_cast<uint32_t>(in.size());
    r.nr = static_cast<uint64_t>(call.nr);
    for (int i = 0; i < 6; ++i) r.args[i] = call.args[i];
    r.msg = h.area;
    r.ret_iov = dc.ret_bounded >= 0 ? static_cast<uint32_t>(dc.ret_bounded + 1) : 0;
    dc.scatter = std::move(scatter);
    dc.req = std::move(call);
    direct_->inflight.emplace(r.seq, std::move(dc));
    direct_->tx.append(reinterpret_cast<const char*>(&r), sizeof r);
    direct_->tx.append(in);
    FlushDirect();
    return true;
  }

  void FlushDirect() {
    Direct* d = direct_.get();
    if (!d || d->writing) return;
    while (!d->tx.empty()) {
      ssize_t n =
          send(d->sock.native_handle(), d->tx.data(), d->tx.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        d->tx.erase(0, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        d->writing = true;
        d->sock.async_wait(tcp::socket::wait_write,
                           [this, d, g = d->gen](boost::system::error_code ec) {
                             if (!direct_ || direct_->gen != g) return;
                             d->writing = false;
                             if (ec) return LoseDirect("wait");
                             FlushDirect();
                           });
        return;
      }
      d->tx.clear();
      return LoseDirect("send");
    }
  }

  // Fills call.buffers from the table's spec; returns 1, or an errno to answer now.
  int64_t Marshal(const SyscallSpec& spec, SyscallRequest& call) {
    for (int i = 0; i < 6; ++i) {
      const ArgSpec& as = spec.args[i];
      if (as.kind == ArgKind::kValue || call.args[i] == 0) continue;
      CallBuffer b;
      b.arg = static_cast<uint8_t>(i);
      if (as.kind == ArgKind::kPath) {
        auto p = ReadPath(call.args[i]);
        if (!p.ok()) return -p.status().code();
        b.dir = kDirIn;
        b.data = *p;
        b.data.push_back('\0');
        b.size = static_cast<uint32_t>(b.data.size());
        call.buffers.push_back(std::move(b));
        continue;
      }
      uint64_t size = as.fixed;
      if (as.size_arg >= 0) size = call.args[as.size_arg] * as.multiplier;
      if (as.size_deref >= 0) {
        uint32_t n = 0;
        if (call.args[as.size_deref] == 0 || !ReadRemote(call.args[as.size_deref], &n, 4).ok()) return -EFAULT;
        size = n;
      }
      if (size > kMaxCallBytes) {
        // A short read or write: ask for what fits.
        if (as.size_arg >= 0 && (as.kind == ArgKind::kOutRet || as.kind == ArgKind::kIn) && as.multiplier == 1) {
          size = kMaxCallBytes;
          call.args[as.size_arg] = size;
        } else {
          return -E2BIG;
        }
      }
      b.size = static_cast<uint32_t>(size);
      switch (as.kind) {
        case ArgKind::kIn: b.dir = kDirIn; break;
        case ArgKind::kOut: b.dir = kDirOut; break;
        case ArgKind::kOutRet: b.dir = kDirOut; b.ret_bounded = 1; break;
        case ArgKind::kInOut: b.dir = kDirIn | kDirOut; break;
        default: break;
      }
      call.buffers.push_back(std::move(b));
    }
    return 1;
  }

  // readv/writev/preadv/pwritev become read/write/pread64/pwrite64 of one buffer.
  int64_t Vectored(const seccomp_notif& req, SyscallRequest& call,
                   std::vector<std::pair<uint64_t, uint64_t>>* scatter) {
    const int nr = req.data.nr;
    uint64_t iovcnt = req.data.args[2];
    if (iovcnt > 1024) return -EINVAL;
    std::vector<iovec> iov(iovcnt);
    if (iovcnt && !ReadRemote(req.data.args[1], iov.data(), iovcnt * sizeof(iovec)).ok()) return -EFAULT;
    const bool write = nr == SYS_writev || nr == SYS_pwritev;
    CallBuffer b;
    b.arg = 1;
    uint64_t total = 0;
    for (const auto& v : iov) {
      uint64_t take = std::min<uint64_t>(v.iov_len, kMaxCallBytes - total);
      if (take == 0) continue;
      if (write) {
        size_t at = b.data.size();
        b.data.resize(at + take);
        if (!ReadRemote(reinterpret_cast<uint64_t>(v.iov_base), b.data.data() + at, take).ok()) return -EFAULT;
      } else {
        scatter->push_back({reinterpret_cast<uint64_t>(v.iov_base), take});
      }
      total += take;
    }
    b.size = static_cast<uint32_t>(total);
    b.dir = write ? kDirIn : kDirOut;
    b.ret_bounded = write ? 0 : 1;
    call.nr = nr == SYS_readv ? SYS_read : nr == SYS_writev ? SYS_write : nr == SYS_preadv ? SYS_pread64 : SYS_pwrite64;
    call.args[2] = total;
    call.args[3] = req.data.args[3];  // offset for the p-variants
    call.buffers.push_back(std::move(b));
    return 1;
  }

  bool IoctlSpec(SyscallRequest& call) {
    const uint32_t req = static_cast<uint32_t>(call.args[1]);
    auto buf = [&](uint8_t dir, uint32_t size) {
      if (call.args[2] != 0) call.buffers.push_back({2, dir, 0, size, {}});
      return true;
    };
    switch (req) {
      case kIoctlTcgets: return buf(kDirOut, kKernelTermios);
      case kIoctlTcsets: case kIoctlTcsetsw: case kIoctlTcsetsf: return buf(kDirIn, kKernelTermios);
      case kIoctlTiocgwinsz: return buf(kDirOut, 8);
      case kIoctlTiocswinsz: return buf(kDirIn, 8);
      case kIoctlFionread: case kIoctlTiocgpgrp: return buf(kDirOut, 4);
      case kIoctlTiocspgrp: case kIoctlFionbio: return buf(kDirIn, 4);
      case kIoctlFioclex: case kIoctlFionclex: return true;
      default: return false;
    }
  }

  Result<std::string> Fetch() {
    if (!remote_ || remote_->dead()) return Status::Error(ESRCH, "no remote");
    // A thread waiting (killably) for a call's answer cannot stop: the home
    // did not and will not run that call, so it is answered "restart" and
    // the interrupt stop catches it on the way out, rewound to re-issue it.
    if (ptrace(PTRACE_INTERRUPT, remote_->tid(), nullptr, nullptr) != 0)
      return Status::FromErrno("PTRACE_INTERRUPT");
    for (auto& t : threads_)
      if (!t->stopped()) ptrace(PTRACE_INTERRUPT, t->tid(), nullptr, nullptr);
    std::vector<uint64_t> ids;
    for (const auto& [id, tid] : pending_ids_) ids.push_back(id);
    for (uint64_t id : ids) Respond(id, -513 /* -ERESTARTNOINTR */);
    MFS_RETURN_IF_ERROR(remote_->WaitForStop(false).status());
    frozen_threads_.clear();
    for (auto& t : threads_) {
      if (!t->stopped()) MFS_RETURN_IF_ERROR(t->WaitForStop(false).status());
      MFS_ASSIGN_OR_RETURN(CpuState regs, GetCpuState(t->tid()));
      auto vt = vtid_of_.find(t->tid());
      frozen_threads_.push_back(FrozenThread{t.get(), std::move(regs), vt == vtid_of_.end() ? t->tid() : vt->second});
    }
    MFS_ASSIGN_OR_RETURN(frozen_regs_, GetCpuState(remote_->tid()));
    auto img = Capture(*remote_, stub_, frozen_regs_, frozen_threads_);
    if (!img.ok()) {
      ResumeFrozen().IgnoreError();
      return img.status();
    }
    img->home_pid = home_pid_;
    img->threads[0].tid = home_pid_;
    // The remote's own fds are its DFSA files: their offsets and flags now.
    auto files = CaptureFiles(remote_->tid(), FileScope::kAll);
    if (!files.ok()) {
      outgoing_ = std::move(*img);  // so that the timers and signals come back
      ResumeFrozen().IgnoreError();
      return files.status();
    }
    img->files = std::move(*files);
    outgoing_ = std::move(*img);
    std::string out = EncodeHeader(*outgoing_);
    std::string reply;
    Writer w(&reply);
    w.Bytes(out);
    w.U32(static_cast<uint32_t>(PageBatchCount(*outgoing_)));
    return reply;
  }

  Status ResumeFrozen() {
    std::vector<uint32_t> pending;
    std::vector<std::pair<pid_t, uint32_t>> thread_pending;
    if (outgoing_) {
      // The capture stopped the timers and took the signals out.
      pending = outgoing_->pending_signals;
      for (size_t i = 1; i < outgoing_->threads.size() && i - 1 < threads_.size(); ++i)
        for (uint32_t sig : outgoing_->threads[i].pending_signals) thread_pending.emplace_back(threads_[i - 1]->tid(), sig);
      if (remote_ && !remote_->dead() && remote_->stopped())
        RearmTimers(*remote_, stub_, outgoing_->itimers).IgnoreError();
    }
    outgoing_.reset();
    want_home_sent_ = false;
    if (!remote_ || remote_->dead()) return Status::Error(ESRCH, "no remote");
    for (auto& f : frozen_threads_) {
      if (f.tracee->dead() || !f.tracee->stopped()) continue;
      // A call the freeze cut restarts (the kernel's own restart saw the
      // injected calls' registers): CpuState::NormalizeRestart.
      CpuState resume = f.saved;
      resume.NormalizeRestart();
      SetCpuState(f.tracee->tid(), resume).IgnoreError();
      for (int sig : f.tracee->TakeStashedSignals()) syscall(SYS_tgkill, remote_->tid(), f.tracee->tid(), sig);
      f.tracee->Cont().IgnoreError();
    }
    frozen_threads_.clear();
    for (auto [tid, sig] : thread_pending) syscall(SYS_tgkill, remote_->tid(), tid, static_cast<int>(sig));
    if (!remote_->stopped()) return Status::OK();
    CpuState resume = frozen_regs_;
    resume.NormalizeRestart();
    MFS_RETURN_IF_ERROR(SetCpuState(remote_->tid(), resume));
    for (int sig : remote_->TakeStashedSignals()) syscall(SYS_tgkill, remote_->tid(), remote_->tid(), sig);
    for (uint32_t sig : pending) syscall(SYS_tgkill, remote_->tid(), remote_->tid(), static_cast<int>(sig));
    return remote_->Cont();
  }

  void OnSigchld(boost::system::error_code ec) {
    if (ec) return;
    sigchld_.async_wait([this](auto ec, int) { OnSigchld(ec); });
    Reap();
  }

  void Reap() {
    if (!remote_ || remote_->dead()) return;
    for (;;) {
      int status = 0;
      // Every thread of the remote is traced by this thread (and nothing
      // else is our child).
      pid_t p = waitpid(-1, &status, __WALL | WNOHANG);
      if (p <= 0) return;
      Tracee* t = nullptr;
      if (p == remote_->tid()) t = remote_.get();
      for (auto& th : threads_)
        if (th->tid() == p) t = th.get();
      if (!t) continue;
      t->MarkStopped(status);
      if (t != remote_.get()) {
        if (t->dead()) {
          vtid_of_.erase(p);
          std::erase_if(threads_, [p](const auto& th) { return th->tid() == p; });
          continue;
        }
        OnRemoteStop(*t, status);
        continue;
      }
      if (remote_->dead()) {
        spdlog::info("guest: remote {} ended, status {:#x}", remote_->tid(), status);
        notify_sd_.reset();
        if (conn_ && !quitting_) {
          std::string payload = EncodeU32(static_cast<uint32_t>(status));
          if (exit_files_) EncodeFiles(*exit_files_, &payload);
          conn_->Send(kExited, payload);
        }
        quitting_ = true;
        auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(200));
        timer->async_wait([this, timer](auto) { Quit(0); });
        return;
      }
      OnRemoteStop(*remote_, status);
    }
  }

  void OnRemoteStop(Tracee& t, int status) {
    int sig = WSTOPSIG(status);
    int event = status >> 16;
    if (event == 0 && sig != (SIGTRAP | 0x80)) {
      // A signal for the remote: deliver it. Here the remote's process group
      // is not the home's: a SIGTSTP, SIGTTIN or SIGTTOU that would stop it
      // becomes the SIGSTOP it is (this kernel would discard it, the remote's
      // group being orphaned), or is dropped if the home's group is orphaned.
      if (IsJobStopSignal(sig) && remote_ && DefaultAction(remote_->tid(), sig))
        sig = home_pgrp_orphaned_ ? 0 : SIGSTOP;
      t.Cont(sig).IgnoreError();
    } else if (event == PTRACE_EVENT_EXIT) {
      // The process is ending; its files are still open: their offsets go
      // home with the exit status (a parent sharing the open file sees them).
      if (&t == remote_.get() && !dfsa_.empty()) {
        auto files = CaptureFiles(t.tid(), FileScope::kAll);
        if (files.ok())
          exit_files_ = std::move(*files);
        else
          spdlog::warn("guest: DFSA offsets at exit: {}", files.status().ToString());
      }
      t.Cont().IgnoreError();
    } else if (event == PTRACE_EVENT_STOP && outgoing_) {
      // Frozen for a fetch: stay stopped.
    } else if (event == PTRACE_EVENT_STOP) {
      if (sig == SIGSTOP || IsJobStopSignal(sig)) {
        // A job-control stop: the remote stays stopped (until a SIGCONT
        // for the home pid), and the deputy stops too, so that the parent
        // at home sees it (kStopped).
        ptrace(PTRACE_LISTEN, t.tid(), nullptr, nullptr);
        if (&t == remote_.get() && conn_) conn_->Send(kStopped, EncodeU32(static_cast<uint32_t>(sig)));
      } else
        t.Cont().IgnoreError();
    } else {
      t.Cont().IgnoreError();
    }
  }

  asio::io_context& io_;
  SupervisorConfig cfg_;
  uint32_t home_node_;
  int home_pid_;
  tcp::acceptor acceptor_;
  asio::signal_set sigchld_;
  asio::steady_timer accept_timer_;
  KernelFeatures k_;
  std::string secret_;
  wire::Connection::Ptr conn_;
  ProcessImage incoming_;
  std::unique_ptr<Tracee> target_;       // made at accept, restored into at kImage
  std::optional<PreparedMemory> prepared_;  // kPrepare's scratch in target_ (then remote_)
  uint64_t prepare_gen_ = 0;                // bumped to stop populating
  bool prepare_zero_fill_ = false;          // MADV_POPULATE_WRITE refused: write zeros
  Status restore_error_;                 // the first error of kImage/kPages
  std::optional<ProcessImage> outgoing_;
  CpuState frozen_regs_;
  std::unique_ptr<Tracee> remote_;
  std::unique_ptr<Restorer> restorer_;  // between kImage and kStart; uses *remote_
  // Writes received page batches into the new process (verify the hashes,
  // process_vm_writev) while the io thread receives the next: the writes
  // fault in and zero the new process's pages, which costs as much as the
  // rest of the page path together. Destroyed (joined) before restorer_ and
  // remote_.
  JobThread writer_;
  Scratch stub_;
  UniqueFd notify_fd_;
  std::unique_ptr<asio::posix::stream_descriptor> notify_sd_;
  std::unique_ptr<control::ControlServer> control_;
  bool quitting_ = false;
  bool want_home_sent_ = false;
  bool home_pgrp_orphaned_ = false;  // as the last job-control signal from home said
  asio::steady_timer contention_timer_{io_};
  bool contention_armed_ = false;
  std::map<uint64_t, pid_t> pending_ids_;  // calls threads of the remote wait on -> tid
  std::vector<std::unique_ptr<Tracee>> threads_;  // the remote's other threads
  std::map<pid_t, pid_t> vtid_of_;  // real tid -> the tid the program knows
  std::set<int> dfsa_;              // the remote's DFSA fds (its whole fd table)
  uint64_t dfsa_calls_ = 0;         // calls on them run here (CONTINUE)
  uint64_t dfsa_opens_ = 0;         // files on /mfs opened while here
  std::optional<std::vector<FileImage>> exit_files_;  // at the exit stop
  std::unique_ptr<Direct> direct_;                    // the direct path to the deputy
  std::shared_ptr<tcp::acceptor> direct_acceptor_;    // while one is offered
  uint8_t direct_token_[16] = {};
  uint64_t direct_gen_ = 0;
  std::set<int> deputy_fds_;   // the deputy's own fds (DirectHello): not the program's
  int unanswered_closes_ = 0;  // closes sent home, not answered yet
  std::vector<FrozenThread> frozen_threads_;  // during a fetch
  int exit_code_ = 0;
};

}  // namespace

std::string HomeSocketPath(const std::string& run_dir, int pid) {
  return run_dir + "/sup/" + std::to_string(pid) + ".sock";
}
std::string GuestSocketPath(const std::string& run_dir, int pid) {
  return run_dir + "/sup/guest-" + std::to_string(pid) + ".sock";
}

int RunGuestSupervisor(const SupervisorConfig& cfg, uint32_t home_node, int home_pid, int ready_fd) {
  asio::io_context io;
  Guest g(io, cfg, home_node, home_pid);
  auto port = g.Listen();
  if (!port.ok()) {
    spdlog::error("guest: {}", port.status().ToString());
    return 1;
  }
  if (ready_fd >= 0) {
    uint16_t p = *port;
    if (write(ready_fd, &p, 2) != 2) return 1;
    close(ready_fd);
  }
  io.run();
  return g.exit_code();
}

}  // namespace mfs::migrate
