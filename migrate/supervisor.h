// The supervisors: one process per migratable process, so that an mfsd
// restart never kills or detaches a user process.
//
//   HomeSupervisor   runs on the process's home node. While the process is at
//                    home it is PTRACE_SEIZEd and untraced (no syscall stops:
//                    zero overhead); it only passes signals on. It moves the
//                    process (freeze, capture, send, confirm) and, while the
//                    process is away, keeps the frozen original as the deputy:
//                    parked in rt_sigsuspend so that signals sent to the home
//                    pid stop it and are forwarded, and woken (PTRACE_INTERRUPT)
//                    to execute forwarded system calls.
//   GuestSupervisor  runs on the node the process moved to, spawned by that
//                    node's mfsd (so inside its mount namespace and cgroup). It
//                    restores the image in a fresh process, installs the
//                    seccomp filter, forwards trapped calls to the home and
//                    reports the remote's exit.
// The two talk over one authenticated wire::Connection (protocol.h).
//
// Threading: each supervisor runs one io_context on one thread, and every
// ptrace call is made from it (only the tracing thread may). Handlers never
// block on the network; they may block briefly on their own tracee (a few
// injected system calls).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "mfs/base/asio.h"
#include "mfs/base/status.h"

namespace mfs::migrate {

struct SupervisorConfig {
  uint32_t node_id = 0;
  std::string address = "127.0.0.1";       // this node's address (bind + listen)
  std::string secret_file;                 // cluster secret
  std::string run_dir = "/run/mfs";        // supervisor sockets live in run_dir/sup
  std::string mfsd_socket;                 // the local mfsd's control socket
};

// The socket a supervisor answers on: run_dir/sup/<pid>.sock (home) and
// run_dir/sup/guest-<pid>.sock (guest, by its local pid).
std::string HomeSocketPath(const std::string& run_dir, int pid);
std::string GuestSocketPath(const std::string& run_dir, int pid);

// Runs a home supervisor for `pid` until the process exits. Writes one byte
// to `ready_fd` (if >= 0) once the process is seized and the socket listens.
// A non-zero `initial_node` moves the process there after its next execve
// (mfsrun --node).
int RunHomeSupervisor(const SupervisorConfig& cfg, int pid, uint32_t initial_node, int ready_fd);

// Runs a guest supervisor: listens on cfg.address, port 0; writes the port
// (u16, little-endian) to `ready_fd`; serves one home connection.
int RunGuestSupervisor(const SupervisorConfig& cfg, uint32_t home_node, int home_pid, int ready_fd);

// Exit status of a deputy whose remote was lost with its node (EHOSTDOWN).
inline constexpr int kLostRemoteExitStatus = 112;

}  // namespace mfs::migrate
