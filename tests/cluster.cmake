# The one-machine cluster fixture (ClusterTest, wrapping mfs-cluster) and the
# integration tests of the node daemon's membership run through it.
add_library(mfs_test_cluster ${CMAKE_CURRENT_LIST_DIR}/cluster_fixture.cc)
target_link_libraries(mfs_test_cluster PUBLIC mfs_control GTest::gtest nlohmann_json::nlohmann_json)
target_compile_definitions(mfs_test_cluster PRIVATE MFS_BIN_DIR="${MFS_BIN_DIR}")

mfs_add_test(cluster_test integration SOURCES ${CMAKE_CURRENT_LIST_DIR}/cluster_test.cc
             LIBS mfs_test_cluster)
# The tests run the binaries under test: build them first.
add_dependencies(cluster_test mfsd mfsctl)
