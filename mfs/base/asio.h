// The one include for Boost.Asio. Boost 1.74's awaitable.hpp uses
// std::exchange without including <utility>, which GCC 12 in C++20 mode
// rejects; including <utility> first fixes that for every user.
#pragma once

#include <utility>

#include <boost/asio.hpp>
