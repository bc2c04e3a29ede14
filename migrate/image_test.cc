#include "migrate/image.h"

#include <gtest/gtest.h>

namespace mfs::migrate {
namespace {

ProcessImage Sample() {
  ProcessImage img;
  img.home_pid = 4242;
  img.comm = "counter";
  img.exe = "/bin/counter";
  ThreadImage t;
  t.tid = 4242;
  t.cpu.gp.rip = 0x401000;
  t.cpu.xstate = std::string(832, 'x');
  t.sigmask = 0x1234;
  t.rseq_ptr = 0x7f0000001000;
  t.rseq_len = 32;
  t.rseq_sig = 0x53053053;
  img.threads.push_back(t);
  ThreadImage t2;
  t2.tid = 4250;
  t2.cpu.gp.fs_base = 0x7f0000200000;
  t2.tid_address = 0x7f00002009d0;
  t2.pending_signals = {10, 34};
  img.threads.push_back(t2);
  img.actions[1].handler = 0x401234;
  img.itimers[0].it_value.tv_sec = 3;
  img.rlimits.resize(16, rlimit{1, 2});
  img.mm.brk = 0x600000;
  img.auxv = std::string(64, 'a');
  img.groups = {1, 2, 3};
  img.vmas.push_back({0x400000, 0x401000, 5, kVmaFile, 0, "/bin/counter"});
  img.specials.push_back({"[vdso]", 0x7fff0000, 0x7fff2000});
  img.files.push_back({3, 3, 02002, true, 123456789, "/mfs/3/data/in.txt"});
  img.files.push_back({5, 3, 02002, false, 123456789, "/mfs/3/data/in.txt"});
  return img;
}

TEST(Image, HeaderRoundTrip) {
  ProcessImage a = Sample();
  std::string bytes = EncodeHeader(a);
  ProcessImage b;
  ASSERT_TRUE(DecodeHeader(bytes, &b).ok());
  EXPECT_EQ(b.home_pid, 4242);
  EXPECT_EQ(b.comm, "counter");
  ASSERT_EQ(b.threads.size(), 2u);
  EXPECT_EQ(b.threads[1].tid, 4250);
  EXPECT_EQ(b.threads[1].cpu.gp.fs_base, 0x7f0000200000u);
  EXPECT_EQ(b.threads[1].tid_address, 0x7f00002009d0u);
  EXPECT_EQ(b.threads[1].pending_signals, (std::vector<uint32_t>{10, 34}));
  EXPECT_TRUE(b.threads[0].pending_signals.empty());
  EXPECT_EQ(b.threads[0].cpu.gp.rip, 0x401000u);
  EXPECT_EQ(b.threads[0].cpu.xstate, a.threads[0].cpu.xstate);
  EXPECT_EQ(b.threads[0].rseq_sig, 0x53053053u);
  EXPECT_EQ(b.actions[1].handler, 0x401234u);
  EXPECT_EQ(b.itimers[0].it_value.tv_sec, 3);
  EXPECT_EQ(b.groups, a.groups);
  ASSERT_EQ(b.vmas.size(), 1u);
  EXPECT_EQ(b.vmas[0].path, "/bin/counter");
  EXPECT_EQ(b.specials[0].name, "[vdso]");
  ASSERT_EQ(b.files.size(), 2u);
  EXPECT_EQ(b.files[0].fd, 3);
  EXPECT_EQ(b.files[1].fd, 5);
  EXPECT_EQ(b.files[1].group, 3);
  EXPECT_EQ(b.files[0].flags, 02002u);
  EXPECT_TRUE(b.files[0].cloexec);
  EXPECT_FALSE(b.files[1].cloexec);
  EXPECT_EQ(b.files[1].offset, 123456789u);
  EXPECT_EQ(b.files[0].path, "/mfs/3/data/in.txt");
}

TEST(Image, RejectsOldVersionsAndBadFileEntries) {
  std::string bytes = EncodeHeader(Sample());
  ProcessImage b;
  std::string v2 = bytes;
  v2[4] = 2;  // the version field: a version 2 image has no file table
  EXPECT_EQ(DecodeHeader(v2, &b).code(), EBADMSG);
  ProcessImage bad = Sample();
  bad.files[1].group = 9;  // a group is the lowest fd sharing the description
  EXPECT_EQ(DecodeHeader(EncodeHeader(bad), &b).code(), EBADMSG);
  bad = Sample();
  bad.files[0].path = "relative";
  EXPECT_EQ(DecodeHeader(EncodeHeader(bad), &b).code(), EBADMSG);
  bad = Sample();
  bad.files[0].fd = -1;
  EXPECT_EQ(DecodeHeader(EncodeHeader(bad), &b).code(), EBADMSG);
}

TEST(Image, RejectsEveryTruncationAndBadMagic) {
  std::string bytes = EncodeHeader(Sample());
  for (size_t n = 0; n < bytes.size(); ++n) {
    ProcessImage b;
    EXPECT_FALSE(DecodeHeader(bytes.substr(0, n), &b).ok()) << n;
  }
  bytes[0] ^= 1;
  ProcessImage b;
  EXPECT_EQ(DecodeHeader(bytes, &b).code(), EBADMSG);
}

TEST(Image, PageRunsCheckHashes) {
  PageRun run;
  run.addr = 0x10000;
  run.data.assign(2 * kPageSize, 'p');
  run.data[kPageSize] = 'q';
  run.hashes = {HashPage(run.data.data()), HashPage(run.data.data() + kPageSize)};
  std::string bytes;
  EncodePageRun(run, &bytes);
  EncodePageRun(run, &bytes);
  std::vector<PageRun> out;
  ASSERT_TRUE(DecodePageRuns(bytes, &out).ok());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].data, run.data);
  bytes[bytes.size() - 1] ^= 1;  // corrupt the last page
  out.clear();
  EXPECT_EQ(DecodePageRuns(bytes, &out).code(), EBADMSG);
  out.clear();
  EXPECT_FALSE(DecodePageRuns(bytes.substr(0, 20), &out).ok());
}

}  // namespace
}  // namespace mfs::migrate
