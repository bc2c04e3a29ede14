#include "mfs/node/state_store.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>

namespace mfs::node {
namespace {

Status FromRocks(const rocksdb::Status& s, std::string_view context) {
  if (s.ok()) return Status::OK();
  int err = EIO;
  switch (s.code()) {
    case rocksdb::Status::kNotFound: err = ENOENT; break;
    case rocksdb::Status::kCorruption: err = EBADMSG; break;
    case rocksdb::Status::kNotSupported: err = ENOTSUP; break;
    case rocksdb::Status::kInvalidArgument: err = EINVAL; break;
    case rocksdb::Status::kBusy: err = EBUSY; break;
    case rocksdb::Status::kTimedOut: err = ETIMEDOUT; break;
    case rocksdb::Status::kIOError:
      err = s.subcode() == rocksdb::Status::kNoSpace ? ENOSPC : EIO;
      if (s.ToString().find("lock") != std::string::npos) {
        return Status::Error(EBUSY, std::string(context) +
                                        ": in use by another process (is another mfsd running "
                                        "with this state_dir?)");
      }
      break;
    default: break;
  }
  return Status::Error(err, std::string(context) + ": " + s.ToString());
}

}  // namespace

StateStore::StateStore(std::unique_ptr<rocksdb::DB> db) : db_(std::move(db)) {}
StateStore::~StateStore() = default;

Result<std::unique_ptr<StateStore>> StateStore::Open(const std::string& dir) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.keep_log_file_num = 2;
  options.max_log_file_size = 1 << 20;
  options.write_buffer_size = 4 << 20;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(options, dir, &raw);
  if (!s.ok()) return FromRocks(s, "open state database " + dir);
  return std::unique_ptr<StateStore>(new StateStore(std::unique_ptr<rocksdb::DB>(raw)));
}

Status StateStore::Put(std::string_view key, std::string_view value) {
  return FromRocks(db_->Put(rocksdb::WriteOptions(), rocksdb::Slice(key.data(), key.size()),
                            rocksdb::Slice(value.data(), value.size())),
                   "put");
}

Result<std::string> StateStore::Get(std::string_view key) {
  std::string value;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), rocksdb::Slice(key.data(), key.size()), &value);
  if (!s.ok()) return FromRocks(s, "get " + std::string(key));
  return value;
}

Status StateStore::Delete(std::string_view key) {
  return FromRocks(db_->Delete(rocksdb::WriteOptions(), rocksdb::Slice(key.data(), key.size())),
                   "delete");
}

Status StateStore::Scan(std::string_view prefix,
                        const std::function<bool(std::string_view, std::string_view)>& fn) {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(rocksdb::Slice(prefix.data(), prefix.size())); it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key();
    std::string_view key(k.data(), k.size());
    if (key.substr(0, prefix.size()) != prefix) break;
    rocksdb::Slice v = it->value();
    if (!fn(key, std::string_view(v.data(), v.size()))) break;
  }
  return FromRocks(it->status(), "scan");
}

Status StateStore::DeleteRange(std::string_view begin, std::string_view end) {
  return FromRocks(db_->DeleteRange(rocksdb::WriteOptions(), db_->DefaultColumnFamily(),
                                    rocksdb::Slice(begin.data(), begin.size()),
                                    rocksdb::Slice(end.data(), end.size())),
                   "delete range");
}

}  // namespace mfs::node
