# mount.mfs: the /mfs FUSE client (mount -t mfs, or spawned by mfsd).
add_executable(mount.mfs ${CMAKE_CURRENT_LIST_DIR}/mount_mfs.cc)
target_link_libraries(mount.mfs PRIVATE mfs_fuse mfs_client mfs_locality_recorder CLI11::CLI11
                      tomlplusplus::tomlplusplus)

# mfsd hosts the file service (mfs/server) and spawns mount.mfs.
target_link_libraries(mfsd PRIVATE mfs_server)
# mount(8) runs /sbin/mount.<type>: `mount -t mfs cluster /mfs -o config=...`.
install(TARGETS mount.mfs DESTINATION sbin)
