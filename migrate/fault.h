// Fault injection for the migration's failure tests.
//
// A process whose environment has MFS_MIGRATE_FAULT=POINT[,POINT...] kills
// itself with SIGKILL, as a crash or a node failure would, when it reaches one
// of those points. mfsd passes its environment on to the supervisors it
// spawns, so setting the variable for one node's mfsd covers its guests too.
// The points (man/mfs-migration.7, FAULT INJECTION):
//   spawn          destination mfsd, on a request to spawn a guest supervisor
//   guest-accept   guest supervisor, home connected and authenticated
//   guest-prepare  guest supervisor, the memory hint (kPrepare) received
//   guest-header   guest supervisor, image header received
//   guest-pages    guest supervisor, first batch of pages received
//   guest-restore  guest supervisor, image restored, remote not yet running
//   guest-running  guest supervisor, remote running and confirmed to the home
//   move           home mfsd, a move request passed on to the home supervisor
// One name is not a kill point but a refusal, tested with FaultArmed:
//   prepare-refused  guest supervisor answers kPrepare with ENOTSUP
// Without the variable this costs one getenv, at the first call.
//
// Thread-safe.
#pragma once

#include <string_view>

namespace mfs::migrate {

// Whether MFS_MIGRATE_FAULT names `point`.
bool FaultArmed(std::string_view point);

// Kills this process (SIGKILL) if `point` is armed.
void FaultPoint(std::string_view point);

}  // namespace mfs::migrate
