// The system call table of man/mfs-migration.7 is the one in the code.
#include "migrate/syscall_table.h"

#include <gtest/gtest.h>
#include <sys/syscall.h>

#include <fstream>
#include <string>
#include <vector>

namespace mfs::migrate {
namespace {

// The rows of the man page's table (between its header row and .TE), with
// the roff escape of '-' undone.
std::vector<std::string> ManRows() {
  std::ifstream in(std::string(MFS_SOURCE_DIR) + "/man/mfs-migration.7");
  std::vector<std::string> rows;
  bool inside = false;
  for (std::string line; std::getline(in, line);) {
    if (line == "name\tnr\tclass") {
      inside = true;
      continue;
    }
    if (!inside) continue;
    if (line == ".TE") break;
    std::string plain;
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '\\' && i + 1 < line.size() && line[i + 1] == '-') ++i;
      plain += line[i];
    }
    rows.push_back(plain);
  }
  return rows;
}

TEST(SyscallTable, ManPageTableIsTheCodes) {
  std::vector<std::string> want;
  for (const auto& r : SyscallTableRows()) want.push_back(r[0] + '\t' + r[1] + '\t' + r[2]);
  std::vector<std::string> man = ManRows();
  ASSERT_FALSE(man.empty()) << "no table in man/mfs-migration.7";
  for (size_t i = 0; i < std::max(want.size(), man.size()); ++i) {
    ASSERT_EQ(i < man.size() ? man[i] : "(missing)", i < want.size() ? want[i] : "(none)")
        << "man/mfs-migration.7 table row " << i << " differs from migrate/syscall_table.cc";
  }
}

TEST(SyscallTable, VectoredCallsWithAnOffsetAreForwarded) {
  EXPECT_EQ(LookupSyscall(SYS_preadv).cls, SyscallClass::kForwarded);
  EXPECT_EQ(LookupSyscall(SYS_pwritev).cls, SyscallClass::kForwarded);
  EXPECT_EQ(LookupSyscall(SYS_preadv2).cls, SyscallClass::kHome);  // flags: not rewritten
}

}  // namespace
}  // namespace mfs::migrate
