// ControlQuery: one JSON request/response on the local mfsd's control
// socket, bounded in time. Stand-in until mfs/control's client lands on
// main; same protocol (one JSON object per line each way).
// Thread-safe (no state).
#pragma once

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "mfs/base/status.h"

namespace mfs::client {

Result<nlohmann::json> ControlQuery(const std::string& socket_path, const nlohmann::json& request,
                                    std::chrono::milliseconds timeout);

}  // namespace mfs::client
