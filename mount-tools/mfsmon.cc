// mfsmon — live cluster view in the terminal (like openMosix's mosmon). See
// man/mfsmon.1.
//
// Plain ANSI escapes (alternate screen, cursor home, erase line): works over
// ssh and in any terminal emulator without terminfo. The terminal is put in
// non-canonical, no-echo mode and restored on every way out: q, Ctrl-C
// (read as a byte, ISIG off), SIGINT/SIGTERM/SIGHUP (flag, then normal exit).
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>

#include "mount-tools/locality_view.h"

using namespace mfs::tools;

namespace {

volatile sig_atomic_t g_stop = 0;
volatile sig_atomic_t g_resized = 0;
void OnStop(int) { g_stop = 1; }
void OnWinch(int) { g_resized = 1; }

void WriteAll(const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(STDOUT_FILENO, s.data() + off, s.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    off += static_cast<size_t>(n);
  }
}

// Owns the terminal mode: restores it in the destructor.
class RawTerminal {
 public:
  RawTerminal() {
    if (::tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO | ISIG);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    if (::tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) == 0) active_ = true;
    WriteAll("\033[?1049h\033[?25l\033[H\033[2J");  // alternate screen, hide cursor
  }
  ~RawTerminal() {
    WriteAll("\033[0m\033[?25h\033[?1049l");  // show cursor, leave alternate screen
    if (active_) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_);
  }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

 private:
  termios saved_{};
  bool active_ = false;
};

void Size(int* cols, int* rows) {
  winsize ws{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
    *cols = ws.ws_col;
    *rows = ws.ws_row;
  } else {
    *cols = 80;
    *rows = 24;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mfsmon — live view of the cluster: load, free memory, I/O rate and locality"};
  FetchOptions fo;
  fo.all = true;
  double interval = 1.0;
  bool local_only = false;
  app.add_option("--socket", fo.socket,
                 "control socket (default $MFS_SOCKET or /run/mfs/mfsd.sock)");
  app.add_option("-d,--delay", interval, "seconds between refreshes (default 1)")
      ->check(CLI::Range(0.1, 3600.0));
  app.add_flag("-l,--local", local_only, "this node only (do not ask the peers)");
  CLI11_PARSE(app, argc, argv);
  fo.all = !local_only;

  if (!::isatty(STDIN_FILENO) || !::isatty(STDOUT_FILENO)) {
    fprintf(stderr, "mfsmon: needs a terminal (use mfsstat for scripts)\n");
    return 1;
  }
  // Fail early, before taking over the screen, if mfsd is not there.
  auto first = FetchView(fo);
  if (!first.ok()) {
    fprintf(stderr, "mfsmon: %s\n", first.status().ToString().c_str());
    return 1;
  }

  struct sigaction sa {};
  sa.sa_handler = OnStop;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGHUP, &sa, nullptr);
  sa.sa_handler = OnWinch;
  ::sigaction(SIGWINCH, &sa, nullptr);

  std::string last_error;
  {
    RawTerminal term;
    ClusterView view = std::move(first).value();
    auto next = std::chrono::steady_clock::now();
    while (!g_stop) {
      auto now = std::chrono::steady_clock::now();
      if (now >= next) {
        auto v = FetchView(fo);
        if (v.ok()) {
          view = std::move(v).value();
          last_error.clear();
        } else {
          last_error = v.status().ToString();
        }
        next = now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                         std::chrono::duration<double>(interval));
        g_resized = 1;
      }
      if (g_resized) {
        g_resized = 0;
        int cols, rows;
        Size(&cols, &rows);
        std::string screen = "\033[H" + RenderMonitor(view, cols, rows, interval);
        if (!last_error.empty() && rows > 2) {
          screen += "\033[" + std::to_string(rows) + ";1H\033[7mmfsd: " +
                    last_error.substr(0, static_cast<size_t>(std::max(0, cols - 7))) +
                    "\033[0m\033[K";
        }
        screen += "\033[J";
        WriteAll(screen);
      }
      pollfd p{STDIN_FILENO, POLLIN, 0};
      int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    next - std::chrono::steady_clock::now())
                                    .count());
      int r = ::poll(&p, 1, std::clamp(ms, 0, 200));
      if (r > 0 && (p.revents & (POLLHUP | POLLERR))) break;
      if (r > 0) {
        char buf[64];
        ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
        if (n == 0) break;  // terminal gone
        for (ssize_t i = 0; i < n; ++i) {
          if (buf[i] == 'q' || buf[i] == 'Q' || buf[i] == 3 /* Ctrl-C */ || buf[i] == 4) {
            g_stop = 1;
          } else if (buf[i] == ' ' || buf[i] == 'r') {
            next = std::chrono::steady_clock::now();  // refresh now
          } else if (buf[i] == '+') {
            interval = std::min(3600.0, interval * 2);
            g_resized = 1;
          } else if (buf[i] == '-') {
            interval = std::max(0.1, interval / 2);
            g_resized = 1;
          }
        }
      }
    }
  }
  return 0;
}
