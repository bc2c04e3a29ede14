#include "migrate/transfer.h"

#include "mfs/base/coding.h"
#include "migrate/protocol.h"

namespace mfs::migrate {
namespace {

// (run, first page, pages) pieces of at most kBatchBytes, grouped in batches.
struct Piece {
  size_t run, first, count;
};

std::vector<std::vector<Piece>> Plan(const ProcessImage& img) {
  const size_t per_batch = kBatchBytes / kPageSize;
  std::vector<std::vector<Piece>> batches(1);
  size_t in_batch = 0;
  for (size_t r = 0; r < img.pages.size(); ++r) {
    size_t left = img.pages[r].pages(), first = 0;
    while (left > 0) {
      if (in_batch == per_batch) {
        batches.emplace_back();
        in_batch = 0;
      }
      size_t n = std::min(left, per_batch - in_batch);
      batches.back().push_back({r, first, n});
      in_batch += n;
      first += n;
      left -= n;
    }
  }
  if (batches.back().empty()) batches.pop_back();
  return batches;
}

// The batch as page runs (EncodePageRun's layout), written straight from the
// image, or read from the process into place when the image has no data.
// A run read through a filter: into `tmp`, hashed, and only the sub-runs of
// pages the filter does not take appended to `out`.
Status EncodeFiltered(uint64_t addr, size_t count, const PageReader& read, const PageFilter& filter,
                      std::string* out) {
  thread_local std::string tmp;  // kept: warm after the first batch
  if (tmp.size() < count * kPageSize) tmp.resize(count * kPageSize);
  MFS_RETURN_IF_ERROR(read(addr, tmp.data(), count * kPageSize));
  std::vector<uint64_t> hashes(count);
  std::vector<bool> send(count);
  for (size_t k = 0; k < count; ++k) {
    hashes[k] = HashPage(tmp.data() + k * kPageSize);
    send[k] = !filter(addr + k * kPageSize, hashes[k]);
  }
  Writer w(out);
  for (size_t k = 0; k < count;) {
    if (!send[k]) {
      ++k;
      continue;
    }
    size_t j = k;
    while (j < count && send[j]) ++j;
    w.U64(addr + k * kPageSize);
    w.U32(static_cast<uint32_t>(j - k));
    for (size_t i = k; i < j; ++i) w.U64(hashes[i]);
    w.Raw(std::string_view(tmp).substr(k * kPageSize, (j - k) * kPageSize));
    k = j;
  }
  return Status::OK();
}

Result<std::string> Encode(const ProcessImage& img, const std::vector<Piece>& batch,
                           const PageReader& read, const PageFilter& filter = nullptr) {
  size_t size = 0;
  for (const Piece& p : batch) size += 12 + p.count * (8 + kPageSize);
  std::string out;
  out.reserve(size);
  Writer w(&out);
  for (const Piece& p : batch) {
    const PageRun& run = img.pages[p.run];
    const uint64_t addr = run.addr + p.first * kPageSize;
    if (filter && run.data.empty() && read) {
      MFS_RETURN_IF_ERROR(EncodeFiltered(addr, p.count, read, filter, &out));
      continue;
    }
    w.U64(addr);
    w.U32(static_cast<uint32_t>(p.count));
    if (!run.data.empty()) {
      for (size_t k = 0; k < p.count; ++k) w.U64(run.hashes[p.first + k]);
      w.Raw(std::string_view(run.data).substr(p.first * kPageSize, p.count * kPageSize));
      continue;
    }
    if (!read) return Status::Error(EINVAL, "page run without data and no reader");
    const size_t hashes_at = out.size();
    out.resize(out.size() + p.count * (8 + kPageSize));
    char* data = out.data() + hashes_at + p.count * 8;
    MFS_RETURN_IF_ERROR(read(addr, data, p.count * kPageSize));
    for (size_t k = 0; k < p.count; ++k)
      EncodeFixed64(out.data() + hashes_at + k * 8, HashPage(data + k * kPageSize));
  }
  return out;
}

// The state of one SendImage.
struct Sender {
  wire::Connection::Ptr conn;
  std::shared_ptr<const ProcessImage> img;
  std::vector<std::vector<Piece>> plan;
  std::function<void(Status)> done;
  PageReader read;
  PageFilter filter;
  uint16_t type = kPages;
  std::function<void(uint64_t, uint64_t)> accepted;  // SendPageRuns
  size_t next = 0;      // next batch to send
  size_t answered = 0;  // batches answered
  bool finished = false;

