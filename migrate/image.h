// ProcessImage: everything a migration carries, and its encoding.
//
// The image of a process (threads: see man/mfs-migration.7) is the CPU and
// per-thread state of each of its threads, its signal and timer state, its mm fields, its list of
// mappings and the private pages that must travel. Clean file-backed pages
// never travel: the destination maps the same file (by path).
//
// Encoding (little-endian, coding.h): the header
//   u32 magic 0x474D4946 ("FIMG"), u32 version (kImageVersion), then the
//   fields in the order of EncodeHeader; the pages travel separately as page
//   batches: u64 addr, u32 npages, npages × u64 xxh3 hash, npages × 4096 bytes.
//   Version 3 ends the header with the open files: u32 count, then per file
//   i32 fd, i32 group, u32 flags, u8 cloexec, u64 offset, bytes path.
// The decoders do no I/O, reject anything malformed with EBADMSG, and check
// every page against its hash.
#pragma once

#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "mfs/base/status.h"
#include "migrate/arch.h"

namespace mfs::migrate {

inline constexpr uint32_t kImageMagic = 0x474D4946;
// 2: per-thread pending signals; 3: open files (DFSA)
inline constexpr uint32_t kImageVersion = 3;
inline constexpr uint64_t kPageSize = 4096;

// The kernel's struct sigaction for rt_sigaction (not glibc's).
struct KernelSigaction {
  uint64_t handler = 0;
  uint64_t flags = 0;
  uint64_t restorer = 0;
  uint64_t mask = 0;
};

// One thread. threads[0] is the main thread (its tid is the home pid); the
// others are re-created by clone at the destination, so their kernel tid
// changes with every move: `tid` is the one the program knows (its first,
// cached by glibc in its pthread struct and at *tid_address), which the
// guest supervisor maps to the real one (gettid, tgkill).
struct ThreadImage {
  pid_t tid = 0;
  CpuState cpu;            // restart-normalised
  uint64_t sigmask = 0;
  uint64_t rseq_ptr = 0;   // 0: none
  uint32_t rseq_len = 0;
  uint32_t rseq_sig = 0;
  uint64_t robust_head = 0;
  uint64_t robust_len = 0;
  uint64_t tid_address = 0;  // set_tid_address / CLONE_CHILD_CLEARTID
  uint64_t altstack_sp = 0;
  uint64_t altstack_size = 0;
  int32_t altstack_flags = 0;
  // Signals pending for this thread only (tgkill), taken out at the freeze.
  std::vector<uint32_t> pending_signals;
};

enum VmaFlags : uint32_t {
  kVmaShared = 1u << 0,
  kVmaFile = 1u << 1,
  kVmaStack = 1u << 2,  // [stack]: mapped MAP_GROWSDOWN
  kVmaHeap = 1u << 3,
};

struct Vma {
  uint64_t start = 0, end = 0;
  int32_t prot = 0;
  uint32_t flags = 0;
  uint64_t offset = 0;
  std::string path;  // file path when kVmaFile; [heap]/[stack]/"" otherwise
};

// Where the kernel's special mappings ([vvar], [vvar_vclock], [vdso]) sit.
struct SpecialMapping {
  std::string name;
  uint64_t start = 0, end = 0;
};

// A run of consecutive private pages with their content and hashes.
struct PageRun {
  uint64_t addr = 0;
  std::vector<uint64_t> hashes;  // one per page
  std::string data;              // hashes.size() * kPageSize bytes
  size_t pages() const { return hashes.size(); }
};

struct MmFields {
  uint64_t start_code = 0, end_code = 0, start_data = 0, end_data = 0;
  uint64_t start_brk = 0, brk = 0, start_stack = 0;
  uint64_t arg_start = 0, arg_end = 0, env_start = 0, env_end = 0;
};

// An open regular file on /mfs that moves with the process (DFSA, see
// man/mfs-migration.7): re-opened by path where the process runs, at the
// same fd number, with the same flags and offset. fds that share one open
// file description (dup) carry the same `group` (the lowest of their
// numbers) and are opened once at the destination.
struct FileImage {
  int32_t fd = -1;
  int32_t group = -1;
  uint32_t flags = 0;  // open flags as /proc/PID/fdinfo shows them (O_CLOEXEC excluded)
  bool cloexec = false;
  uint64_t offset = 0;
  std::string path;  // /mfs/<node>/... (numeric node)
};

struct ProcessImage {
  pid_t home_pid = 0;
  std::string comm;
  std::string exe;
  std::vector<ThreadImage> threads;
  std::array<KernelSigaction, 64> actions{};  // index = signo - 1
  std::array<itimerval, 3> itimers{};         // ITIMER_REAL, _VIRTUAL, _PROF
  std::vector<rlimit> rlimits;                // RLIMIT_NLIMITS entries
  MmFields mm;
  std::string auxv;
  uint32_t uid[3] = {}, gid[3] = {};  // real, effective, saved
  std::vector<uint32_t> groups;
  uint32_t personality = 0;
  std::vector<Vma> vmas;
  std::vector<SpecialMapping> specials;
  std::vector<PageRun> pages;
  // Signals that were pending at the freeze (taken out of the original's
  // queues); raised again in the restored process before it runs.
  std::vector<uint32_t> pending_signals;
  // DFSA files (version 3).
  std::vector<FileImage> files;

  size_t page_count() const;
};

std::string EncodeHeader(const ProcessImage& img);
// Decodes a header into `img` (pages untouched).
Status DecodeHeader(std::string_view bytes, ProcessImage* img);
// Page batches: several runs per batch.
void EncodePageRun(const PageRun& run, std::string* out);
// Appends the runs found in `bytes` to `out`, verifying every hash.
Status DecodePageRuns(std::string_view bytes, std::vector<PageRun>* out);
// Calls fn(addr, data) for each run in `bytes` (data points into `bytes`),
// after verifying all of their hashes; stops at fn's first error.
Status ForEachPageRun(std::string_view bytes,
                      const std::function<Status(uint64_t addr, std::string_view data)>& fn);

uint64_t HashPage(const void* page);

// A file table alone (as at the end of the header): u32 count, then the
// files. Decoding appends to `out` and rejects malformed entries (EBADMSG).
void EncodeFiles(const std::vector<FileImage>& files, std::string* out);
Status DecodeFiles(std::string_view bytes, std::vector<FileImage>* out);

}  // namespace mfs::migrate
