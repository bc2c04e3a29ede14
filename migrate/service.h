// The migration service inside mfsd: control ops and the guest-spawning
// frame handler. The daemon only spawns and finds supervisors; the process
// state lives in them (one per process, surviving an mfsd restart), so the
// service keeps no table of its own: run_dir/sup/ is the table.
//
// Control ops (man/mfsd.8, man/mfs-migration.7):
//   {"op":"migrate.run","pid":P[,"node":N]}   start supervising P (mfsrun)
//   {"op":"migrate.move","pid":P,"node":N|"home"}
//   {"op":"migrate.ps"}                        -> {"processes":[{...}]}
//   {"op":"migrate.spawn_guest","node":N,"home_pid":P}  (supervisors only)
//   {"op":"proc.where","pid":P}                -> {"home":H,"where":W}
// Frame: kSpawnGuest (192) from a peer mfsd -> a guest supervisor here.
#pragma once

#include <string>

namespace mfs::node {
class Daemon;
}

namespace mfs::migrate {

// `supervisor_binary`: path of mfs-supervisor.
void RegisterMigrationService(node::Daemon& daemon, const std::string& supervisor_binary);

// Path of mfs-supervisor next to the running executable.
std::string DefaultSupervisorBinary();

}  // namespace mfs::migrate
