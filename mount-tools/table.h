// Helpers shared by the admin commands: plain-text tables and human units.
// Not thread-safe (values).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mfs::tools {

// A left/right-aligned text table. Numeric-looking columns align right.
class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Render() const;
  bool empty() const { return rows_.empty(); }

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

std::string HumanBytes(uint64_t bytes);       // "1.5 MiB"
std::string HumanDuration(uint64_t millis);   // "3d 4h", "12m 5s", "850ms"

}  // namespace mfs::tools
