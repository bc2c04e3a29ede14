#include "mfs/client/interest_map.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <signal.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <random>
#include <utility>

#include "mfs/base/unique_fd.h"

namespace mfs::client {

struct InterestMap::Header {
  char magic[8];
  uint32_t slots;
  std::atomic<uint32_t> watch_all;  // peers that watch every change
  uint64_t id;
};

static constexpr char kMagic[8] = {'M', 'F', 'S', 'I', 'N', 'T', 'R', '1'};
static constexpr size_t kSlotsOffset = 64;  // the header, padded to a cache line
static constexpr size_t kMapSize = kSlotsOffset + InterestMap::kSlots * sizeof(uint32_t);

std::string InterestMap::PathFor(const std::string& control_socket) {
  return control_socket + ".interest";
}

std::string InterestMap::MountPathFor(const std::string& mfsd_map, uint32_t pid) {
  return mfsd_map + "." + std::to_string(pid);
}

int InterestMap::RemoveDeadMountMaps(const std::string& mfsd_map) {
  namespace fs = std::filesystem;
  const fs::path base(mfsd_map);
  const std::string prefix = base.filename().string() + ".";
  std::error_code ec;
  int removed = 0;
  for (const auto& e : fs::directory_iterator(base.parent_path(), ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.size() > 10 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const unsigned long pid = std::stoul(digits);
    if (pid > INT32_MAX || (pid != 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH)))
      continue;
    if (std::error_code rec; fs::remove(e.path(), rec)) ++removed;
  }
  return removed;
}

InterestMap::InterestMap(void* base, bool writable)
    : base_(base),
      slots_(reinterpret_cast<std::atomic<uint32_t>*>(static_cast<char*>(base) + kSlotsOffset)),
      writable_(writable) {}

InterestMap::~InterestMap() { Unmap(); }

InterestMap::InterestMap(InterestMap&& o) noexcept
    : base_(std::exchange(o.base_, nullptr)),
      slots_(std::exchange(o.slots_, nullptr)),
      writable_(o.writable_),
      remove_path_(std::exchange(o.remove_path_, std::string())) {}

InterestMap& InterestMap::operator=(InterestMap&& o) noexcept {
  if (this != &o) {
    Unmap();
    base_ = std::exchange(o.base_, nullptr);
    slots_ = std::exchange(o.slots_, nullptr);
    writable_ = o.writable_;
    remove_path_ = std::exchange(o.remove_path_, std::string());
  }
  return *this;
}

void InterestMap::Unmap() {
  if (base_) munmap(base_, kMapSize);
  if (!remove_path_.empty()) ::unlink(remove_path_.c_str());
  base_ = nullptr;
  slots_ = nullptr;
  remove_path_.clear();
}

// Only a regular file of our own, never through a symlink: mfsd clears what
// it opens, and must not clear anything else.
static Result<UniqueFd> OpenMapFile(const std::string& path, int flags) {
  UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd) return Status::FromErrno("interest map " + path);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return Status::FromErrno("interest map " + path);
  if (!S_ISREG(st.st_mode) || st.st_uid != geteuid())
    return Status::PermissionDenied("interest map " + path + ": not a regular file of ours");
  return fd;
}

Result<InterestMap> InterestMap::Create(const std::string& path, bool remove_when_done) {
  MFS_ASSIGN_OR_RETURN(UniqueFd fd, OpenMapFile(path, O_RDWR | O_CREAT));
  auto fail = [&](const char* what) {
    Status s = Status::FromErrno(what + path);
    if (remove_when_done) ::unlink(path.c_str());
    return s;
  };
  if (ftruncate(fd.get(), kMapSize) != 0) return fail("interest map ");
  void* base = mmap(nullptr, kMapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (base == MAP_FAILED) return fail("mmap interest map ");
  InterestMap m(base, true);
  if (remove_when_done) m.remove_path_ = path;
  Header* h = m.header();
  // Cleared in place: whoever maps it now sees "held" until the new id and
  // magic are in (an id it does not know makes it report everything).
  std::memset(h->magic, 0, sizeof h->magic);
  h->watch_all.store(1, std::memory_order_seq_cst);
  for (uint32_t i = 0; i < kSlots; ++i) m.slots_[i].store(0, std::memory_order_relaxed);
  h->slots = kSlots;
  std::random_device rd;
  h->id = (static_cast<uint64_t>(rd()) << 32 | rd()) | 1;  // never 0: "no map"
  h->watch_all.store(0, std::memory_order_seq_cst);
  std::memcpy(h->magic, kMagic, sizeof kMagic);
  return m;
}

Result<InterestMap> InterestMap::Open(const std::string& path, uint64_t id) {
  MFS_ASSIGN_OR_RETURN(UniqueFd fd, OpenMapFile(path, O_RDONLY));
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return Status::FromErrno("interest map " + path);
  if (static_cast<size_t>(st.st_size) < kMapSize)
    return Status::Corruption("interest map " + path + ": too short");
  void* base = mmap(nullptr, kMapSize, PROT_READ, MAP_SHARED, fd.get(), 0);
  if (base == MAP_FAILED) return Status::FromErrno("mmap interest map " + path);
  InterestMap m(base, false);
  const Header* h = m.header();
  if (std::memcmp(h->magic, kMagic, sizeof kMagic) != 0 || h->slots != kSlots)
    return Status::Corruption("interest map " + path + ": not an mfs interest map");
  if (h->id != id) return Status::Error(ESTALE, "interest map " + path + ": not this mfsd's");
  return m;
}

uint64_t InterestMap::id() const { return slots_ ? header()->id : 0;
}

// FNV-1a: stable across builds, so mfsd and the mount always agree.
uint32_t InterestMap::Slot(std::string_view key) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : key) h = (h ^ c) * 1099511628211ull;
  return static_cast<uint32_t>(h ^ (h >> 32)) & (kSlots - 1);
}

void InterestMap::Add(std::string_view key) {
  if (slots_ && writable_) slots_[Slot(key)].fetch_add(1, std::memory_order_seq_cst);
}

// Never below zero: a stuck non-zero counter costs reports, a wrapped one
// would hide changes.
void InterestMap::Decrement(std::atomic<uint32_t>& counter) {
  uint32_t v = counter.load(std::memory_order_relaxed);
  while (v != 0 && !counter.compare_exchange_weak(v, v - 1, std::memory_order_seq_cst)) {
  }
}

void InterestMap::Remove(std::string_view key) {
  if (slots_ && writable_) Decrement(slots_[Slot(key)]);
}

void InterestMap::AddAll() {
  if (slots_ && writable_) header()->watch_all.fetch_add(1, std::memory_order_seq_cst);
}

void InterestMap::RemoveAll() {
  if (slots_ && writable_) Decrement(header()->watch_all);
}

bool InterestMap::MayBeHeld(std::string_view key) const {
  if (!slots_) return true;
  return header()->watch_all.load(std::memory_order_seq_cst) != 0 ||
         slots_[Slot(key)].load(std::memory_order_seq_cst) != 0;
}

}  // namespace mfs::client
