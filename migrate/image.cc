#include "migrate/image.h"

#include <xxhash.h>

#include <cstring>

#include "mfs/base/coding.h"

namespace mfs::migrate {
namespace {
// Bounds that no real process exceeds; anything larger is malformed input.
constexpr uint32_t kMaxThreads = 4096;
constexpr uint32_t kMaxVmas = 1u << 20;
constexpr uint32_t kMaxGroups = 65536;
constexpr uint32_t kMaxRunPages = 1u << 20;
constexpr uint32_t kMaxFiles = 1u << 20;
}  // namespace

namespace {

Status ReadFiles(Reader& r, std::vector<FileImage>* files) {
  uint32_t nfiles = r.U32();
  if (!r.ok() || nfiles > kMaxFiles) return Status::Corruption("image: file count");
  for (uint32_t i = 0; i < nfiles; ++i) {
    FileImage f;
    f.fd = static_cast<int32_t>(r.U32());
    f.group = static_cast<int32_t>(r.U32());
    f.flags = r.U32();
    uint8_t cloexec = r.U8();
    f.offset = r.U64();
    f.path = std::string(r.Bytes());
    if (!r.ok()) return Status::Corruption("image: truncated file table");
    if (f.fd < 0 || f.group < 0 || f.group > f.fd || cloexec > 1 || f.path.empty() ||
        f.path[0] != '/')
      return Status::Corruption("image: bad file entry");
    f.cloexec = cloexec == 1;
    files->push_back(std::move(f));
  }
  return Status::OK();
}

}  // namespace

void EncodeFiles(const std::vector<FileImage>& files, std::string* out) {
  Writer w(out);
  w.U32(static_cast<uint32_t>(files.size()));
  for (const auto& f : files) {
    w.U32(static_cast<uint32_t>(f.fd));
    w.U32(static_cast<uint32_t>(f.group));
    w.U32(f.flags);
    w.U8(f.cloexec ? 1 : 0);
    w.U64(f.offset);
    w.Bytes(f.path);
  }
}

Status DecodeFiles(std::string_view bytes, std::vector<FileImage>* out) {
  Reader r(bytes);
  MFS_RETURN_IF_ERROR(ReadFiles(r, out));
  if (!r.done()) return Status::Corruption("file table: trailing bytes");
  return Status::OK();
}

uint64_t HashPage(const void* page) { return XXH3_64bits(page, kPageSize); }

size_t ProcessImage::page_count() const {
  size_t n = 0;
  for (const auto& r : pages) n += r.pages();
  return n;
}

std::string EncodeHeader(const ProcessImage& img) {
  std::string out;
  Writer w(&out);
  w.U32(kImageMagic);
  w.U32(kImageVersion);
  w.U32(static_cast<uint32_t>(img.home_pid));
  w.Bytes(img.comm);
  w.Bytes(img.exe);
  w.U32(static_cast<uint32_t>(img.threads.size()));
  for (const auto& t : img.threads) {
    w.U32(static_cast<uint32_t>(t.tid));
    t.cpu.Encode(&out);
    w.U64(t.sigmask);
    w.U64(t.rseq_ptr);
    w.U32(t.rseq_len);
    w.U32(t.rseq_sig);
    w.U64(t.robust_head);
    w.U64(t.robust_len);
    w.U64(t.tid_address);
    w.U64(t.altstack_sp);
    w.U64(t.altstack_size);
    w.U32(static_cast<uint32_t>(t.altstack_flags));
    w.U32(static_cast<uint32_t>(t.pending_signals.size()));
    for (uint32_t sig : t.pending_signals) w.U32(sig);
  }
  for (const auto& a : img.actions) {
    w.U64(a.handler);
    w.U64(a.flags);
    w.U64(a.restorer);
    w.U64(a.mask);
  }
  for (const auto& t : img.itimers) {
    w.I64(t.it_interval.tv_sec);
    w.I64(t.it_interval.tv_usec);
    w.I64(t.it_value.tv_sec);
    w.I64(t.it_value.tv_usec);
  }
  w.U32(static_cast<uint32_t>(img.rlimits.size()));
  for (const auto& r : img.rlimits) {
    w.U64(r.rlim_cur);
    w.U64(r.rlim_max);
  }
  const MmFields& m = img.mm;
  for (uint64_t v : {m.start_code, m.end_code, m.start_data, m.end_data, m.start_brk, m.brk,
                     m.start_stack, m.arg_start, m.arg_end, m.env_start, m.env_end})
    w.U64(v);
  w.Bytes(img.auxv);
  for (int i = 0; i < 3; ++i) w.U32(img.uid[i]);
  for (int i = 0; i < 3; ++i) w.U32(img.gid[i]);
  w.U32(static_cast<uint32_t>(img.groups.size()));
  for (uint32_t g : img.groups) w.U32(g);
  w.U32(img.personality);
  w.U32(static_cast<uint32_t>(img.vmas.size()));
  for (const auto& v : img.vmas) {
    w.U64(v.start);
    w.U64(v.end);
    w.U32(static_cast<uint32_t>(v.prot));
    w.U32(v.flags);
    w.U64(v.offset);
    w.Bytes(v.path);
  }
  w.U32(static_cast<uint32_t>(img.specials.size()));
  for (const auto& s : img.specials) {
    w.Bytes(s.name);
    w.U64(s.start);
    w.U64(s.end);
  }
  w.U32(static_cast<uint32_t>(img.pending_signals.size()));
  for (uint32_t sig : img.pending_signals) w.U32(sig);
  EncodeFiles(img.files, &out);
  return out;
}

Status DecodeHeader(std::string_view bytes, ProcessImage* img) {
  Reader r(bytes);
  if (r.U32() != kImageMagic) return Status::Corruption("image: bad magic");
  uint32_t version = r.U32();
  if (version != kImageVersion)
    return Status::Corruption("image: unsupported version " + std::to_string(version));
  img->home_pid = static_cast<pid_t>(r.U32());
  img->comm = std::string(r.Bytes());
  img->exe = std::string(r.Bytes());
  uint32_t nthreads = r.U32();
  if (!r.ok() || nthreads == 0 || nthreads > kMaxThreads) return Status::Corruption("image: thread count");
  img->threads.resize(nthreads);
  for (auto& t : img->threads) {
    t.tid = static_cast<pid_t>(r.U32());
    if (!r.ok() || !t.cpu.Decode(r)) return Status::Corruption("image: cpu state");
    t.sigmask = r.U64();
    t.rseq_ptr = r.U64();
    t.rseq_len = r.U32();
    t.rseq_sig = r.U32();
    t.robust_head = r.U64();
    t.robust_len = r.U64();
    t.tid_address = r.U64();
    t.altstack_sp = r.U64();
    t.altstack_size = r.U64();
    t.altstack_flags = static_cast<int32_t>(r.U32());
    uint32_t np = r.U32();
    if (!r.ok() || np > 1024) return Status::Corruption("image: thread pending signals");
    t.pending_signals.resize(np);
    for (auto& sig : t.pending_signals) {
      sig = r.U32();
      if (r.ok() && (sig == 0 || sig > 64)) return Status::Corruption("image: bad signal number");
    }
  }
  for (auto& a : img->actions) {
    a.handler = r.U64();
    a.flags = r.U64();
    a.restorer = r.U64();
    a.mask = r.U64();
  }
  for (auto& t : img->itimers) {
    t.it_interval.tv_sec = r.I64();
    t.it_interval.tv_usec = r.I64();
    t.it_value.tv_sec = r.I64();
    t.it_value.tv_usec = r.I64();
  }
  uint32_t nlim = r.U32();
  if (!r.ok() || nlim > 64) return Status::Corruption("image: rlimits");
  img->rlimits.resize(nlim);
  for (auto& l : img->rlimits) {
    l.rlim_cur = r.U64();
    l.rlim_max = r.U64();
  }
  MmFields& m = img->mm;
  for (uint64_t* v : {&m.start_code, &m.end_code, &m.start_data, &m.end_data, &m.start_brk, &m.brk,
                      &m.start_stack, &m.arg_start, &m.arg_end, &m.env_start, &m.env_end})
    *v = r.U64();
  img->auxv = std::string(r.Bytes());
  for (int i = 0; i < 3; ++i) img->uid[i] = r.U32();
  for (int i = 0; i < 3; ++i) img->gid[i] = r.U32();
  uint32_t ngroups = r.U32();
  if (!r.ok() || ngroups > kMaxGroups) return Status::Corruption("image: groups");
  img->groups.resize(ngroups);
  for (auto& g : img->groups) g = r.U32();
  img->personality = r.U32();
  uint32_t nvmas = r.U32();
  if (!r.ok() || nvmas > kMaxVmas) return Status::Corruption("image: vma count");
  img->vmas.resize(nvmas);
  for (auto& v : img->vmas) {
    v.start = r.U64();
    v.end = r.U64();
    v.prot = static_cast<int32_t>(r.U32());
    v.flags = r.U32();
    v.offset = r.U64();
    v.path = std::string(r.Bytes());
    if (r.ok() && (v.start >= v.end || v.start % kPageSize || v.end % kPageSize))
      return Status::Corruption("image: bad vma range");
  }
  uint32_t nspecial = r.U32();
  if (!r.ok() || nspecial > 16) return Status::Corruption("image: special mappings");
  img->specials.resize(nspecial);
  for (auto& s : img->specials) {
    s.name = std::string(r.Bytes());
    s.start = r.U64();
    s.end = r.U64();
  }
  uint32_t npending = r.U32();
  if (!r.ok() || npending > 1024) return Status::Corruption("image: pending signals");
  img->pending_signals.resize(npending);
  for (auto& sig : img->pending_signals) {
    sig = r.U32();
    if (r.ok() && (sig == 0 || sig > 64)) return Status::Corruption("image: bad signal number");
  }
  MFS_RETURN_IF_ERROR(ReadFiles(r, &img->files));
  if (!r.ok()) return Status::Corruption("image: truncated header");
  if (!r.done()) return Status::Corruption("image: trailing bytes in header");
  return Status::OK();
}

void EncodePageRun(const PageRun& run, std::string* out) {
  Writer w(out);
  w.U64(run.addr);
  w.U32(static_cast<uint32_t>(run.pages()));
  for (uint64_t h : run.hashes) w.U64(h);
  w.Raw(run.data);
}

namespace {

// The runs of `bytes`, hashes verified; data views into `bytes`.
struct RunView {
  uint64_t addr;
  const char* hashes;  // n × u64
  std::string_view data;
};

Status ParseRuns(std::string_view bytes, std::vector<RunView>* out) {
  Reader r(bytes);
  while (r.ok() && !r.done()) {
    RunView v;
    v.addr = r.U64();
    uint32_t n = r.U32();
    if (!r.ok() || n == 0 || n > kMaxRunPages || v.addr % kPageSize)
      return Status::Corruption("page batch: bad run header");
    std::string_view hashes = r.Raw(static_cast<size_t>(n) * 8);
    v.data = r.Raw(static_cast<size_t>(n) * kPageSize);
    if (!r.ok()) return Status::Corruption("page batch: truncated");
    v.hashes = hashes.data();
    for (uint32_t i = 0; i < n; ++i)
      if (HashPage(v.data.data() + i * kPageSize) != DecodeFixed64(v.hashes + i * 8))
        return Status::Corruption("page batch: hash mismatch at " + std::to_string(v.addr + i * kPageSize));
    out->push_back(v);
  }
  if (!r.ok()) return Status::Corruption("page batch: truncated");
  return Status::OK();
}

}  // namespace

Status DecodePageRuns(std::string_view bytes, std::vector<PageRun>* out) {
  std::vector<RunView> runs;
  MFS_RETURN_IF_ERROR(ParseRuns(bytes, &runs));
  for (const RunView& v : runs) {
    PageRun run;
    run.addr = v.addr;
    size_t n = v.data.size() / kPageSize;
    run.hashes.resize(n);
    for (size_t i = 0; i < n; ++i) run.hashes[i] = DecodeFixed64(v.hashes + i * 8);
    run.data.assign(v.data);
    out->push_back(std::move(run));
  }
  return Status::OK();
}

Status ForEachPageRun(std::string_view bytes,
                      const std::function<Status(uint64_t addr, std::string_view data)>& fn) {
  std::vector<RunView> runs;
  MFS_RETURN_IF_ERROR(ParseRuns(bytes, &runs));
  for (const RunView& v : runs) MFS_RETURN_IF_ERROR(fn(v.addr, v.data));
  return Status::OK();
}

}  // namespace mfs::migrate
