# I/O locality tools (issue 5): mfsstat, mfsmon, and mfsd's LocalityService.
add_library(mfs_locality_view ${CMAKE_CURRENT_LIST_DIR}/locality_view.cc)
target_link_libraries(mfs_locality_view PUBLIC mfs_tools mfs_control nlohmann_json::nlohmann_json)

add_executable(mfsstat ${CMAKE_CURRENT_LIST_DIR}/mfsstat.cc)
target_link_libraries(mfsstat PRIVATE mfs_locality_view CLI11::CLI11)

add_executable(mfsmon ${CMAKE_CURRENT_LIST_DIR}/mfsmon.cc)
target_link_libraries(mfsmon PRIVATE mfs_locality_view CLI11::CLI11)

# mfsd hosts the LocalityService (daemon.cmake declares mfsd; fragments are
# included in name order, so the target exists here).
target_link_libraries(mfsd PRIVATE mfs_locality)

mfs_add_test(locality_view_test unit SOURCES ${CMAKE_CURRENT_LIST_DIR}/locality_view_test.cc
             LIBS mfs_locality_view)
