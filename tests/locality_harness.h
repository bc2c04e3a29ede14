// Test helpers for the locality integration tests: a real mfsd process with
// a private config, state directory and control socket, and a bounded
// command runner. Until the cluster fixture (tests/cluster_fixture.h) is on
// main, these start plain mfsd daemons on 127.0.0.x without namespaces: the
// locality service needs no FUSE mount for the recorder -> control socket ->
// LocalityService path.
//
// Every process started is stopped by its owner's destructor; every wait is
// bounded. Thread-compatible.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mfs/base/status.h"

namespace mfs::testing {

using namespace std::chrono_literals;

struct CmdResult {
  int exit_code = -1;  // 128 + signal if killed
  bool timed_out = false;
  std::string out, err;
  std::string Describe() const;
};

// Runs argv with stdin /dev/null and `env` added to the environment; kills
// the process group at the deadline.
CmdResult RunCmd(const std::vector<std::string>& argv, std::chrono::milliseconds timeout = 60s,
                 const std::vector<std::string>& env = {});

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
             std::chrono::milliseconds every = 50ms);

std::string BinDir();
// Creates a private temporary directory; removes it in the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A free TCP port on 127.0.0.1..3 (all three), or 0.
uint16_t FreePort();

class Mfsd {
 public:
  // Node `id` listens on 127.0.0.<id>:port; files go under dir/node<id>.
  Mfsd(std::string dir, uint32_t id, uint16_t port, std::vector<uint32_t> peers,
       std::string locality_toml);
  ~Mfsd();
  Mfsd(const Mfsd&) = delete;
  Mfsd& operator=(const Mfsd&) = delete;

  // Starts mfsd and waits until its control socket answers.
  Status Start();
  // SIGTERM, then waits (bounded) for a clean exit; returns its exit code.
  int Stop();
  void Kill();
  bool running() const { return pid_ > 0; }

  Result<nlohmann::json> Control(const nlohmann::json& request) const;
  const std::string& socket() const { return socket_; }
  const std::string& state_dir() const { return state_; }
  std::string Log() const;

 private:
  std::string dir_, socket_, state_, config_, log_;
  uint32_t id_;
  pid_t pid_ = 0;
};

}  // namespace mfs::testing
