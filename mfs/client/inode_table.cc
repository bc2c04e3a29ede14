#include "mfs/client/inode_table.h"

namespace mfs::client {

Inode::~Inode() {
  if (held_in) held_in->Remove(held_key);
  if (fd_count && fd.valid()) fd_count->fetch_sub(1, std::memory_order_relaxed);
}

InodePtr InodeTable::Get(uint64_t id) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

InodePtr InodeTable::Ref(const std::string& key, const std::function<InodePtr(uint64_t id)>& make,
                         const std::function<bool(const Inode&)>& same) {
  std::lock_guard<std::mutex> l(mu_);
  auto k = by_key_.find(key);
  if (k != by_key_.end()) {
    InodePtr& p = by_id_.at(k->second);
    if (!same || same(*p)) {
      ++p->nlookup;
      return p;
    }
  }
  uint64_t id = next_id_++;
  InodePtr p = make(id);
  if (!p) return nullptr;
  p->key = key;
  p->nlookup = 1;
  by_id_.emplace(id, p);
  by_key_.insert_or_assign(key, id);
  return p;
}

InodePtr InodeTable::Find(const std::string& key) const {
  std::lock_guard<std::mutex> l(mu_);
  auto k = by_key_.find(key);
  return k == by_key_.end() ? nullptr : by_id_.at(k->second);
}

void InodeTable::AddRef(const InodePtr& inode) {
  std::lock_guard<std::mutex> l(mu_);
  ++inode->nlookup;
}

void InodeTable::Forget(uint64_t id, uint64_t n) {
  InodePtr gone;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = by_id_.find(id);
    if (it == by_id_.end()) return;
    Inode& i = *it->second;
    i.nlookup = n >= i.nlookup ? 0 : i.nlookup - n;
    if (i.nlookup != 0) return;
    gone = std::move(it->second);
    // The key may have passed to a newer inode (Ref's `same`).
    if (auto k = by_key_.find(i.key); k != by_key_.end() && k->second == id) by_key_.erase(k);
    by_id_.erase(it);
  }
  if (on_remove_) on_remove_(gone);
}

std::vector<InodePtr> InodeTable::Where(const std::function<bool(const Inode&)>& pred) const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<InodePtr> v;
  for (const auto& [id, p] : by_id_)
    if (pred(*p)) v.push_back(p);
  return v;
}

bool InodeTable::Any(const std::function<bool(const Inode&)>& pred) const {
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& [id, p] : by_id_)
    if (pred(*p)) return true;
  return false;
}

size_t InodeTable::size() const {
  std::lock_guard<std::mutex> l(mu_);
  return by_id_.size();
}

uint64_t InodeTable::total_lookups() const {
  std::lock_guard<std::mutex> l(mu_);
  uint64_t n = 0;
  for (const auto& [id, p] : by_id_) n += p->nlookup;
  return n;
}

}  // namespace mfs::client
