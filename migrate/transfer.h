// Moving an image over a wire::Connection: the header, then page batches of
// at most kBatchBytes, each a Call. Up to kBatchWindow batches are in flight
// at once (the stream stays full while the receiver writes pages); the
// receiver handles frames in order, so an error stops the rest.
// Runs on the connection's io thread; `done` is called exactly once.
#pragma once

#include <functional>
#include <memory>

#include "mfs/base/status.h"
#include "mfs/wire/connection.h"
#include "migrate/image.h"

namespace mfs::migrate {

inline constexpr size_t kBatchBytes = 2u << 20;
inline constexpr size_t kBatchWindow = 8;

// Pages of `img` in batches: batch i as page runs (image.h encoding).
size_t PageBatchCount(const ProcessImage& img);
std::string EncodePageBatch(const ProcessImage& img, size_t index);

// Reads `len` bytes of the (frozen) process at `addr` into `dst`.
using PageReader = std::function<Status(uint64_t addr, char* dst, size_t len)>;

// Pages the receiver already holds (pre-copied before the freeze, see
// prepare.h). Called for each page first with hash null, before it is read:
// true means the page is known not to have changed (write tracking), is not
// read and not sent; else the page is read and the filter called again with
// its hash: true, the page is not sent.
using PageFilter = std::function<bool(uint64_t addr, const uint64_t* hash)>;

// Sends header + all batches with kImage / kPages frames. Runs without data
// (Capture with read_pages false) are read with `read` straight into the
// batch being built, and hashed there. With `make_filter`, the batches wait
// for kImage's reply, and make_filter(reply payload) gives the filter for
// the pages read (null: send them all). Then, with `parallel_read` (a
// thread-safe reader that may fail; `read` is used again for what it could
// not read), a second thread reads and hashes half of each batch: after a
// pre-copy, reading and hashing is most of what is left.
void SendImage(const wire::Connection::Ptr& conn, std::shared_ptr<const ProcessImage> img,
               std::function<void(Status)> done, PageReader read = nullptr,
               std::function<PageFilter(std::string_view)> make_filter = nullptr,
               PageReader parallel_read = nullptr);

// Sends the runs of `img` (read with `read`) as page batches in frames of
// `type`, kBatchWindow in flight, without a header (the pre-copy: kPrecopy).
// `accepted(addr, hash)` is called for each page of each batch the receiver
// answered without error; `done` once every batch was answered or the first
// error. The returned function stops it: no further batch is sent and done
// gets ECANCELED (answers still in flight are then ignored).
std::function<void()> SendPageRuns(const wire::Connection::Ptr& conn, std::shared_ptr<const ProcessImage> img,
                                   uint16_t type, PageReader read,
                                   std::function<void(uint64_t addr, uint64_t hash)> accepted,
                                   std::function<void(Status)> done);

}  // namespace mfs::migrate
