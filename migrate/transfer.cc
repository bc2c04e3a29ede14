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
Result<std::string> Encode(const ProcessImage& img, const std::vector<Piece>& batch,
                           const PageReader& read) {
  size_t size = 0;
  for (const Piece& p : batch) size += 12 + p.count * (8 + kPageSize);
  std::string out;
  out.reserve(size);
  Writer w(&out);
  for (const Piece& p : batch) {
    const PageRun& run = img.pages[p.run];
    const uint64_t addr = run.addr + p.first * kPageSize;
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
    auto batch = Encode(*s->img, s->plan[i], s->read);
    if (!batch.ok()) return s->Finish(batch.status().Annotate("reading pages"));
    s->conn->Call(kPages, std::move(*batch), [s](Result<wire::Frame> r) {
      if (!r.ok()) return s->Finish(r.status().Annotate("sending pages"));
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
               std::function<void(Status)> done, PageReader read) {
  auto s = std::make_shared<Sender>();
  s->read = std::move(read);
  s->conn = conn;
  s->plan = Plan(*img);
  s->img = std::move(img);
  s->done = std::move(done);
  // The header and the first batches go out back to back: the receiver
  // prepares the process from the header while the pages are on their way.
  conn->Call(kImage, EncodeHeader(*s->img), [s](Result<wire::Frame> r) {
    if (!r.ok()) return s->Finish(r.status().Annotate("sending image header"));
    if (s->plan.empty()) return s->Finish(Status::OK());
  });
  Pump(s);
}

}  // namespace mfs::migrate
