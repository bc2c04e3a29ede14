#include "migrate/transfer.h"

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

}  // namespace

size_t PageBatchCount(const ProcessImage& img) { return Plan(img).size(); }

std::string EncodePageBatch(const ProcessImage& img, size_t index) {
  auto plan = Plan(img);
  std::string out;
  if (index >= plan.size()) return out;
  for (const Piece& p : plan[index]) {
    const PageRun& run = img.pages[p.run];
    PageRun part;
    part.addr = run.addr + p.first * kPageSize;
    part.hashes.assign(run.hashes.begin() + p.first, run.hashes.begin() + p.first + p.count);
    part.data = run.data.substr(p.first * kPageSize, p.count * kPageSize);
    EncodePageRun(part, &out);
  }
  return out;
}

void SendImage(const wire::Connection::Ptr& conn, std::shared_ptr<const ProcessImage> img,
               std::function<void(Status)> done) {
  auto plan = std::make_shared<std::vector<std::vector<Piece>>>(Plan(*img));
  auto next = std::make_shared<std::function<void(size_t)>>();
  *next = [conn, img, plan, next, done](size_t i) {
    if (i == plan->size()) {
      done(Status::OK());
      *next = nullptr;  // break the cycle
      return;
    }
    std::string batch;
    for (const Piece& p : (*plan)[i]) {
      const PageRun& run = img->pages[p.run];
      PageRun part;
      part.addr = run.addr + p.first * kPageSize;
      part.hashes.assign(run.hashes.begin() + p.first, run.hashes.begin() + p.first + p.count);
      part.data = run.data.substr(p.first * kPageSize, p.count * kPageSize);
      EncodePageRun(part, &batch);
    }
    conn->Call(kPages, std::move(batch), [next, i, done](Result<wire::Frame> r) {
      if (!r.ok()) {
        done(r.status().Annotate("sending pages"));
        *next = nullptr;
        return;
      }
      (*next)(i + 1);
    });
  };
  conn->Call(kImage, EncodeHeader(*img), [next, done](Result<wire::Frame> r) {
    if (!r.ok()) {
      done(r.status().Annotate("sending image header"));
      *next = nullptr;
      return;
    }
    (*next)(0);
  });
}

}  // namespace mfs::migrate
