#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs the whole
# suite with one ctest invocation whose summary is the last thing printed.
#
#   sudo bash scripts/test.sh [CTEST-ARGS...]     e.g. -L unit, -R cluster
#
# Three build trees:
#   build/       the product and every test (unit, integration, slow);
#   build-asan/  the unit-test binaries only, with ASan+UBSan (MFS_SANITIZE);
#   build-fuzz/  the libFuzzer targets, with clang (MFS_FUZZ).
# build/'s CTest also runs each ASan binary and each fuzzer for a bounded time
# (tests/sanitize.cmake, told where the other trees are by MFS_ASAN_DIR and
# MFS_FUZZ_DIR), so that one ctest run covers everything.
#
# Environment: MFS_JOBS (build jobs), MFS_CTEST_JOBS (ctest -j, default 2),
# MFS_FUZZ_SECONDS (per fuzz target, default 20).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bash "$MFS_ROOT/scripts/setup.sh"

say "building the unit tests with ASan+UBSan in build-asan/"
# -O1 -g: what the ASan documentation recommends, and cheaper to compile.
cmake -S "$MFS_ROOT" -B "$MFS_ROOT/build-asan" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS=-O1 -DMFS_SANITIZE=ON
cmake --build "$MFS_ROOT/build-asan" -j "$MFS_JOBS" --target mfs_unit_tests

say "building the fuzz targets with clang in build-fuzz/"
CC=clang CXX=clang++ cmake -S "$MFS_ROOT" -B "$MFS_ROOT/build-fuzz" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMFS_FUZZ=ON
cmake --build "$MFS_ROOT/build-fuzz" -j "$MFS_JOBS" --target mfs_fuzz_targets

say "registering the ASan and fuzz runs in build/"
cmake -S "$MFS_ROOT" -B "$MFS_ROOT/build" \
  -DMFS_ASAN_DIR="$MFS_ROOT/build-asan" -DMFS_FUZZ_DIR="$MFS_ROOT/build-fuzz" \
  -DMFS_FUZZ_SECONDS="${MFS_FUZZ_SECONDS:-20}"
cmake --build "$MFS_ROOT/build" -j "$MFS_JOBS"

say "running the suite"
cd "$MFS_ROOT/build"
exec ctest --output-on-failure -j "${MFS_CTEST_JOBS:-2}" "$@"
