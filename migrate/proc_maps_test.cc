#include "migrate/proc_maps.h"

#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace mfs::migrate {
namespace {

TEST(ProcMaps, ParsesLines) {
  auto m = ParseMaps(
      "55d0c0a00000-55d0c0a02000 r--p 00000000 fe:00 1234   /usr/bin/cat\n"
      "7ffd1000-7ffd3000 rw-p 00000000 00:00 0                          [stack]\n"
      "7f00-8f00 rw-s 00001000 00:01 77 /dev/shm/x (deleted)\n");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ(m->size(), 3u);
  EXPECT_EQ((*m)[0].path, "/usr/bin/cat");
  EXPECT_EQ((*m)[0].prot, PROT_READ);
  EXPECT_FALSE((*m)[0].anonymous());
  EXPECT_EQ((*m)[1].path, "[stack]");
  EXPECT_TRUE((*m)[1].anonymous());
  EXPECT_EQ((*m)[1].prot, PROT_READ | PROT_WRITE);
  EXPECT_TRUE((*m)[2].shared);
  EXPECT_EQ((*m)[2].offset, 0x1000u);
  EXPECT_EQ((*m)[2].path, "/dev/shm/x (deleted)");
}

TEST(ProcMaps, RejectsGarbage) {
  EXPECT_FALSE(ParseMaps("hello world\n").ok());
  EXPECT_FALSE(ParseMaps("2000-1000 rw-p 0 00:00 0\n").ok());
}

TEST(ProcMaps, ReadsOwnMapsWithVdso) {
  auto m = ReadMaps(getpid());
  ASSERT_TRUE(m.ok());
  bool vdso = false;
  for (const auto& e : *m) vdso = vdso || e.path == "[vdso]";
  EXPECT_TRUE(vdso);
}

}  // namespace
}  // namespace mfs::migrate
