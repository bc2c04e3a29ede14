# I/O locality (issue 5): real mfsd daemons, the real recorder, mfsstat,
# mfsmon in tmux, the HTML report in headless Chromium, and the end-to-end
# test through /mfs (skipped with the reason until /mfs and mfs-cluster exist).
mfs_add_test(locality_test integration
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/locality_test.cc
                     ${CMAKE_CURRENT_LIST_DIR}/locality_harness.cc
             LIBS mfs_locality mfs_control)
target_compile_definitions(locality_test PRIVATE MFS_BIN_DIR="${MFS_BIN_DIR}")
add_dependencies(locality_test mfsd mfsstat mfsmon)

# End to end through /mfs on an mfs-cluster cluster (skips without /mfs).
mfs_add_test(locality_e2e_test integration
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/locality_e2e_test.cc LIBS mfs_test_cluster)
add_dependencies(locality_e2e_test mfsd mfsstat)
