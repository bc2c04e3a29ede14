#include "mount-tools/table.h"

#include <algorithm>
#include <cstdio>

namespace mfs::tools {
namespace {

bool Numeric(const std::string& s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || c == '.' || c == '%' || c == '-';
  });
}

}  // namespace

std::string Table::Render() const {
  std::vector<size_t> width(headers_.size(), 0);
  std::vector<bool> right(headers_.size(), true);
  for (size_t i = 0; i < headers_.size(); ++i) width[i] = headers_[i].size();
  for (const auto& r : rows_) {
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], r[i].size());
      if (!r[i].empty() && !Numeric(r[i])) right[i] = false;
    }
  }
  if (rows_.empty()) std::fill(right.begin(), right.end(), false);
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string l;
    for (size_t i = 0; i < width.size(); ++i) {
      std::string c = i < cells.size() ? cells[i] : "";
      std::string pad(width[i] - std::min(width[i], c.size()), ' ');
      if (i) l += "  ";
      l += right[i] ? pad + c : c + (i + 1 == width.size() ? "" : pad);
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out += l + "\n";
  };
  line(headers_);
  for (const auto& r : rows_) line(r);
  return out;
}

std::string HumanBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
  }
  return buf;
}

std::string HumanDuration(uint64_t ms) {
  char buf[48];
  if (ms < 1000) {
    snprintf(buf, sizeof buf, "%llums", static_cast<unsigned long long>(ms));
  } else if (ms < 60'000) {
    snprintf(buf, sizeof buf, "%.1fs", ms / 1000.0);
  } else if (ms < 3'600'000) {
    snprintf(buf, sizeof buf, "%llum %llus", static_cast<unsigned long long>(ms / 60'000),
             static_cast<unsigned long long>(ms / 1000 % 60));
  } else if (ms < 86'400'000) {
    snprintf(buf, sizeof buf, "%lluh %llum", static_cast<unsigned long long>(ms / 3'600'000),
             static_cast<unsigned long long>(ms / 60'000 % 60));
  } else {
    snprintf(buf, sizeof buf, "%llud %lluh", static_cast<unsigned long long>(ms / 86'400'000),
             static_cast<unsigned long long>(ms / 3'600'000 % 24));
  }
  return buf;
}

}  // namespace mfs::tools
