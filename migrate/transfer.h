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

// Sends header + all batches with kImage / kPages frames. Runs without data
// (Capture with read_pages false) are read with `read` straight into the
// batch being built, and hashed there.
void SendImage(const wire::Connection::Ptr& conn, std::shared_ptr<const ProcessImage> img,
               std::function<void(Status)> done, PageReader read = nullptr);

}  // namespace mfs::migrate
