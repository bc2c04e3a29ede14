# Migration commands: thin mains over migrate/ (see man/mfsrun.1 ...).
add_executable(mfs-supervisor ${CMAKE_CURRENT_LIST_DIR}/mfs-supervisor.cc)
target_link_libraries(mfs-supervisor PRIVATE mfs_migrate CLI11::CLI11)

add_executable(mfsrun ${CMAKE_CURRENT_LIST_DIR}/mfsrun.cc)
target_link_libraries(mfsrun PRIVATE mfs_control)

add_executable(mfsmigrate ${CMAKE_CURRENT_LIST_DIR}/mfsmigrate.cc)
target_link_libraries(mfsmigrate PRIVATE mfs_control CLI11::CLI11)

add_executable(mfsps ${CMAKE_CURRENT_LIST_DIR}/mfsps.cc)
target_link_libraries(mfsps PRIVATE mfs_migrate mfs_control mfs_tools CLI11::CLI11)

# mfsd hosts the migration service.
target_link_libraries(mfsd PRIVATE mfs_migrate_service)
add_dependencies(mfsd mfs-supervisor)
