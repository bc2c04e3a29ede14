// HomeSupervisor: see supervisor.h.
//
// States of the process: kHome (running natively, untraced syscalls),
// kBusy (a move is in progress), kRemote (running elsewhere; the original
// is the deputy). The deputy runs forwarded calls in its call loop
// (DeputyChannel, deputy.h: shared memory, an eventfd and a futex, no ptrace
// stop per call); one whose channel cannot be mapped is driven with ptrace
// steps instead. Once remote, the deputy also gets a direct path (kDirect:
// a socket to the guest supervisor from which its loop reads simple calls
// and answers them, without this supervisor); every stop of the loop ends
// it (StopDirect: kDirectEnd) and the next Park offers a new one. States of
// the deputy while kRemote:
//   kParked    idle: in the loop's futex wait (or, without a channel, in an
//              injected rt_sigsuspend(empty mask)); every signal sent to the
//              home pid stops it (ptrace) and is forwarded.
//   kServing   a forwarded call (submitted by this supervisor) runs in the
//              loop. Direct calls run in kParked and kServing alike.
//   kStopping  PTRACE_INTERRUPT sent, waiting for the stop.
//   kEnter/kExit  without a channel: a forwarded call runs in it
//              (PTRACE_SYSCALL steps).
//   kStopped   stopped, nothing running (a move or the end is being done).
// Every ptrace call happens on the one io thread.
//
// Threads: at home only the main thread is traced. A move away seizes the
// others (SeizeThreads) for the capture; once the remote runs they end
// (RetireThreads) and the deputy is the main thread alone; a failed move lets
// them run on (ReleaseThreads). Coming home, Restore re-creates them and they
// run untraced again; vtid_ remembers the tid each had before (the one the
// program knows) for the next capture.
#include <dirent.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <array>
#include <deque>
#include <map>
#include <optional>
#include <set>

#include "mfs/base/coding.h"
#include "mfs/base/log.h"
#include "mfs/control/client.h"
#include "mfs/control/server.h"
#include "mfs/wire/auth.h"
#include "mfs/wire/connection.h"
#include "migrate/checkpoint.h"
#include "migrate/deputy.h"
#include "migrate/prepare.h"
#include "migrate/proc_maps.h"
#include "migrate/protocol.h"
#include "migrate/restore.h"
#include "migrate/supervisor.h"
#include "migrate/syscall_table.h"
#include "migrate/transfer.h"
#include "migrate/write_tracker.h"

namespace mfs::migrate {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using Reply = control::ControlServer::Reply;

bool IsRestart(int64_t r) { return r == -512 || r == -513 || r == -514 || r == -516; }

// The union of two lists of [start, end) ranges, ascending and merged.
std::vector<std::pair<uint64_t, uint64_t>> Union(std::vector<std::pair<uint64_t, uint64_t>> a,
                                                 const std::vector<std::pair<uint64_t, uint64_t>>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return MergeRanges(std::move(a));
}

// Registers saved at a stop, to resume with after calls were injected: a
// call the stop cut (-ERESTART*) is restarted now, since the kernel's own
// restart on the way out of the stop saw the injected calls' registers
// instead (CpuState::NormalizeRestart, the rules of a freeze).
CpuState Resumable(CpuState s) {
  s.NormalizeRestart();
  return s;
}

class Home {
 public:
  Home(asio::io_context& io, SupervisorConfig cfg, pid_t pid, uint32_t initial_node)
      : io_(io), cfg_(std::move(cfg)), pid_(pid), initial_node_(initial_node), sigchld_(io, SIGCHLD), tick_(io), control_(io),
        k_(ProbeKernel()) {}

  Status Start() {
    MFS_ASSIGN_OR_RETURN(secret_, wire::LoadSecret(cfg_.secret_file));
    // With an initial node (mfsrun --node), the move waits for the exec.
    base_options_ = initial_node_ ? PTRACE_O_TRACEEXEC : 0;
    MFS_ASSIGN_OR_RETURN(tracee_, Tracee::Seize(pid_, base_options_));
    RefreshCommand();
    control_.RegisterSync("info", [this](const json&, const control::Caller&) -> Result<json> { return Info(); });
    control_.Register("move", [this](const json& req, const control::Caller&, Reply reply) {
      // "node": a node id, or "home".
      uint32_t node = cfg_.node_id;
      if (req.contains("node") && req["node"].is_number_unsigned()) node = req["node"].get<uint32_t>();
      else if (!(req.contains("node") && req["node"] == "home"))
        return reply(Status::InvalidArgument("move: \"node\" must be a node id or \"home\""));
      Move(node, std::move(reply));
    });
    // {"op":"dfsa","enable":bool?}: whether /mfs files move with the process
    // at its next move (default on; off: their I/O goes through the deputy,
    // as for any other file — for comparisons, bench/migrate/dfsa.sh).
    control_.RegisterSync("dfsa", [this](const json& req, const control::Caller&) -> Result<json> {
      if (req.contains("enable")) {
        if (!req["enable"].is_boolean())
          return Status::InvalidArgument("dfsa: \"enable\" must be true or false");
        dfsa_enabled_ = req["enable"].get<bool>();
      }
      return json{{"dfsa", dfsa_enabled_}};
    });
    // {"op":"direct","enable":bool?}: whether the deputy takes simple calls
    // straight from the guest (deputy.h; default on; takes effect at the
    // next move — for comparisons, bench/migrate/run.sh).
    control_.RegisterSync(
        "direct", [this](const json& req, const control::Caller&) -> Result<json> {
          if (req.contains("enable")) {
            if (!req["enable"].is_boolean())
              return Status::InvalidArgument("direct: \"enable\" must be true or false");
            direct_enabled_ = req["enable"].get<bool>();
          }
          return json{{"direct", direct_enabled_}, {"active", channel_ && channel_->direct()}};
        });
    MFS_RETURN_IF_ERROR(control_.Start(HomeSocketPath(cfg_.run_dir, pid_)));
    sigchld_.async_wait([this](auto ec, int) { OnSigchld(ec); });
    Tick();
    return Status::OK();
  }

  int exit_code() const { return exit_code_; }

 private:
  enum class State { kHome, kBusy, kRemote };
  // kServing: a forwarded call runs in the deputy's loop (DeputyChannel).
  enum class Dep { kParked, kStopping, kEnter, kExit, kServing, kStopped };
  // A forwarded call being run by the deputy.
  struct Current {
    wire::Connection::Ptr conn;
    wire::Frame frame;
    SyscallRequest req;
  };

  // The command line of the process as it runs at home (mfsrun's own until
  // its exec), kept for when it runs elsewhere.
  void RefreshCommand() {
    auto cmd = ReadFileToString("/proc/" + std::to_string(pid_) + "/cmdline");
    if (!cmd.ok() || cmd->empty()) return;
    for (char& c : *cmd)
      if (c == '\0') c = ' ';
    while (!cmd->empty() && cmd->back() == ' ') cmd->pop_back();
    command_ = *cmd;
  }

  json Info() {
    if (state_ == State::kHome) RefreshCommand();
    json j{{"pid", pid_},
           {"command", command_},
           {"home", cfg_.node_id},
           {"where", where_},
           {"moves", moves_},
           {"state", state_ == State::kHome ? "home" : state_ == State::kRemote ? "remote" : "moving"},
           {"forwarded_calls", forwarded_ + DirectTotal()}};
    json by_call = json::object();
    for (const auto& [nr, n] : ForwardedByNr()) {
      const char* name = LookupSyscall(nr).name;
      by_call[name[0] ? std::string(name) : "syscall " + std::to_string(nr)] = n;
    }
    j["forwarded_by_call"] = std::move(by_call);
    // The direct path (deputy.h): whether the deputy has one now, and the
    // calls it ran on it since it last came home (included above).
    j["direct"] = channel_ && channel_->direct();
    j["direct_calls"] = DirectTotal();
    j["dfsa_fds"] = std::vector<int>(dfsa_fds_.begin(), dfsa_fds_.end());
    j["dfsa"] = dfsa_enabled_;
    if (last_downtime_ms_ >= 0) j["last_downtime_ms"] = last_downtime_ms_;
    if (!last_error_.empty()) j["last_error"] = last_error_;
    std::string why = state_ == State::kHome ? WhyNotMigratable(pid_) : "";
    j["why_not"] = why;
    return j;
  }

  // Calls forwarded so far, with those the deputy ran on the direct path.
  std::map<int, uint64_t> ForwardedByNr() const {
    auto m = forwarded_by_nr_;
    if (channel_)
      for (const auto& [nr, n] : channel_->DirectCounts()) m[nr] += n;
    return m;
  }
  uint64_t DirectTotal() const {
    uint64_t t = 0;
    if (channel_)
      for (const auto& [nr, n] : channel_->DirectCounts()) t += n;
    return t;
  }

  void Quit(int code) {
    exit_code_ = code;
    control_.Stop();
    if (conn_) conn_->Close(Status::OK());
    tick_.cancel();
    asio::post(io_, [this] { io_.stop(); });
  }

