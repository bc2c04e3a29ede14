// StateStore: the node's RocksDB database under <state_dir>/db.
//
// Holds what must survive a restart: the cluster map ("peer/<id>"), and
// whatever services keep under their own key prefix ("profile/", "history/",
// "journal/" ...). This is the only place that maps RocksDB statuses to
// errno. Thread-safe (RocksDB is); calls do disk I/O, so keep them off the
// network threads where they may be slow.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "mfs/base/status.h"

namespace rocksdb {
class DB;
}

namespace mfs::node {

class StateStore {
 public:
  // Opens (creating if needed) the database in `dir`.
  static Result<std::unique_ptr<StateStore>> Open(const std::string& dir);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  Status Put(std::string_view key, std::string_view value);
  // ENOENT when absent.
  Result<std::string> Get(std::string_view key);
  Status Delete(std::string_view key);
  // Calls fn(key, value) for every key starting with `prefix`, in key order,
  // until fn returns false.
  Status Scan(std::string_view prefix,
              const std::function<bool(std::string_view, std::string_view)>& fn);
  // Deletes every key in [begin, end).
  Status DeleteRange(std::string_view begin, std::string_view end);

  rocksdb::DB* db() { return db_.get(); }

 private:
  explicit StateStore(std::unique_ptr<rocksdb::DB> db);
  std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace mfs::node
