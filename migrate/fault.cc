#include "migrate/fault.h"

#include <signal.h>
#include <stdlib.h>

#include <string>

#include "mfs/base/log.h"

namespace mfs::migrate {

bool FaultArmed(std::string_view point) {
  static const std::string points = [] {
    const char* v = getenv("MFS_MIGRATE_FAULT");
    return v ? "," + std::string(v) + "," : std::string();
  }();
  return !points.empty() && points.find("," + std::string(point) + ",") != std::string::npos;
}

void FaultPoint(std::string_view point) {
  if (!FaultArmed(point)) return;
  spdlog::warn("fault injection: killed at '{}' (MFS_MIGRATE_FAULT)", point);
  spdlog::default_logger()->flush();
  raise(SIGKILL);
}

}  // namespace mfs::migrate