  void Tick() {
    tick_.expires_after(std::chrono::milliseconds(100));
    tick_.async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      Reap();
      Tick();
    });
  }

  void OnSigchld(boost::system::error_code ec) {
    if (ec) return;
    sigchld_.async_wait([this](auto ec, int) { OnSigchld(ec); });
    Reap();
  }

  // ---- Events of the traced process.

  void Reap() {
    if (reaping_) return;  // a synchronous ptrace step is in progress
    while (tracee_ && !tracee_->dead()) {
      int status = 0;
      pid_t p = waitpid(pid_, &status, __WALL | WNOHANG);
      if (p <= 0) return;
      tracee_->MarkStopped(status);
      if (tracee_->dead()) {
        death_seen_ = true;
        return OnDeath(status);
      }
      if (state_ == State::kRemote || deputy_active_) OnDeputyStop(status);
      else OnHomeStop(status);
    }
  }

  void OnDeath(int status) {
    spdlog::info("home: process {} ended (status {:#x})", pid_, status);
    if (conn_ && state_ != State::kHome) {
      // Killing the deputy kills the remote.
      auto c = conn_;
      c->Call(kKill, "", [this](Result<wire::Frame>) { Quit(0); }, std::chrono::milliseconds(2000));
      return;
    }
    Quit(0);
  }

  void OnHomeStop(int status) {
    int sig = WSTOPSIG(status);
    int event = status >> 16;
    if (event == 0 && sig != (SIGTRAP | 0x80)) {
      tracee_->Cont(sig).IgnoreError();  // pass the signal on
    } else if (event == PTRACE_EVENT_EXEC) {
      tracee_->Cont().IgnoreError();
      if (uint32_t node = std::exchange(initial_node_, 0)) {
        RefreshCommand();
        asio::post(io_, [this, node] {
          Move(node, [node](Result<json> r) {
            if (!r.ok()) spdlog::warn("home: initial move to node {} failed: {}", node, r.status().ToString());
          });
        });
      }
    } else if (event == PTRACE_EVENT_STOP && (sig == SIGSTOP || IsJobStopSignal(sig))) {
      ptrace(PTRACE_LISTEN, pid_, nullptr, nullptr);  // job control stop: stay stopped
      tracee_->MarkRunning();
    } else if (state_ == State::kHome) {
      tracee_->Cont().IgnoreError();
    }
    // kBusy: the mover drives the tracee itself.
  }

  void OnDeputyStop(int status) {
    int sig = WSTOPSIG(status);
    int event = status >> 16;
    if (exiting_ && event == PTRACE_EVENT_STOP && dying_sig_ == 0) {
      // An interrupt sent while a forwarded call ran (the remote's exit
      // came during a call it did not wait for: a DFSA close) stops the
      // deputy on its way to exit_group: let it go on.
      tracee_->Cont().IgnoreError();
      return;
    }
    if (event == 0 && sig == SIGSTOP && stop_deputy_) {
      // kStopped's own SIGSTOP (not the remote's): into a group-stop.
      stop_deputy_ = false;
      tracee_->Cont(SIGSTOP).IgnoreError();
      return;
    }
    if (event == PTRACE_EVENT_STOP && (sig == SIGSTOP || IsJobStopSignal(sig)) && dep_ != Dep::kStopping) {
      // That group-stop (the parent has been told): stay in it until a
      // SIGCONT for the home pid, whose signal stop forwards it to the
      // remote; the stop that SIGCONT ends with (SIGTRAP) lets the deputy
      // go on where it was. (While kStopping, this stop is the one waited for.)
      ptrace(PTRACE_LISTEN, pid_, nullptr, nullptr);
      tracee_->MarkRunning();
      return;
    }
    if (channel_ && (dep_ == Dep::kParked || dep_ == Dep::kServing || dep_ == Dep::kStopping))
      return OnChannelDeputyStop(status);
    if (event == 0 && sig != (SIGTRAP | 0x80)) {
      if (dying_sig_ == sig) {
        tracee_->Cont(sig).IgnoreError();
        return;
      }
      // A signal for the home pid: it belongs to the remote.
      ForwardSignal(sig);
      if (deferred_) {
        Answer(*deferred_, deferred_ret_);
        deferred_.reset();
      }
      switch (dep_) {
        case Dep::kParked: return Park();
        case Dep::kStopping: tracee_->Cont().IgnoreError(); return;
        case Dep::kEnter:
        case Dep::kExit: ptrace(PTRACE_SYSCALL, pid_, nullptr, nullptr); tracee_->MarkRunning(); return;
        case Dep::kServing:  // the channel's stops go to OnChannelDeputyStop
        case Dep::kStopped: return;
      }
      return;
    }
    if (sig == (SIGTRAP | 0x80)) {
      if (dep_ == Dep::kEnter) {
        dep_ = Dep::kExit;
        ptrace(PTRACE_SYSCALL, pid_, nullptr, nullptr);
        tracee_->MarkRunning();
      } else if (dep_ == Dep::kExit) {
        FinishCall();
      }
      return;
    }
    if (event == PTRACE_EVENT_STOP && dep_ == Dep::kStopping) {
      dep_ = Dep::kStopped;
      return Next();
    }
    if (event == PTRACE_EVENT_STOP && dep_ == Dep::kEnter && interrupted_for_move_) {
      // RunWhenStopped's interrupt caught the deputy before its call entered
      // the kernel: the call did not run, and the remote re-issues it from
      // wherever it goes (as after -ERESTART* in FinishCall). Waiting for
      // the call instead could wait forever on a blocking one.
      current_.reset();
      interrupted_for_move_ = false;
      dep_ = Dep::kStopped;
      return Next();
    }
    if (event == PTRACE_EVENT_STOP && (dep_ == Dep::kEnter || dep_ == Dep::kExit)) {
      ptrace(PTRACE_SYSCALL, pid_, nullptr, nullptr);  // the call goes on to its exit stop
      tracee_->MarkRunning();
      return;
    }
    if (dep_ == Dep::kParked) Park();  // a stray stop: park again
  }

  // ---- The deputy.

  void Park() {
    dep_ = Dep::kParked;
    deputy_active_ = true;
    if (UseChannel()) {
      if (!SetGpRegs(pid_, channel_->LoopRegs(parked_base_)).ok()) return;
      tracee_->Cont().IgnoreError();
      if (!freezing_remote_ && dying_sig_ == 0) {
        OfferDirect();
        StartChannelCalls();
      }
      return;
    }
    CpuState s;
    s.gp = parked_base_;
    s.SetUpSyscall(scratch_.gadget(), SYS_rt_sigsuspend, {scratch_.buffer(), 8, 0, 0, 0, 0});
    if (!SetGpRegs(pid_, s.gp).ok()) return;
    tracee_->Cont().IgnoreError();
  }

  // The deputy is stopped: run what waits, else park.
  void Next() {
    if (!when_stopped_.empty()) {
      auto fn = std::move(when_stopped_.front());
      when_stopped_.pop_front();
      return fn();
    }
    const bool work = !calls_.empty() && !freezing_remote_;
    if (state_ != State::kRemote && !work) return;
    if (UseChannel()) return Park();  // the loop takes the calls
    if (work) return StartCall();
    Park();
  }

  void RunWhenStopped(std::function<void()> fn) {
    when_stopped_.push_back(std::move(fn));
    if (dep_ == Dep::kStopped) return Next();
    if (dep_ == Dep::kParked || dep_ == Dep::kServing) {
      // kServing: the stop tells whether the call in flight ran (see
      // OnChannelDeputyStop); one that did not is re-issued by the remote
      // from wherever it goes.
      dep_ = Dep::kStopping;
      ptrace(PTRACE_INTERRUPT, pid_, nullptr, nullptr);
    } else if (dep_ == Dep::kEnter || dep_ == Dep::kExit) {
      interrupted_for_move_ = true;
      ptrace(PTRACE_INTERRUPT, pid_, nullptr, nullptr);  // a blocked call returns -ERESTART*
    }
  }

  void OnSyscallFrame(const wire::Connection::Ptr& c, wire::Frame f) {
    calls_.push_back({c, std::move(f)});
    // During a move the remote is (being) frozen inside this call; it is
    // re-issued from wherever the process goes, so it must not run now.
    if (freezing_remote_) return;
    if (dep_ == Dep::kParked && channel_) return StartChannelCalls();
    if (dep_ == Dep::kParked) {
      dep_ = Dep::kStopping;
      ptrace(PTRACE_INTERRUPT, pid_, nullptr, nullptr);
    } else if (dep_ == Dep::kStopped) {
      Next();
    }
  }

  void StartCall() {
    auto [c, f] = std::move(calls_.front());
    calls_.pop_front();
    auto req = DecodeSyscallRequest(f.payload);
    if (!req.ok()) {
      c->ReplyError(f, req.status());
      return Next();
    }
    uint64_t off = 64;  // the first bytes hold rt_sigsuspend's empty mask
    for (auto& b : req->buffers) {
      uint64_t addr = scratch_.buffer() + off;
      off += (b.size + 15) & ~15ull;
      if (off > scratch_.buffer_size()) {
        c->ReplyError(f, Status::Error(E2BIG, "forwarded call: buffers too large"));
        return Next();
      }
      if ((b.dir & kDirIn) && !b.data.empty()) {
        if (!tracee_->WriteMem(addr, b.data.data(), b.data.size()).ok()) {
          c->ReplyError(f, Status::Error(EFAULT, "deputy scratch"));
          return Next();
        }
      }
      req->args[b.arg] = addr;
    }
    CpuState s;
    s.gp = parked_base_;
    s.SetUpSyscall(scratch_.gadget(), req->nr, {req->args[0], req->args[1], req->args[2], req->args[3], req->args[4], req->args[5]});
    if (!SetGpRegs(pid_, s.gp).ok()) {
      c->ReplyError(f, Status::Error(ESRCH, "deputy"));
      return;
    }
    current_ = Current{c, std::move(f), std::move(*req)};
    dep_ = Dep::kEnter;
    ++forwarded_;
    ++forwarded_by_nr_[current_->req.nr];
    ptrace(PTRACE_SYSCALL, pid_, nullptr, nullptr);
    tracee_->MarkRunning();
  }

  void FinishCall() {
    dep_ = Dep::kStopped;
    auto regs = GetGpRegs(pid_);
    int64_t ret = regs.ok() ? static_cast<int64_t>(regs->rax) : -ESRCH;
    Current cur = std::move(*current_);
    current_.reset();
    if (IsRestart(ret) && interrupted_for_move_) {
      // Not executed: the remote will re-issue it from wherever it goes.
      interrupted_for_move_ = false;
      return Next();
    }
    interrupted_for_move_ = false;
    if (IsRestart(ret)) {
      // A signal for the home pid cut the call. Its signal-delivery stop
      // comes next: the signal is forwarded first, then this answer, so the
      // remote's kernel restarts (SA_RESTART) or fails the call as ours would.
      deferred_.emplace(std::move(cur));
      deferred_ret_ = ret;
      return Park();
    }
    Answer(cur, ret);
    Next();
  }

  void Answer(const Current& cur, int64_t ret) {
    SyscallReply rep;
    rep.ret = ret;
    for (const auto& b : cur.req.buffers) {
      if (!(b.dir & kDirOut)) continue;
      size_t n = ret < 0 ? 0 : b.ret_bounded ? std::min<uint64_t>(static_cast<uint64_t>(ret), b.size) : b.size;
      CallBuffer out;
      out.arg = b.arg;
      out.data.resize(n);
      if (n && !ReadDeputy(cur.req.args[b.arg], out.data.data(), n).ok()) out.data.clear();
      rep.buffers.push_back(std::move(out));
    }
    if (ret >= 0 && dfsa_enabled_ &&
        (cur.req.nr == SYS_open || cur.req.nr == SYS_openat || cur.req.nr == SYS_creat)) {
      // DFSA: a file on /mfs opened while away is opened where the process
      // runs too; this fd keeps the number taken (and serves if it cannot).
      auto f = CaptureMfsFile(pid_, static_cast<int>(ret));
      if (f.ok() && f->has_value()) {
        rep.dfsa_path = (*f)->path;
        rep.dfsa_flags = (*f)->flags | ((*f)->cloexec ? O_CLOEXEC : 0);
      }
    }
    cur.conn->Reply(cur.frame, EncodeSyscallReply(rep));
  }

  // The deputy's memory at `addr`: the channel's buffers are read here.
  Status ReadDeputy(uint64_t addr, void* buf, size_t n) {
    if (channel_ && addr >= channel_->remote_buffer() &&
        addr + n <= channel_->remote_buffer() + channel_->buffer_size()) {
      std::memcpy(buf, channel_->buffer() + (addr - channel_->remote_buffer()), n);
      return Status::OK();
    }
    return tracee_->ReadMem(addr, buf, n);
  }

  // ---- The deputy's loop (DeputyChannel): calls without ptrace stops.

  // Maps the channel when there is none (the deputy is stopped). A deputy
  // that cannot have one is served with ptrace steps (StartCall).
  bool UseChannel() {
    if (channel_) return true;
    if (channel_failed_ || !scratch_.addr || !tracee_->stopped()) return false;
    reaping_ = true;
    tracee_->set_gadget(scratch_.gadget());
    auto ch = DeputyChannel::Create(
        *tracee_, scratch_,
        [this](uint32_t seq) { asio::post(io_, [this, seq] { OnChannelDone(seq); }); }, HighFd());
    reaping_ = false;
    if (DiedInInjection()) return false;
    if (!ch.ok()) {
      spdlog::warn("home: deputy of {} without its call loop ({}); using ptrace steps", pid_, ch.status().ToString());
      channel_failed_ = true;
      return false;
    }
    channel_ = std::move(*ch);
    return true;
  }

  // The deputy's memory is gone or replaced (restore): the channel with it.
  void DropChannel() {
    if (channel_)
      for (const auto& [nr, n] : channel_->DirectCounts()) {
        forwarded_ += n;
        forwarded_by_nr_[nr] += n;
      }
    channel_.reset();
    channel_failed_ = false;
  }

  // Where the channel's fds go in the deputy: high, below the soft
  // RLIMIT_NOFILE, so that the program's own numbers do not change (at most
  // 1000: a larger number would grow the fd table for nothing).
  int HighFd() const {
    rlimit rl{};
    if (prlimit(pid_, RLIMIT_NOFILE, nullptr, &rl) != 0 || rl.rlim_cur < 64) return 3;
    return static_cast<int>(std::min<rlim_t>(rl.rlim_cur - 24, 1000));
  }

  // ---- The direct path (deputy.h): the deputy reads simple calls from a
  // socket connected to the guest supervisor and answers them there.

  // Asks the guest for a direct path, once per connection (again after a
  // move that stayed put), when the deputy runs its loop without one.
  void OfferDirect() {
    if (!direct_enabled_ || !channel_ || channel_->direct() || !conn_ || direct_offered_ ||
        state_ != State::kRemote || exiting_ || direct_refused_ == conn_.get())
      return;
    direct_offered_ = true;
    auto c = conn_;
    c->Call(
        kDirect, "",
        [this, c](Result<wire::Frame> r) {
          direct_offered_ = false;
          if (c != conn_) return;
          Reader rd(r.ok() ? std::string_view(r->payload) : std::string_view());
          const uint16_t port = rd.U16();
          std::string token(rd.Raw(16));
          const uint32_t ip = rd.U32();
          if (!r.ok() || !rd.done()) {
            spdlog::info("home: no direct path for {}: {}", pid_,
                         r.ok() ? "bad kDirect reply" : r.status().ToString());
            direct_refused_ = c.get();
            return;
          }
          if (state_ != State::kRemote || freezing_remote_ || exiting_) return;
          RunWhenStopped([this, c, port, token, ip] {
            AttachDirect(c, port, token, ip);
            if (!DiedInInjection()) Next();
          });
        },
        std::chrono::seconds(5));
  }

  // A signal for the home pid goes to the remote. For the job-control stop
  // signals the remote's kernel cannot tell whether the home's process
  // group is orphaned (the home's kernel would discard such a signal): say it.
  void ForwardSignal(int sig) {
    if (!conn_) return;
    SignalFrame f{static_cast<uint32_t>(sig), false};
    if (IsJobStopSignal(sig)) f.orphaned = ProcessGroupOrphaned(pid_);
    conn_->Send(kSignal, EncodeSignal(f));
  }

  // An injected call's wait may have reaped the deputy's death, which Reap
  // then never sees: handle it here (true: it died).
  // Likewise a signal for the home pid that came while the calls ran is
  // held back in the tracee (stashed): it belongs to the remote.
  bool DiedInInjection() {
    if (!tracee_->dead()) {
      if (conn_ && !exiting_ && dying_sig_ == 0)
        for (int sig : tracee_->TakeStashedSignals())
          ForwardSignal(sig);
      return false;
    }
    if (!death_seen_) {
      death_seen_ = true;
      OnDeath(tracee_->exit_status());
    }
    return true;
  }

  // The deputy is stopped: connect its direct socket (deputy.h AttachDirect).
  void AttachDirect(const wire::Connection::Ptr& c, uint16_t port, const std::string& token,
                    uint32_t ip) {
    if (c != conn_ || !channel_ || channel_->direct() || state_ != State::kRemote || exiting_)
      return;
    in_addr local{};
    if (inet_pton(AF_INET, cfg_.address.c_str(), &local) != 1) local.s_addr = htonl(INADDR_ANY);
    reaping_ = true;
    tracee_->set_gadget(scratch_.gadget());
    Status s = channel_->AttachDirect(*tracee_, local.s_addr, htonl(ip), port, HighFd(),
                                      reinterpret_cast<const uint8_t*>(token.data()));
    reaping_ = false;
    if (!s.ok()) {
      spdlog::warn("home: direct path for {} not attached: {}", pid_, s.ToString());
      direct_refused_ = c.get();
      return;
    }
    channel_->EnableDirect();
    spdlog::info("home: deputy of {} serves simple calls directly (fd {})", pid_,
                 channel_->direct_fd());
  }

  // The deputy is stopped in its loop: if the direct path is on, end it.
  // The call it last received either ran (its answer goes with kDirectEnd;
  // the guest drops it if the socket already brought it) or did not (the
  // guest has it re-issued). REQUIRES: the deputy stopped; clobbers its
  // registers.
  void StopDirect(const user_regs_struct& regs) {
    if (!channel_ || !channel_->direct()) return;
    DirectEnd e;
    e.ran = channel_->ClassifyDirect(regs, &e.seq, &e.ret, &e.out);
    reaping_ = true;
    tracee_->set_gadget(scratch_.gadget());
    channel_->EndDirect(*tracee_);
    reaping_ = false;
    if (conn_) conn_->Send(kDirectEnd, EncodeDirectEnd(e));
  }

  // The loop stopped at its int3: the direct socket failed (the guest went,
  // or the program closed or replaced the fd) or the eventfd is gone.
  void OnLoopTrap(const user_regs_struct& regs) {
    spdlog::info("home: the deputy of {} left its direct path", pid_);
    if (conn_) direct_refused_ = conn_.get();
    StopDirect(regs);
    if (DiedInInjection()) return;
    const bool intact = channel_->EventFdIntact();
    // kStopping: an interrupt is out (a move, the end) and this stop serves
    // it (the calls just injected may have taken its stop already).
    if (intact && dep_ != Dep::kStopping) {
      SetGpRegs(pid_, channel_->TopRegs(regs)).IgnoreError();
      tracee_->Cont().IgnoreError();
      return;
    }
    if (current_) {
      channel_->Cancel();
      int64_t ret = 0;
      if (channel_->Classify(current_seq_, regs, &ret) == DeputyChannel::Fate::kRan)
        Answer(*current_, ret);
      else if (!freezing_remote_)
        calls_.push_front({current_->conn, std::move(current_->frame)});
      current_.reset();
    }
    if (!intact) {
      // Without its eventfd the loop cannot be woken: ptrace steps from now on.
      spdlog::warn("home: the deputy of {} lost its eventfd; using ptrace steps", pid_);
      DropChannel();
      channel_failed_ = true;
    }
    dep_ = Dep::kStopped;
    Next();
  }

  // Runs queued calls in the idle loop (dep_ kParked) until one takes
  // longer than a short inline wait; that one completes in OnChannelDone.
  void StartChannelCalls() {
    // Long enough for a call that does not block (getpid: a few µs), short
    // enough not to hold the io thread up.
    constexpr long kInlineWaitUsec = 200;
    while (dep_ == Dep::kParked && !calls_.empty() && !freezing_remote_) {
      auto [c, f] = std::move(calls_.front());
      calls_.pop_front();
      auto req = DecodeSyscallRequest(f.payload);
      if (!req.ok()) {
        c->ReplyError(f, req.status());
        continue;
      }
      uint64_t off = 0;
      bool bad = false;
      for (auto& b : req->buffers) {
        uint64_t at = off;
        off += (b.size + 15) & ~15ull;
        if (off > channel_->buffer_size()) {
          bad = true;
          break;
        }
        if ((b.dir & kDirIn) && !b.data.empty()) std::memcpy(channel_->buffer() + at, b.data.data(), b.data.size());
        req->args[b.arg] = channel_->remote_buffer() + at;
      }
      if (bad) {
        c->ReplyError(f, Status::Error(E2BIG, "forwarded call: buffers too large"));
        continue;
      }
      uint64_t args[6];
      for (int i = 0; i < 6; ++i) args[i] = req->args[i];
      current_ = Current{c, std::move(f), std::move(*req)};
      ++forwarded_;
      ++forwarded_by_nr_[current_->req.nr];
      current_seq_ = channel_->Submit(current_->req.nr, args);
      dep_ = Dep::kServing;
      int64_t ret = 0;
      if (!channel_->WaitDone(current_seq_, &ret, kInlineWaitUsec)) {
        channel_->Watch(current_seq_);
        return;
      }
      FinishChannelCall(ret);
    }
  }

  void FinishChannelCall(int64_t ret) {
    Current cur = std::move(*current_);
    current_.reset();
    dep_ = Dep::kParked;
    Answer(cur, ret);
  }

  // The waiter thread saw call `seq` done.
  void OnChannelDone(uint32_t seq) {
    if (!channel_ || !current_ || dep_ != Dep::kServing || seq != current_seq_) return;
    int64_t ret = 0;
    if (!channel_->Done(seq, &ret)) return;
    FinishChannelCall(ret);
    StartChannelCalls();
  }

  // A ptrace stop of the deputy while its loop runs.
  void OnChannelDeputyStop(int status) {
    int sig = WSTOPSIG(status);
    int event = status >> 16;
    if (event == 0 && sig != (SIGTRAP | 0x80)) {
      if (dying_sig_ == sig) {
        tracee_->Cont(sig).IgnoreError();
        return;
      }
      auto regs = GetGpRegs(pid_);
      siginfo_t si{};
      if (sig == SIGTRAP && regs.ok() && channel_->AtTrap(*regs) &&
          ptrace(PTRACE_GETSIGINFO, pid_, nullptr, &si) == 0 && si.si_code == SI_KERNEL)
        return OnLoopTrap(*regs);
      // A signal for the home pid: it belongs to the remote, and goes
      // before the answer of a call it cut. That call returns its restart
      // code instead of being restarted here: the remote's kernel restarts
      // it (SA_RESTART) or fails it, as ours would have. (The loop's own
      // poll and recv are restarted by our kernel.) A direct call's answer
      // then goes on this connection too, after the signal (kDirectReply),
      // and the loop skips its own.
      ForwardSignal(sig);
      uint32_t seq = 0;
      if (regs.ok() && channel_->AtCallRestart(*regs)) {
        regs->orig_rax = static_cast<uint64_t>(-1);
        SetGpRegs(pid_, *regs).IgnoreError();
      } else if (regs.ok() && channel_->AtDirectRestart(*regs, &seq)) {
        std::string p = EncodeU32(seq);
        Writer(&p).I64(static_cast<int64_t>(regs->rax));
        if (conn_) conn_->Send(kDirectReply, std::move(p));
        SetGpRegs(pid_, channel_->TopRegs(*regs)).IgnoreError();
      }
      tracee_->Cont().IgnoreError();
      return;
    }
    if (event == PTRACE_EVENT_STOP && dep_ == Dep::kStopping) {
      auto stop_regs = GetGpRegs(pid_);
      if (stop_regs.ok()) StopDirect(*stop_regs);
      if (DiedInInjection()) return;
      if (current_) {
        // Did the call in flight run? Answer it if so; if not, the remote
        // re-issues it from wherever it goes.
        channel_->Cancel();
        int64_t ret = 0;
        if (stop_regs.ok() &&
            channel_->Classify(current_seq_, *stop_regs, &ret) == DeputyChannel::Fate::kRan) {
          Answer(*current_, ret);
        } else if (!freezing_remote_) {
          // Not a move (the direct path being attached, the end): it runs
          // once the deputy's loop goes on.
          calls_.push_front({current_->conn, std::move(current_->frame)});
        }
        current_.reset();
      }
      dep_ = Dep::kStopped;
      return Next();
    }
    tracee_->Cont().IgnoreError();  // a stray stop: the loop goes on
  }

  // ---- Moves.

  // After a move (done or failed): the buffers it used go back to the
  // system (see mfs-supervisor.cc), once the reply has left.
  void TrimLater() {
    asio::post(io_, [] { malloc_trim(0); });
  }

  static double MsSince(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  }

  // kStart's reply: u32 remote pid [, u32 restore time in µs]. The restore
  // time splits "start" (the reply's round trip) into restore and the rest.
  static void AddStartPhases(std::string_view payload, double total_ms, json* phases) {
    double before = 0;
    for (const auto& [k, v] : phases->items()) before += v.get<double>();
    double start = total_ms - before;
    if (payload.size() >= 8) {
      Reader rd(payload);
      rd.U32();
      double restore = rd.U32() / 1000.0;
      (*phases)["restore"] = restore;
      (*phases)["start_other"] = start - restore;
    } else {
      (*phases)["start"] = start;
    }
  }

  void Move(uint32_t node, Reply reply) {
    if (state_ == State::kBusy) return reply(Status::Error(EBUSY, "a migration of this process is in progress"));
    if (node == where_) return reply(Status::Error(EALREADY, "process already runs on node " + std::to_string(node)));
    if (state_ == State::kHome) {
      std::string why = WhyNotMigratable(pid_);
      if (!why.empty()) return reply(Status::Error(EBUSY, "cannot migrate: " + why));
      return Away(node, std::move(reply));
    }
    state_ = State::kBusy;
    freezing_remote_ = true;
    RunWhenStopped([this, node, reply = std::move(reply)]() mutable {
      if (node == cfg_.node_id) ComeHome(std::move(reply));
      else Hop(node, std::move(reply));
    });
  }

  // Asks the local mfsd to have `node` spawn a guest supervisor.
  Result<tcp::endpoint> SpawnGuest(uint32_t node) {
    json req{{"op", "migrate.spawn_guest"}, {"node", node}, {"home_pid", pid_}, {"comm", command_}};
    MFS_ASSIGN_OR_RETURN(json r, control::Call(cfg_.mfsd_socket, req, 15000));
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(r.value("address", ""), ec);
    if (ec) return Status::Corruption("spawn_guest: bad address");
    return tcp::endpoint(addr, r.value("port", 0));
  }

  void ConnectGuest(uint32_t node, std::function<void(Result<wire::Connection::Ptr>)> done) {
    auto ep = SpawnGuest(node);
    if (!ep.ok()) return done(ep.status().Annotate("node " + std::to_string(node)));
    boost::system::error_code ec;
    tcp::endpoint local(asio::ip::make_address(cfg_.address, ec), 0);
    wire::AuthConfig auth{secret_, cfg_.node_id, wire::PeerRole::kNode, std::chrono::milliseconds(5000)};
    wire::Connection::Connect(
        io_, local, *ep, auth,
        [this](const wire::Connection::Ptr& c, wire::Frame f) { OnGuestFrame(c, std::move(f)); },
        [this](const wire::Connection::Ptr& c, const Status& why) { OnGuestClosed(c, why); }, std::move(done));
  }

  // kPrepare (prepare.h): the guest maps and faults in the memory the pages
  // will be written to while the process still runs here. `then` runs once
  // it answered, or after a bounded wait, with what it did (for the move's
  // reply); a refusal or a failure only loses the speed-up.
  void PrepareGuest(const wire::Connection::Ptr& conn, std::function<void(json)> then) {
    const auto t0 = Clock::now();
    auto hint = ComputePrepareHint(pid_);
    if (!hint.ok() || hint->areas.empty())
      return then(json{{"error", hint.ok() ? std::string("nothing to prepare") : hint.status().ToString()}});
    const uint64_t pages = hint->pages();
    // Faulting in costs 1.4-8 µs a page on this VM: wait up to 1 s + 16 µs a page.
    const auto wait = std::chrono::milliseconds(std::min<uint64_t>(15000, 1000 + pages * 16 / 1000));
    auto once = std::make_shared<std::function<void(json)>>(std::move(then));
    auto shared_hint = std::make_shared<const PrepareHint>(std::move(*hint));
    conn->Call(kPrepare, EncodePrepareHint(*shared_hint), [this, conn, once, pages, t0, shared_hint](Result<wire::Frame> r) {
      if (!*once) return;
      auto then = std::move(*once);
      *once = nullptr;
      json j{{"hinted_pages", pages}, {"ms", MsSince(t0)}};
      if (r.ok()) {
        Reader rd(r->payload);
        const uint32_t populated = rd.U32();
        const uint32_t us = rd.U32();
        if (rd.done()) {
          j["pages"] = populated;
          j["guest_ms"] = us / 1000.0;
          if (populated > 0 && precopy_enabled_) return Precopy(conn, shared_hint, std::move(j), std::move(then));
        }
      } else {
        j["error"] = r.status().ToString();
      }
      then(std::move(j));
    }, wait);
    WarmHeap(pages * kPageSize);  // this side's batch buffers, meanwhile
  }

  // kPrecopy: the hinted pages of the still running process go into the
  // prepared memory; at the freeze, those whose hash has not changed are not
  // sent again (SendImage's filter). Bounded like the prepare; a failure
  // only means more pages after the freeze. Fills precopied_ with the
  // (address, hash) of each page the guest holds, ascending.
  //
  // With write tracking, the pre-copy goes in rounds: each round sends again
  // the pages written during the one before (read and write-protected again
  // in one scan, WriteTracker::Written(true)), so that a program that keeps
  // rewriting its memory leaves only what it wrote during the last, short,
  // round for the freeze. Rounds stop when what was written is small (fewer
  // than precopy_round_pages_: 64, or MFS_MIGRATE_PRECOPY_ROUND_PAGES),
  // stops shrinking (a working set rewritten faster than it is sent), after
  // kMaxPrecopyRounds, or at the time bound.
  static constexpr int kMaxPrecopyRounds = 6;

  void Precopy(const wire::Connection::Ptr& conn, std::shared_ptr<const PrepareHint> hint, json j,
               std::function<void(json)> then) {
    auto img = std::make_shared<ProcessImage>();
    uint64_t pages = 0;
    for (const auto& a : hint->areas)
      for (const auto& [addr, n] : a.runs) {
        PageRun run;
        run.addr = addr;
        run.hashes.assign(n, 0);
        img->pages.push_back(std::move(run));
        pages += n;
      }
    precopied_.clear();
    precopied_.reserve(pages);
    tracker_ = StartWriteTracking(*hint);  // before the first read: "written" starts here
    j["write_tracking"] = tracker_ != nullptr;
    auto round = std::make_shared<PrecopyRound>();
    round->t0 = Clock::now();
    round->then = std::move(then);
    round->j = std::move(j);
    round->timer = std::make_shared<asio::steady_timer>(
        io_, std::chrono::milliseconds(std::min<uint64_t>(15000, 1000 + pages * 16 / 1000)));
    round->timer->async_wait([round](boost::system::error_code ec) {
      if (ec) return;
      round->timed_out = true;
      if (round->stop) round->stop();
    });
    PrecopySend(conn, round, std::move(img), pages);
  }

  struct PrecopyRound {
    Clock::time_point t0;
    std::function<void(json)> then;
    json j;
    std::shared_ptr<asio::steady_timer> timer;
    std::function<void()> stop;  // the current round's
    bool timed_out = false;
    int rounds = 0;
    std::vector<std::pair<uint64_t, uint64_t>> resent;  // (addr, hash) of this round, after the first
    std::vector<std::pair<uint64_t, uint64_t>> current;  // this round's pages (after the first)
    std::vector<uint64_t> round_pages;
  };

  void PrecopySend(const wire::Connection::Ptr& conn, std::shared_ptr<PrecopyRound> round,
                   std::shared_ptr<ProcessImage> img, uint64_t pages) {
    ++round->rounds;
    round->round_pages.push_back(pages);
    const bool first = round->rounds == 1;
    PageReader read = [this](uint64_t addr, char* dst, size_t len) { return tracee_->ReadMem(addr, dst, len); };
    round->stop = SendPageRuns(
        conn, img, kPrecopy, std::move(read),
        [this, round, first](uint64_t addr, uint64_t hash) {
          (first ? precopied_ : round->resent).push_back({addr, hash});
        },
        [this, conn, round](Status s) {
          // Off the sender's own call stack: the next round replaces
          // round->stop, which owns this callback.
          asio::post(io_, [this, conn, round, s] { PrecopyRoundDone(conn, round, s); });
        });
  }

  void PrecopyRoundDone(const wire::Connection::Ptr& conn, const std::shared_ptr<PrecopyRound>& round, Status s) {
    if (!std::is_sorted(precopied_.begin(), precopied_.end())) std::sort(precopied_.begin(), precopied_.end());
    MergeResent(round->resent);
    round->resent.clear();
    // A later round cut short leaves some of its pages stale at the
    // guest, though no longer marked written: count them as written.
    if ((!s.ok() || round->timed_out) && !round->current.empty())
      carried_written_ = Union(std::move(carried_written_), round->current);
    round->current.clear();
    if (s.ok() && !round->timed_out && tracker_ && tracee_ && !tracee_->dead() && round->rounds < kMaxPrecopyRounds) {
      auto w = tracker_->Written(/*reset=*/true);
      uint64_t n = 0;
      if (w.ok())
        for (const auto& [a, e] : *w) n += (e - a) / kPageSize;
      // Another round if it pays: enough was written, and less than
      // the round before sent (it converges).
      if (w.ok() && n >= precopy_round_pages_ && n * 10 < round->round_pages.back() * 9) {
        auto next = std::make_shared<ProcessImage>();
        for (const auto& [a, e] : *w) {
          PageRun run;
          run.addr = a;
          run.hashes.assign((e - a) / kPageSize, 0);
          next->pages.push_back(std::move(run));
        }
        round->current = std::move(*w);
        return PrecopySend(conn, round, std::move(next), n);
      }
      if (!w.ok()) spdlog::info("home: pre-copy of {}: {}", pid_, w.status().ToString());
      // No further round. The pages it found written go unread into the
      // freeze's "written" set: make it whole again, since that scan
      // write-protected them.
      if (w.ok() && n > 0) carried_written_ = Union(std::move(carried_written_), *w);
    }
    round->timer->cancel();
    round->stop = nullptr;
    if (!round->then) return;
    auto then = std::move(round->then);
    round->then = nullptr;
    json j = std::move(round->j);
    j["precopied_pages"] = precopied_.size();
    j["precopy_ms"] = MsSince(round->t0);
    j["precopy_rounds"] = round->rounds;
    j["precopy_round_pages"] = round->round_pages;
    if (!s.ok()) j["precopy_error"] = s.ToString();
    // The tracee may have ended meanwhile: AwayPrepared checks.
    then(std::move(j));
  }

  // A later round's pages into precopied_: their hash replaces the first
  // round's (pages outside it, if the first round was cut, are added).
  void MergeResent(std::vector<std::pair<uint64_t, uint64_t>>& resent) {
    if (resent.empty()) return;
    std::sort(resent.begin(), resent.end());
    std::vector<std::pair<uint64_t, uint64_t>> extra;
    for (const auto& [addr, hash] : resent) {
      auto it = std::lower_bound(precopied_.begin(), precopied_.end(), std::make_pair(addr, uint64_t{0}));
      if (it != precopied_.end() && it->first == addr) it->second = hash;
      else extra.push_back({addr, hash});
    }
    if (extra.empty()) return;
    precopied_.insert(precopied_.end(), extra.begin(), extra.end());
    std::sort(precopied_.begin(), precopied_.end());
  }

  // Pre-copied pages the process no longer has at the freeze (freed since)
  // travel as the zeros they now read as, so that no stale copy stays at the
  // destination. REQUIRES: img.pages ascending (as Capture gives them).
  void AddVanishedPages(ProcessImage& img) {
    std::vector<uint64_t> gone;
    size_t r = 0;
    for (const auto& [addr, hash] : precopied_) {
      while (r < img.pages.size() && img.pages[r].addr + img.pages[r].pages() * kPageSize <= addr) ++r;
      if (r < img.pages.size() && img.pages[r].addr <= addr) continue;  // still there
      bool mapped = false;
      for (const auto& v : img.vmas)
        if (addr >= v.start && addr < v.end && !(v.flags & (kVmaShared | kVmaFile))) mapped = true;
      if (mapped) gone.push_back(addr);
    }
    for (size_t i = 0; i < gone.size();) {
      size_t j = i + 1;
      while (j < gone.size() && gone[j] == gone[j - 1] + kPageSize) ++j;
      PageRun run;
      run.addr = gone[i];
      run.hashes.assign(j - i, 0);
      img.pages.push_back(std::move(run));
      i = j;
    }
  }

  // SendImage's filter once kImage's reply names the mappings whose
  // prepared memory is in place: a page pre-copied into one of them and
  // unchanged since is not sent. Counts them in *skipped.
  // With `written` (write tracking), a pre-copied page not written since
  // the pre-copy began is skipped without being read; without it, or for a
  // written one, when its hash is unchanged.
  std::function<PageFilter(std::string_view)> PrecopyFilter(
      std::shared_ptr<uint64_t> skipped, std::shared_ptr<uint64_t> unread,
      std::shared_ptr<const std::vector<std::pair<uint64_t, uint64_t>>> written) {
    return [this, skipped, unread, written](std::string_view reply) -> PageFilter {
      auto moved = DecodeRanges(reply);
      if (!moved.ok() || moved->empty() || precopied_.empty()) return nullptr;
      auto ranges = std::make_shared<std::vector<std::pair<uint64_t, uint64_t>>>(std::move(*moved));
      auto cursor = std::make_shared<size_t>(0);
      return [this, ranges, cursor, skipped, unread, written](uint64_t addr, const uint64_t* hash) {
        // Pages come mostly in ascending order: a cursor, else a search.
        size_t& i = *cursor;
        if (i >= precopied_.size() || precopied_[i].first > addr)
          i = static_cast<size_t>(std::lower_bound(precopied_.begin(), precopied_.end(), std::make_pair(addr, uint64_t{0})) -
                                  precopied_.begin());
        while (i < precopied_.size() && precopied_[i].first < addr) ++i;
        if (i >= precopied_.size() || precopied_[i].first != addr) return false;
        auto r = std::upper_bound(ranges->begin(), ranges->end(), std::make_pair(addr, UINT64_MAX));
        if (r == ranges->begin() || addr >= std::prev(r)->second) return false;
        if (!hash) {
          if (!written) return false;
          auto w = std::upper_bound(written->begin(), written->end(), std::make_pair(addr, UINT64_MAX));
          if (w != written->begin() && addr < std::prev(w)->second) return false;  // written: read it
          ++*unread;
          ++*skipped;
          return true;
        }
        if (precopied_[i].second != *hash) return false;
        ++*skipped;
        return true;
      };
    };
  }

  // Write tracking for the pre-copy (write_tracker.h): the process is
  // stopped for the few calls it takes, then runs on. Null where the kernel
  // or the process does not allow it (the hashes decide then).
  std::unique_ptr<WriteTracker> StartWriteTracking(const PrepareHint& hint) {
    if (!write_tracking_enabled_) return nullptr;
    WriteTracker::Ranges ranges;
    for (const auto& a : hint.areas) ranges.push_back({a.start, a.end});
    reaping_ = true;
    std::unique_ptr<WriteTracker> tracker;
    Status s = tracee_->Interrupt();
    if (s.ok()) {
      auto regs = GetCpuState(pid_);
      s = regs.status();
      if (regs.ok()) {
        auto maps = ReadMaps(pid_);
        for (const auto& e : maps.ok() ? *maps : std::vector<MapEntry>())
          if (e.path == "[vdso]") tracee_->set_gadget(e.start + static_cast<uint64_t>(k_.vdso_syscall_offset));
        auto t = k_.vdso_syscall_offset >= 0 ? WriteTracker::Start(*tracee_, ranges)
                                             : Result<std::unique_ptr<WriteTracker>>(Status::Error(ENOTSUP, "no gadget"));
        if (t.ok()) tracker = std::move(*t);
        else s = t.status();
        SetCpuState(pid_, Resumable(*regs)).IgnoreError();
      }
      for (int sig : tracee_->TakeStashedSignals()) syscall(SYS_tgkill, pid_, pid_, sig);
      tracee_->Cont().IgnoreError();
    }
    reaping_ = false;
    if (!s.ok()) spdlog::info("home: no write tracking for the pre-copy of {}: {}", pid_, s.ToString());
    return tracker;
  }

  // Home -> node.
  void Away(uint32_t node, Reply reply) {
    RefreshCommand();
    state_ = State::kBusy;
    precopied_ = {};
    carried_written_ = {};
    tracker_.reset();
    ConnectGuest(node, [this, node, reply](Result<wire::Connection::Ptr> c) {
      if (!c.ok()) return FailAway(c.status(), reply, nullptr);
      auto conn = *c;
      PrepareGuest(conn, [this, node, reply, conn](json prepared) { AwayPrepared(node, reply, conn, std::move(prepared)); });
    });
  }

  // Freeze, capture, send, start.
  void AwayPrepared(uint32_t node, const Reply& reply, const wire::Connection::Ptr& conn, json prepared) {
    if (state_ != State::kBusy || !tracee_ || tracee_->dead())
      return FailAway(Status::Error(ESRCH, "the process ended during the move"), reply, conn);
    auto t0 = Clock::now();
    auto img = FreezeAndCapture();
    if (!img.ok()) return FailAway(img.status(), reply, conn);
    std::function<PageFilter(std::string_view)> filter;
    auto skipped = std::make_shared<uint64_t>(0), unread = std::make_shared<uint64_t>(0);
    if (!precopied_.empty()) {
      AddVanishedPages(*img);
      std::shared_ptr<const std::vector<std::pair<uint64_t, uint64_t>>> written;
      if (tracker_) {
        auto w = tracker_->Written();
        if (w.ok()) {
          // Plus what the last round's scan found written and re-protected.
          if (!carried_written_.empty()) w = Union(std::move(*w), carried_written_);
          written = std::make_shared<const std::vector<std::pair<uint64_t, uint64_t>>>(std::move(*w));
        }
        else spdlog::warn("home: write tracking of {}: {}", pid_, w.status().ToString());
      }
      filter = PrecopyFilter(skipped, unread, std::move(written));
    }
    auto phases = std::make_shared<json>(json{{"capture", MsSince(t0)}});
    auto shared = std::make_shared<const ProcessImage>(std::move(*img));
    PageReader read = [this](uint64_t addr, char* dst, size_t len) { return tracee_->ReadMem(addr, dst, len); };
    SendImage(conn, shared, [this, node, reply, conn, t0, phases, shared, prepared, skipped, unread](Status s) mutable {
      precopied_ = {};
      carried_written_ = {};
      tracker_.reset();
      prepared["unchanged_pages_not_sent"] = *skipped;
      prepared["unchanged_pages_not_read"] = *unread;
      if (!s.ok()) return FailAway(s, reply, conn);
      (*phases)["send"] = MsSince(t0) - (*phases)["capture"].get<double>();
      conn->Call(kStart, "", [this, node, reply, conn, t0, phases, shared_img = shared, prepared](Result<wire::Frame> r) mutable {
        if (!r.ok()) return FailAway(r.status().Annotate("restore on node " + std::to_string(node)), reply, conn);
        last_downtime_ms_ = MsSince(t0);
        AddStartPhases(r->payload, last_downtime_ms_, phases.get());
        if (r->payload.size() >= 16) {
          Reader rd(std::string_view(r->payload).substr(8));
          prepared["moved_pieces"] = rd.U32();
          prepared["moved_pages"] = rd.U32();
        }
        conn_ = conn;
        where_ = node;
        ++moves_;
        state_ = State::kRemote;
        frozen_pending_.clear();  // they travelled with the image
        timers_stopped_ = false;  // they run at the remote now
        dfsa_fds_.clear();
        for (const auto& f : shared_img->files) dfsa_fds_.insert(f.fd);
        RetireThreads();
        Next();
        spdlog::info("home: {} now runs on node {} (downtime {:.1f} ms; phases {}; prepared {})", pid_, node,
                     last_downtime_ms_, phases->dump(), prepared.dump());
        reply(json{{"pid", pid_},
                   {"where", node},
                   {"downtime_ms", last_downtime_ms_},
                   {"phases_ms", *phases},
                   {"prepared", prepared}});
        TrimLater();
      }, std::chrono::seconds(60));
    }, std::move(read), std::move(filter), [pid = pid_](uint64_t addr, char* dst, size_t len) -> Status {
      // process_vm_readv alone (thread-safe); the io thread's reader falls
      // back to /proc/PID/mem where this fails (PROT_NONE pages).
      iovec local{dst, len};
      iovec remote{reinterpret_cast<void*>(addr), len};
      if (process_vm_readv(pid, &local, 1, &remote, 1, 0) == static_cast<ssize_t>(len)) return Status::OK();
      return Status::Error(EFAULT, "process_vm_readv");
    });
  }

  Result<ProcessImage> FreezeAndCapture() {
    for (int attempt = 0; attempt < 50; ++attempt) {
      reaping_ = true;
      Status s = tracee_->Interrupt();
      if (!s.ok()) {
        reaping_ = false;
        return s;
      }
      auto regs = GetCpuState(pid_);
      if (!regs.ok()) {
        reaping_ = false;
        return regs.status();
      }
      saved_ = *regs;
      HoldForLife(true);
      s = SeizeThreads();
      if (!s.ok()) {
        reaping_ = false;
        Unfreeze();
        if (s.code() != EAGAIN) return s;
        usleep(2000);
        continue;
      }
      if (scratch_.addr == 0) {
        auto sc = MapScratch(*tracee_, k_, 0, 8u << 20);
        if (!sc.ok()) {
          reaping_ = false;
          Unfreeze();
          return sc.status();
        }
        scratch_ = *sc;
      }
      // The pages are read while they are sent (SendImage's reader).
      auto img = Capture(*tracee_, scratch_, saved_, frozen_threads_, /*read_pages=*/false);
      reaping_ = false;
      if (img.ok()) {
        frozen_pending_ = img->pending_signals;
        for (size_t i = 1; i < img->threads.size(); ++i)
          for (uint32_t sig : img->threads[i].pending_signals)
            frozen_thread_pending_.emplace_back(frozen_threads_[i - 1].tracee->tid(), sig);
        frozen_itimers_ = img->itimers;
        timers_stopped_ = true;
        parked_base_ = saved_.gp;
        deputy_active_ = true;
        dep_ = Dep::kStopped;
        // DFSA: the files on /mfs move with it.
        auto files = dfsa_enabled_ ? CaptureFiles(pid_, FileScope::kMfs)
                                   : Result<std::vector<FileImage>>(std::vector<FileImage>());
        if (!files.ok()) {
          Unfreeze();
          return files.status();
        }
        img->files = std::move(*files);
        return img;
      }
      Unfreeze();
      if (img.status().code() != EAGAIN) return img.status();
      usleep(2000);  // let pending signals be delivered, threads settle
    }
    return Status::Error(EAGAIN, "signals kept arriving or threads kept changing; could not freeze");
  }

  // Seizes and stops every thread of the process but the main one (already
  // stopped), until a pass over /proc/PID/task finds no new one.
  Status SeizeThreads() {
    for (int pass = 0; pass < 100; ++pass) {
      DIR* d = opendir(("/proc/" + std::to_string(pid_) + "/task").c_str());
      if (!d) return Status::FromErrno("opendir task");
      std::vector<pid_t> tids;
      while (dirent* e = readdir(d))
        if (e->d_name[0] != '.') tids.push_back(atoi(e->d_name));
      closedir(d);
      bool added = false;
      for (pid_t tid : tids) {
        if (tid == pid_) continue;
        bool known = false;
        for (const auto& t : thread_tracees_) known = known || t->tid() == tid;
        if (known) continue;
        auto t = Tracee::Seize(tid, 0);
        if (!t.ok()) {
          if (t.status().code() == ESRCH) continue;  // it just exited
          return t.status();
        }
        if (!(*t)->Interrupt().ok()) continue;
        auto regs = GetCpuState(tid);
        if (!regs.ok()) return regs.status();
        auto vt = vtid_.find(tid);
        frozen_threads_.push_back(FrozenThread{t->get(), *regs, vt == vtid_.end() ? tid : vt->second});
        thread_tracees_.push_back(std::move(*t));
        added = true;
      }
      if (!added) return Status::OK();
    }
    return Status::Error(EAGAIN, "threads kept being created during the freeze");
  }

  // The other threads run on (a failed move): their registers back, held
  // signals re-raised, detached.
  void ReleaseThreads() {
    for (auto& t : thread_tracees_) {
      if (t->dead()) continue;
      for (const auto& f : frozen_threads_)
        if (f.tracee == t.get()) SetCpuState(t->tid(), Resumable(f.saved)).IgnoreError();
    }
    for (auto [tid, sig] : frozen_thread_pending_) syscall(SYS_tgkill, pid_, tid, static_cast<int>(sig));
    frozen_thread_pending_.clear();
    frozen_threads_.clear();
    thread_tracees_.clear();  // detaches (stashed signals are re-delivered)
  }

  // The process runs elsewhere: the deputy is its main thread alone, the
  // other threads end (their state travelled; their memory is no longer the
  // program's, so what their exit writes there does not matter).
  void RetireThreads() {
    for (auto& t : thread_tracees_) {
      if (t->dead()) continue;
      t->set_gadget(scratch_.gadget());
      t->Syscall(SYS_exit, 0).status().IgnoreError();
    }
    frozen_thread_pending_.clear();
    frozen_threads_.clear();
    thread_tracees_.clear();
    vtid_.clear();
  }

  // Back to running natively at home after a failed move away.
  void Unfreeze() {
    deputy_active_ = false;
    if (timers_stopped_ && scratch_.addr) {
      tracee_->set_gadget(scratch_.gadget());
      RearmTimers(*tracee_, scratch_, frozen_itimers_).IgnoreError();
    }
    timers_stopped_ = false;
    ReleaseThreads();
    if (scratch_.addr) {
      auto maps = ReadMaps(pid_);
      if (maps.ok())
        for (const auto& e : *maps)
          if (e.path == "[vdso]") tracee_->set_gadget(e.start + static_cast<uint64_t>(k_.vdso_syscall_offset));
      tracee_->Syscall(SYS_munmap, scratch_.addr, scratch_.size).status().IgnoreError();
      scratch_ = Scratch{};
    }
    SetCpuState(pid_, Resumable(saved_)).IgnoreError();
    auto sigs = tracee_->TakeStashedSignals();
    for (uint32_t sig : frozen_pending_) sigs.push_back(static_cast<int>(sig));
    frozen_pending_.clear();
    for (int sig : sigs) syscall(SYS_tgkill, pid_, pid_, sig);
    HoldForLife(false);
    tracee_->Cont().IgnoreError();
  }

  // From the freeze until the process runs at home again, only this
  // supervisor can undo what it did (the registers it saved, the calls it
  // injected, the deputy's loop): if it dies then, the process must die with
  // it (PTRACE_O_EXITKILL; its remote ends with the home connection) rather
  // than run on from a state that is not its own, or wait forever as a
  // deputy nobody serves. At home, untouched, the process outlives it.
  // REQUIRES: the tracee stopped.
  void HoldForLife(bool on) {
    Status s = tracee_->SetOptions(base_options_ | (on ? PTRACE_O_EXITKILL : 0));
    if (!s.ok()) spdlog::warn("home: {}: PTRACE_O_EXITKILL {}: {}", pid_, on ? "on" : "off", s.ToString());
  }

  void FailAway(const Status& why, const Reply& reply, wire::Connection::Ptr conn) {
    spdlog::warn("home: move of {} failed, resuming at home: {}", pid_, why.ToString());
    last_error_ = why.ToString();
    precopied_ = {};
    carried_written_ = {};
    tracker_.reset();  // its ranges are unregistered
    if (conn) {
      failed_conns_.insert(conn.get());
      conn->Close(why);
    }
    if (tracee_->stopped()) Unfreeze();
    state_ = State::kHome;
    where_ = cfg_.node_id;
    reply(why);
    TrimLater();
  }

  // Fetches the image of the remote behind `conn` (frozen there).
  void FetchImage(const wire::Connection::Ptr& conn, std::function<void(Result<std::shared_ptr<ProcessImage>>)> done) {
    conn->Call(kFetch, "", [this, conn, done](Result<wire::Frame> r) {
      if (!r.ok()) return done(r.status().Annotate("fetching the image"));
      Reader rd(r->payload);
      std::string_view header = rd.Bytes();
      uint32_t batches = rd.U32();
      auto img = std::make_shared<ProcessImage>();
      if (!rd.done()) return done(Status::Corruption("fetch reply"));
      Status s = DecodeHeader(header, img.get());
      if (!s.ok()) return done(s);
      auto next = std::make_shared<std::function<void(uint32_t)>>();
      *next = [conn, img, batches, next, done](uint32_t i) {
        if (i == batches) {
          done(img);
          *next = nullptr;
          return;
        }
        conn->Call(kFetchPages, EncodeU32(i), [img, i, next, done](Result<wire::Frame> r) {
          Status s = r.ok() ? DecodePageRuns(r->payload, &img->pages) : r.status();
          if (!s.ok()) {
            done(s);
            *next = nullptr;
            return;
          }
          (*next)(i + 1);
        });
      };
      (*next)(0);
    }, std::chrono::seconds(30));
  }

  void StayRemote(const Status& why, const Reply& reply) {
    spdlog::warn("home: move of {} failed, it stays on node {}: {}", pid_, where_, why.ToString());
    last_error_ = why.ToString();
    state_ = State::kRemote;
    freezing_remote_ = false;
    if (conn_) conn_->Call(kResume, "", [](Result<wire::Frame>) {});
    dep_ = Dep::kStopped;
    Next();
    reply(why);
    TrimLater();
  }

  // Remote -> home: the image goes into the deputy itself.
  void ComeHome(Reply reply) {
    auto t0 = Clock::now();
    FetchImage(conn_, [this, reply, t0](Result<std::shared_ptr<ProcessImage>> img) {
      if (!img.ok()) return StayRemote(img.status(), reply);
      json phases{{"fetch", MsSince(t0)}};
      RestoreOptions opts;
      reaping_ = true;
      // DFSA: the home fds take the remote's offsets and flags before the
      // process runs here again (the deputy's scratch goes with the restore).
      ReconcileFiles((*img)->files, true);
      // The channel's fds are not the program's; its memory is replaced.
      if (channel_) channel_->CloseInDeputy(*tracee_);
      DropChannel();
      auto r = Restore(*tracee_, **img, k_, opts);
      reaping_ = false;
      phases["restore"] = MsSince(t0) - phases["fetch"].get<double>();
      if (!r.ok()) {
        // The deputy's old memory is gone; it only needs a scratch to serve.
        auto sc = MapScratch(*tracee_, k_, 0, 8u << 20);
        if (sc.ok()) scratch_ = *sc;
        return StayRemote(r.status().Annotate("restoring at home"), reply);
      }
      for (const auto& w : r->warnings) spdlog::warn("home: restore: {}", w);
      // The re-created threads run natively, untraced; the tid each had
      // (the one the program knows) is kept for the next capture.
      vtid_.clear();
      for (size_t i = 0; i < r->threads.size(); ++i) vtid_[r->threads[i]->tid()] = (*img)->threads[i + 1].tid;
      r->threads.clear();
      scratch_ = Scratch{};
      dfsa_fds_.clear();  // the fds are the process's own again
      calls_.clear();  // re-executed natively at home
      freezing_remote_ = false;
      auto old = conn_;
      conn_.reset();
      failed_conns_.insert(old.get());
      old->Call(kKill, "", [old](Result<wire::Frame>) { old->Close(Status::OK()); }, std::chrono::seconds(5));
      deputy_active_ = false;
      stop_deputy_ = false;
      state_ = State::kHome;
      where_ = cfg_.node_id;
      ++moves_;
      last_downtime_ms_ = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      HoldForLife(false);
      tracee_->Cont().IgnoreError();
      spdlog::info("home: {} is home again (downtime {:.1f} ms; phases {})", pid_, last_downtime_ms_, phases.dump());
      reply(json{{"pid", pid_}, {"where", cfg_.node_id}, {"downtime_ms", last_downtime_ms_}, {"phases_ms", phases}});
      TrimLater();
    });
  }

  // Node A -> node B, through the home.
  void Hop(uint32_t node, Reply reply) {
    auto t0 = Clock::now();
    ConnectGuest(node, [this, node, reply, t0](Result<wire::Connection::Ptr> c) {
      if (!c.ok()) return StayRemote(c.status(), reply);
      auto fresh = *c;
      FetchImage(conn_, [this, node, reply, t0, fresh](Result<std::shared_ptr<ProcessImage>> img) {
        if (!img.ok()) {
          fresh->Close(img.status());
          return StayRemote(img.status(), reply);
        }
        auto phases = std::make_shared<json>(json{{"fetch", MsSince(t0)}});
        SendImage(fresh, *img, [this, node, reply, t0, fresh, phases, img](Status s) {
          auto fail = [this, reply, fresh](const Status& why) {
            failed_conns_.insert(fresh.get());
            fresh->Close(why);
            StayRemote(why, reply);
          };
          if (!s.ok()) return fail(s);
          (*phases)["send"] = MsSince(t0) - (*phases)["fetch"].get<double>();
          fresh->Call(kStart, "", [this, node, reply, t0, fresh, fail, phases, img](Result<wire::Frame> r) {
            if (!r.ok()) return fail(r.status().Annotate("restore on node " + std::to_string(node)));
            AddStartPhases(r->payload, MsSince(t0), phases.get());
            auto old = conn_;
            failed_conns_.insert(old.get());
            old->Call(kKill, "", [old](Result<wire::Frame>) { old->Close(Status::OK()); }, std::chrono::seconds(5));
            calls_.clear();  // the new remote re-issues them
            freezing_remote_ = false;
            reaping_ = true;
            ReconcileFiles((*img)->files, false);
            reaping_ = false;
            conn_ = fresh;
            where_ = node;
            ++moves_;
            last_downtime_ms_ = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
            state_ = State::kRemote;
            dep_ = Dep::kStopped;
            Next();
            reply(json{{"pid", pid_}, {"where", node}, {"downtime_ms", last_downtime_ms_}, {"phases_ms", *phases}});
            TrimLater();
          }, std::chrono::seconds(60));
        });
      });
    });
  }

  // DFSA files: the remote's fd table is `files` (fetched from it). A home fd
  // that was a DFSA fd and is not there any more was closed by the program
  // and is closed here too (its close normally reached the home already);
  // with `apply`, each home fd takes the remote's offset, status flags and
  // close-on-exec flag (coming home). REQUIRES: the deputy stopped, with its
  // scratch mapped.
  void ReconcileFiles(const std::vector<FileImage>& files, bool apply) {
    tracee_->set_gadget(scratch_.gadget());
    std::set<int> now;
    for (const auto& f : files) now.insert(f.fd);
    for (int fd : dfsa_fds_)
      if (!now.count(fd)) tracee_->Syscall(SYS_close, fd).status().IgnoreError();
    dfsa_fds_ = now;
    if (!apply) return;
    constexpr uint32_t kSettable = O_APPEND | O_NONBLOCK | O_ASYNC | O_DIRECT | O_NOATIME;
    for (const auto& f : files) {
      auto r = tracee_->Syscall(SYS_lseek, f.fd, f.offset, SEEK_SET);
      if (!r.ok() || *r < 0) {
        spdlog::warn("home: DFSA fd {} ({}) of {}: could not take the remote's offset {}", f.fd,
                     f.path, pid_, f.offset);
        continue;
      }
      auto fl = tracee_->Syscall(SYS_fcntl, f.fd, F_GETFL);
      if (fl.ok() && *fl >= 0 && (static_cast<uint32_t>(*fl) & kSettable) != (f.flags & kSettable))
        tracee_
            ->Syscall(SYS_fcntl, f.fd, F_SETFL,
                      (static_cast<uint32_t>(*fl) & ~kSettable) | (f.flags & kSettable))
            .status()
            .IgnoreError();
      tracee_->Syscall(SYS_fcntl, f.fd, F_SETFD, f.cloexec ? FD_CLOEXEC : 0).status().IgnoreError();
    }
  }

  // ---- From the guest.

  void OnGuestFrame(const wire::Connection::Ptr& c, wire::Frame f) {
    if (c != conn_) {
      if (f.type() == kSyscall) c->ReplyError(f, Status::Error(ESTALE, "not the current remote"));
      return;
    }
    switch (f.type()) {
      case kSyscall: return OnSyscallFrame(c, std::move(f));
      case kExited: {
        if (f.payload.size() < 4) return;
        auto st = DecodeU32(f.payload.substr(0, 4));
        if (!st.ok()) return;
        int status = static_cast<int>(*st);
        std::vector<FileImage> files;
        Status fs = DecodeFiles(std::string_view(f.payload).substr(4), &files);
        if (f.payload.size() > 4 && !fs.ok())
          spdlog::warn("home: exit file table of {}: {}", pid_, fs.ToString());
        spdlog::info("home: remote of {} ended (status {:#x})", pid_, status);
        RunWhenStopped(
            [this, status, files = std::move(files), has_files = f.payload.size() > 4 && fs.ok()] {
              if (has_files) {
                // The open files may be shared with other processes at home (a
                // shell's redirection): they see the offsets the remote left.
                reaping_ = true;
                ReconcileFiles(files, true);
                reaping_ = false;
              }
              EndDeputy(status);
            });
        return;
      }
      case kStopped: {
        // The remote stopped (job control): the deputy stops too, so that
        // the parent's wait sees the process stopped. With SIGSTOP, which
        // no handler catches: the deputy's handlers are not the remote's.
        if (state_ != State::kRemote || exiting_) return;
        stop_deputy_ = true;
        syscall(SYS_tgkill, pid_, pid_, SIGSTOP);
        return;
      }
      case kWantHome: {
        if (state_ != State::kRemote) return;
        spdlog::info("home: remote of {} needs its home ({})", pid_, f.payload);
        Move(cfg_.node_id, [](Result<json> r) {
          if (!r.ok()) spdlog::error("home: bringing the process home failed: {}", r.status().ToString());
        });
        return;
      }
      default:
        if (!f.is_response()) c->ReplyError(f, Status::Error(ENOSYS, "unexpected frame"));
    }
  }

  void OnGuestClosed(const wire::Connection::Ptr& c, const Status& why) {
    if (failed_conns_.count(c.get()) || c != conn_ || exiting_) return;
    spdlog::error("home: lost the remote of {} on node {}: {}", pid_, where_, why.ToString());
    last_error_ = "remote lost with node " + std::to_string(where_) + ": " + why.ToString();
    conn_.reset();
    RunWhenStopped([this] { EndDeputy(kLostRemoteExitStatus << 8); });
  }

  // The remote ended with wait status `status`: the deputy ends the same way.
  void EndDeputy(int status) {
    exiting_ = true;
    reaping_ = true;
    CpuState s;
    s.gp = parked_base_;
    if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL) {
      int sig = WTERMSIG(status);
      KernelSigaction dfl{};
      tracee_->WriteMem(scratch_.buffer() + 16, &dfl, sizeof dfl).IgnoreError();
      tracee_->set_gadget(scratch_.gadget());
      tracee_->Syscall(SYS_rt_sigaction, sig, scratch_.buffer() + 16, 0, 8).status().IgnoreError();
      uint64_t none = 0;
      ptrace(PTRACE_SETSIGMASK, pid_, sizeof none, &none);
      dying_sig_ = sig;
      reaping_ = false;
      Park();
      syscall(SYS_tgkill, pid_, pid_, sig);
      return;
    }
    reaping_ = false;
    if (WIFSIGNALED(status)) {
      kill(pid_, SIGKILL);
      return;
    }
    s.SetUpSyscall(scratch_.gadget(), SYS_exit_group, {static_cast<uint64_t>(WEXITSTATUS(status)), 0, 0, 0, 0, 0});
    SetGpRegs(pid_, s.gp).IgnoreError();
    tracee_->Cont().IgnoreError();
  }


  asio::io_context& io_;
  SupervisorConfig cfg_;
  pid_t pid_;
  uint32_t initial_node_;
  long base_options_ = 0;  // the tracee's ptrace options at home
  bool stop_deputy_ = false;  // kStopped's SIGSTOP is on its way to the deputy
  asio::signal_set sigchld_;
  asio::steady_timer tick_;
  control::ControlServer control_;
  KernelFeatures k_;
  std::string secret_;
  std::unique_ptr<Tracee> tracee_;
  std::string command_;
  State state_ = State::kHome;
  Dep dep_ = Dep::kStopped;
  bool deputy_active_ = false;
  bool reaping_ = false;
  bool interrupted_for_move_ = false;
  bool freezing_remote_ = false;  // a move away from a remote is under way
  bool exiting_ = false;
  int dying_sig_ = 0;
  uint32_t where_ = 0;
  int moves_ = 0;
  uint64_t forwarded_ = 0;
  std::map<int, uint64_t> forwarded_by_nr_;  // forwarded calls by syscall number
  std::set<int> dfsa_fds_;                   // fds the remote uses directly (DFSA)
  bool dfsa_enabled_ = true;
  // Pages sent before the freeze (kPrecopy); MFS_MIGRATE_PRECOPY=0 in the
  // environment (mfsd's, passed on) turns it off, for comparisons.
  bool precopy_enabled_ = [] {
    const char* v = getenv("MFS_MIGRATE_PRECOPY");
    return !(v && std::string_view(v) == "0");
  }();
  std::vector<std::pair<uint64_t, uint64_t>> precopied_;  // (addr, hash) at the guest, ascending
  // Pages the pre-copy's last scan found written (and write-protected
  // again) without another round: still "written" at the freeze.
  std::vector<std::pair<uint64_t, uint64_t>> carried_written_;
  std::unique_ptr<WriteTracker> tracker_;                  // pages written since the pre-copy began
  // MFS_MIGRATE_WRITE_TRACKING=0: the pre-copy compares hashes only.
  uint64_t precopy_round_pages_ = [] {
    const char* v = getenv("MFS_MIGRATE_PRECOPY_ROUND_PAGES");
    return v && *v ? std::max<uint64_t>(1, std::strtoull(v, nullptr, 10)) : uint64_t{64};
  }();
  bool write_tracking_enabled_ = [] {
    const char* v = getenv("MFS_MIGRATE_WRITE_TRACKING");
    return !(v && std::string_view(v) == "0");
  }();
  double last_downtime_ms_ = -1;
  std::string last_error_;
  CpuState saved_;
  std::vector<uint32_t> frozen_pending_;  // taken out at the freeze; re-raised if we resume
  std::vector<std::pair<pid_t, uint32_t>> frozen_thread_pending_;  // (tid, signal), the same per thread
  std::array<itimerval, 3> frozen_itimers_{};  // stopped by the capture; re-armed if we resume
  bool timers_stopped_ = false;
  // The other threads while a move away is under way (seized, stopped).
  std::vector<std::unique_ptr<Tracee>> thread_tracees_;
  std::vector<FrozenThread> frozen_threads_;
  // Threads re-created at home: real tid -> the tid the program knows.
  std::map<pid_t, pid_t> vtid_;
  user_regs_struct parked_base_{};
  Scratch scratch_;
  wire::Connection::Ptr conn_;
  std::set<const void*> failed_conns_;
  std::deque<std::pair<wire::Connection::Ptr, wire::Frame>> calls_;
  std::optional<Current> current_;
  uint32_t current_seq_ = 0;  // current_'s number in the channel
  std::unique_ptr<DeputyChannel> channel_;
  bool channel_failed_ = false;
  bool direct_enabled_ = true;            // offer direct paths (deputy.h)
  bool direct_offered_ = false;           // a kDirect call is out
  bool death_seen_ = false;               // OnDeath ran
  const void* direct_refused_ = nullptr;  // the connection that refused or lost one
  std::optional<Current> deferred_;  // a call cut by a signal, answered after it
  int64_t deferred_ret_ = 0;
  std::deque<std::function<void()>> when_stopped_;
  int exit_code_ = 0;

 public:
  void set_where(uint32_t w) { where_ = w; }
};

}  // namespace

int RunHomeSupervisor(const SupervisorConfig& cfg, int pid, uint32_t initial_node, int ready_fd) {
  asio::io_context io;
  Home h(io, cfg, pid, initial_node);
  h.set_where(cfg.node_id);
  Status s = h.Start();
  if (!s.ok()) {
    spdlog::error("home supervisor for {}: {}", pid, s.ToString());
    return 1;
  }
  if (ready_fd >= 0) {
    char c = 1;
    if (write(ready_fd, &c, 1) != 1) return 1;
    close(ready_fd);
  }
  io.run();
  return h.exit_code();
}

}  // namespace mfs::migrate
