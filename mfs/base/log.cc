#include "mfs/base/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace mfs {

void InitLogging(std::string_view name, std::string_view level, std::string_view file) {
  std::shared_ptr<spdlog::logger> logger;
  try {
    if (file.empty()) {
      logger = spdlog::stderr_logger_mt(std::string(name));
    } else {
      logger = spdlog::basic_logger_mt(std::string(name), std::string(file));
    }
  } catch (const spdlog::spdlog_ex&) {
    logger = spdlog::get(std::string(name));
  }
  if (!logger) return;
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
  logger->set_level(spdlog::level::from_str(std::string(level)));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace mfs