  void Finish(Status s) {
    if (finished) return;
    finished = true;
    auto d = std::move(done);
    d(std::move(s));
  }
};

void Pump(const std::shared_ptr<Sender>& s) {
  while (!s->finished && s->next < s->plan.size() && s->next - s->answered < kBatchWindow) {
    size_t i = s->next++;
    auto batch = Encode(*s->img, s->plan[i], s->read, s->filter);
    if (!batch.ok()) return s->Finish(batch.status().Annotate("reading pages"));
    // (addr, hash) of each page in the batch, for `accepted`.
    std::vector<std::pair<uint64_t, uint64_t>> pages;
    if (s->accepted) {
      Reader rd(*batch);
      while (rd.ok() && !rd.done()) {
        const uint64_t addr = rd.U64();
        const uint32_t n = rd.U32();
        for (uint32_t k = 0; k < n && rd.ok(); ++k) pages.push_back({addr + k * kPageSize, rd.U64()});
        rd.Raw(static_cast<size_t>(n) * kPageSize);
      }
    }
    s->conn->Call(s->type, std::move(*batch), [s, pages = std::move(pages)](Result<wire::Frame> r) {
      if (s->finished) return;
      if (!r.ok()) return s->Finish(r.status().Annotate("sending pages"));
      for (const auto& [addr, hash] : pages) s->accepted(addr, hash);
      if (++s->answered == s->plan.size()) return s->Finish(Status::OK());
      Pump(s);
    });
  }
}

}  // namespace

size_t PageBatchCount(const ProcessImage& img) { return Plan(img).size(); }

std::string EncodePageBatch(const ProcessImage& img, size_t index) {
  auto plan = Plan(img);
  if (index >= plan.size()) return {};
  auto r = Encode(img, plan[index], nullptr);
  return r.ok() ? std::move(*r) : std::string();
}

void SendImage(const wire::Connection::Ptr& conn, std::shared_ptr<const ProcessImage> img,
               std::function<void(Status)> done, PageReader read,
               std::function<PageFilter(std::string_view)> make_filter) {
  auto s = std::make_shared<Sender>();
  s->read = std::move(read);
  s->conn = conn;
  s->plan = Plan(*img);
  s->img = std::move(img);
  s->done = std::move(done);
  const bool wait = static_cast<bool>(make_filter);
  // The header and the first batches go out back to back: the receiver
  // prepares the process from the header while the pages are on their way
  // (unless the filter depends on its answer).
  conn->Call(kImage, EncodeHeader(*s->img), [s, wait, make_filter = std::move(make_filter)](Result<wire::Frame> r) {
    if (!r.ok()) return s->Finish(r.status().Annotate("sending image header"));
    if (s->plan.empty()) return s->Finish(Status::OK());
    if (wait) {
      s->filter = make_filter(r->payload);
      Pump(s);
    }
  });
  if (!wait) Pump(s);
}

std::function<void()> SendPageRuns(const wire::Connection::Ptr& conn, std::shared_ptr<const ProcessImage> img,
                                   uint16_t type, PageReader read,
                                   std::function<void(uint64_t addr, uint64_t hash)> accepted,
                                   std::function<void(Status)> done) {
  auto s = std::make_shared<Sender>();
  s->read = std::move(read);
  s->conn = conn;
  s->type = type;
  s->accepted = std::move(accepted);
  s->plan = Plan(*img);
  s->img = std::move(img);
  s->done = std::move(done);
  if (s->plan.empty()) s->Finish(Status::OK());
  else Pump(s);
  return [s] { s->Finish(Status::Error(ECANCELED, "pre-copy stopped")); };
}

}  // namespace mfs::migrate
