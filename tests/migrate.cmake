# Real programs used by the migration tests and benchmarks.
add_executable(mfs-test-counter ${CMAKE_CURRENT_LIST_DIR}/progs/counter.c)
add_executable(mfs-test-sigtimer ${CMAKE_CURRENT_LIST_DIR}/progs/sigtimer.c)
add_executable(mfs-test-threads ${CMAKE_CURRENT_LIST_DIR}/progs/threads.c)
add_executable(mfs-test-fileio ${CMAKE_CURRENT_LIST_DIR}/progs/fileio.c)
add_executable(mfs-test-sigread ${CMAKE_CURRENT_LIST_DIR}/progs/sigread.c)
add_executable(mfs-test-direct ${CMAKE_CURRENT_LIST_DIR}/progs/direct.c)
add_executable(mfs-test-writers ${CMAKE_CURRENT_LIST_DIR}/progs/writers.c)
add_executable(mfs-test-regions ${CMAKE_CURRENT_LIST_DIR}/progs/regions.c)
add_executable(mfs-test-pipewait ${CMAKE_CURRENT_LIST_DIR}/progs/pipewait.c)
target_link_libraries(mfs-test-threads PRIVATE Threads::Threads)
target_link_libraries(mfs-test-writers PRIVATE Threads::Threads)
target_link_libraries(mfs-test-pipewait PRIVATE Threads::Threads)

# Real migrations between real mfsd daemons (one machine, 127.6.x.y).
mfs_add_test(migrate_integration_test integration
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/migrate_integration_test.cc
  LIBS mfs_migrate mfs_control)
target_compile_definitions(migrate_integration_test PRIVATE MFS_TEST_BIN_DIR="${MFS_BIN_DIR}")
add_dependencies(migrate_integration_test mfsd mfs-supervisor mfsrun mfsmigrate mfsps
                 mfs-test-counter mfs-test-sigtimer mfs-test-threads mfs-test-fileio mfs-test-sigread
                 mfs-test-direct mfs-test-writers mfs-test-regions mfs-test-pipewait)

# The programs migrated by the tests are plain programs, never sanitized: an
# ASan build reserves terabytes of shadow mappings that are not what these
# tests are about.
foreach(p mfs-test-counter mfs-test-sigtimer mfs-test-threads mfs-test-fileio mfs-test-sigread
          mfs-test-direct mfs-test-writers mfs-test-regions mfs-test-pipewait)
  target_compile_options(${p} PRIVATE -fno-sanitize=all)
  target_link_options(${p} PRIVATE -fno-sanitize=all)
endforeach()

# DFSA end to end on an mfs-cluster cluster with /mfs (skips without it).
mfs_add_test(migrate_dfsa_test integration
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/migrate_dfsa_test.cc LIBS mfs_test_cluster)
add_dependencies(migrate_dfsa_test mfsd mfs-supervisor mfsrun mfsps mfsstat mount.mfs mfs-test-fileio)
