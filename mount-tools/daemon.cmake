# Shared helpers of the admin commands, and the daemon + mfsctl mains.
add_library(mfs_tools ${CMAKE_CURRENT_LIST_DIR}/table.cc)
target_link_libraries(mfs_tools PUBLIC mfs_base)
mfs_add_test(tools_test unit SOURCES ${CMAKE_CURRENT_LIST_DIR}/table_test.cc LIBS mfs_tools)

add_executable(mfsd ${CMAKE_CURRENT_LIST_DIR}/mfsd.cc)
target_link_libraries(mfsd PRIVATE mfs_node CLI11::CLI11)

add_executable(mfsctl ${CMAKE_CURRENT_LIST_DIR}/mfsctl.cc)
target_link_libraries(mfsctl PRIVATE mfs_control mfs_tools CLI11::CLI11)
