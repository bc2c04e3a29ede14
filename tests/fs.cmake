# /mfs tests with real FUSE mounts (and, for the cluster cases, real mfsd
# processes), each in the test binary's private mount namespace.
add_library(mfs_fs_harness ${CMAKE_CURRENT_LIST_DIR}/fs/harness.cc)
target_include_directories(mfs_fs_harness PUBLIC ${PROJECT_SOURCE_DIR})
mfs_add_test(fs_mount_test integration SOURCES ${CMAKE_CURRENT_LIST_DIR}/fs/mount_test.cc
             LIBS mfs_fs_harness)
add_dependencies(fs_mount_test mount.mfs)
mfs_add_test(fs_cluster_test integration SOURCES ${CMAKE_CURRENT_LIST_DIR}/fs/cluster_test.cc
             LIBS mfs_fs_harness mfs_client)
add_dependencies(fs_cluster_test mount.mfs mfsd)
mfs_add_test(fs_observer_test integration SOURCES ${CMAKE_CURRENT_LIST_DIR}/fs/observer_test.cc
             LIBS mfs_fs_harness mfs_fuse)
