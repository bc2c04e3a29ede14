// Logging: spdlog behind one set-up call. Components log through spdlog's
// default logger (thread-safe); lines carry time, level and component.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace mfs {

// Sets up the default logger: `name` tags every line; `level` is one of
// trace, debug, info, warn, error; `file` empty means stderr.
void InitLogging(std::string_view name, std::string_view level, std::string_view file = {});

}  // namespace mfs
