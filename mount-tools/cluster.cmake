# mfs-cluster: the one-machine cluster harness (a bash script, see its header
# and man/mfs-cluster.1). It is copied next to mfsd in the bin directory,
# where it looks for mfsd.
configure_file(${CMAKE_CURRENT_SOURCE_DIR}/mfs-cluster.sh ${MFS_BIN_DIR}/mfs-cluster
               COPYONLY FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE
               GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
install(PROGRAMS ${MFS_BIN_DIR}/mfs-cluster DESTINATION bin)
install(FILES ${PROJECT_SOURCE_DIR}/man/mfs-cluster.1 DESTINATION share/man/man1)
