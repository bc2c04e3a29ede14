// InterestMap: which files of this node's export another party may cache,
// shared between mfsd and the node's own mount. There are two, one each way.
//
// mfsd's map (PathFor): the files other nodes hold.
// The local fast path changes the export directly; other nodes learn of a
// change only when the mount reports it to mfsd (kChanged), which pushes
// kInvalidate to the peers that hold the file. Reporting every create,
// write and unlink wakes mfsd once per operation, though almost always no
// peer holds the file. So mfsd counts, per hash slot of a file key, the
// peer connections that hold a handle to a file in that slot, in a small
// file both processes map shared; the mount reports a change only when the
// slot of the file (or of the directory whose entry changed) is non-zero.
//
// Ordering: mfsd raises a slot *before* it stats the file for the reply
// that hands out the handle, and the mount reads the slot *after* its
// change is done, both sequentially consistent. Either the mount sees the
// raised slot and reports, or its change came before the stat and the peer
// gets the new state in the reply itself. Collisions only cost a report.
//
// The mount's map (MountPathFor): the files of the export its own kernel
// holds (inodes in its table), written by the mount, read by mfsd. Changes
// that peers make through mfsd reach the mount's kernel as pushed
// invalidations (kWatch all); mfsd pushes one only when the slot of the
// file (or of the directory whose entry changed) is non-zero, instead of
// waking the mount for every remote create, write and unlink. Ordering as
// above with the roles swapped: the mount raises a slot when an inode
// enters its table and stats the file again after that (LocalBackend::
// MakeEntry), mfsd reads the slot after its change.
//
// A map that cannot be opened or is not valid makes every change reported
// (MayBeHeld() true): the old, slower, always-correct behaviour.
//
// Thread-safe (atomic counters). Movable, not copyable.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "mfs/base/status.h"

namespace mfs::client {

// The key whose slot in mfsd's map says that a peer may hold a listing of
// the directory `key` (docs/wire-fs.md, "Directory listings"): the mount
// then waits for mfsd to answer its report of a name changed in it.
inline std::string ListingSlotKey(std::string_view key) { return std::string(key) + "/listing"; }

class InterestMap {
 public:
  static constexpr uint32_t kSlots = 1u << 16;

  // Where the map of the mfsd listening on `control_socket` lives.
  static std::string PathFor(const std::string& control_socket);
  // Where the mount with process id `pid` keeps its map, next to mfsd's
  // map at `mfsd_map` (kWatch names the pid and the map's id).
  static std::string MountPathFor(const std::string& mfsd_map, uint32_t pid);
  // Removes the maps of mounts that died without removing theirs (no
  // process has their pid any more). Returns how many went.
  static int RemoveDeadMountMaps(const std::string& mfsd_map);

  // mfsd: opens or creates the map at `path` and clears it (a fresh mfsd
  // holds no peer interest). Cleared in place, never replaced, so a mount
  // that mapped it before an mfsd restart keeps seeing the live map.
  // `remove_when_done`: the file goes when the map is destroyed (the
  // mount's, which nobody else may clear).
  static Result<InterestMap> Create(const std::string& path, bool remove_when_done = false);
  // The mount: maps the map mfsd made at `path`, read-only, if it is the
  // one with `id` (mfsd's kWatch reply names it).
  static Result<InterestMap> Open(const std::string& path, uint64_t id);

  InterestMap() = default;
  ~InterestMap();
  InterestMap(InterestMap&& o) noexcept;
  InterestMap& operator=(InterestMap&& o) noexcept;
  InterestMap(const InterestMap&) = delete;
  InterestMap& operator=(const InterestMap&) = delete;

  bool valid() const { return slots_ != nullptr; }
  // Random, chosen by Create(): tells one mfsd's map from another's.
  uint64_t id() const;
  // The writer: one more / one fewer holder of `key` (a FileKey).
  void Add(std::string_view key);
  void Remove(std::string_view key);
  // mfsd: one more / one fewer peer watches every change (kWatch all).
  void AddAll();
  void RemoveAll();
  // The reader: may `key` be held? True when the map is not valid.
  bool MayBeHeld(std::string_view key) const;

 private:
  struct Header;
  InterestMap(void* base, bool writable);
  static uint32_t Slot(std::string_view key);
  static void Decrement(std::atomic<uint32_t>& counter);
  Header* header() const { return static_cast<Header*>(base_); }
  void Unmap();

  void* base_ = nullptr;
  std::atomic<uint32_t>* slots_ = nullptr;
  bool writable_ = false;
  std::string remove_path_;  // unlinked by Unmap() when set
};

}  // namespace mfs::client
