# The sanitizer and fuzz runs of the test command (scripts/test.sh).
#
# In a tree configured with MFS_SANITIZE=ON, target `mfs_unit_tests` builds
# every unit-test binary (those declared with `mfs_add_test(... unit ...)`)
# and their names are written to unit_tests.txt.
# In a tree configured with MFS_FUZZ=ON, target `mfs_fuzz_targets` builds the
# libFuzzer targets (frame_fuzz, plus any listed in the global property
# MFS_FUZZ_TARGETS) and their names are written to fuzz_targets.txt.
# In the main tree, MFS_ASAN_DIR / MFS_FUZZ_DIR name those trees: each ASan
# unit binary and each fuzzer (for MFS_FUZZ_SECONDS) becomes a CTest test
# here, so that one ctest run covers them all.

set(MFS_ASAN_DIR "" CACHE PATH "Build tree with MFS_SANITIZE=ON whose unit tests CTest runs too")
set(MFS_FUZZ_DIR "" CACHE PATH "Build tree with MFS_FUZZ=ON whose fuzzers CTest runs too")
set(MFS_FUZZ_SECONDS 20 CACHE STRING "How long CTest runs each fuzzer")

if(MFS_SANITIZE)
  get_property(unit_tests GLOBAL PROPERTY MFS_UNIT_TESTS)
  add_custom_target(mfs_unit_tests)
  if(unit_tests)
    add_dependencies(mfs_unit_tests ${unit_tests})
  endif()
  string(REPLACE ";" "\n" lines "${unit_tests}")
  file(WRITE ${CMAKE_BINARY_DIR}/unit_tests.txt "${lines}\n")
endif()

if(MFS_FUZZ)
  get_property(fuzz_targets GLOBAL PROPERTY MFS_FUZZ_TARGETS)
  if(TARGET frame_fuzz)
    list(APPEND fuzz_targets frame_fuzz)
  endif()
  list(REMOVE_DUPLICATES fuzz_targets)
  add_custom_target(mfs_fuzz_targets)
  if(fuzz_targets)
    add_dependencies(mfs_fuzz_targets ${fuzz_targets})
  endif()
  string(REPLACE ";" "\n" lines "${fuzz_targets}")
  file(WRITE ${CMAKE_BINARY_DIR}/fuzz_targets.txt "${lines}\n")
endif()

# Reads a list written above; an absent list is a configuration error, since
# the caller asked for those runs.
function(mfs_read_list dir file out)
  if(NOT EXISTS ${dir}/${file})
    message(FATAL_ERROR "${dir}/${file} is missing: configure that tree first (see scripts/test.sh)")
  endif()
  file(STRINGS ${dir}/${file} names)
  set(${out} ${names} PARENT_SCOPE)
endfunction()

if(MFS_ASAN_DIR)
  mfs_read_list(${MFS_ASAN_DIR} unit_tests.txt names)
  foreach(t ${names})
    add_test(NAME asan.${t} COMMAND ${MFS_ASAN_DIR}/bin/${t})
    set_tests_properties(asan.${t} PROPERTIES LABELS "unit;asan" TIMEOUT 600
      ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
  endforeach()
endif()

if(MFS_FUZZ_DIR)
  mfs_read_list(${MFS_FUZZ_DIR} fuzz_targets.txt names)
  foreach(t ${names})
    # New inputs go to a corpus in this tree; checked-in seeds, if any, are
    # read from tests/fuzz_corpus/<target>.
    set(corpus ${CMAKE_BINARY_DIR}/fuzz_corpus/${t})
    file(MAKE_DIRECTORY ${corpus})
    set(seeds "")
    if(IS_DIRECTORY ${PROJECT_SOURCE_DIR}/tests/fuzz_corpus/${t})
      set(seeds ${PROJECT_SOURCE_DIR}/tests/fuzz_corpus/${t})
    endif()
    add_test(NAME fuzz.${t}
             COMMAND ${MFS_FUZZ_DIR}/bin/${t} -max_total_time=${MFS_FUZZ_SECONDS}
                     -print_final_stats=1 ${corpus} ${seeds})
    math(EXPR limit "${MFS_FUZZ_SECONDS} + 120")
    set_tests_properties(fuzz.${t} PROPERTIES LABELS "slow;fuzz" TIMEOUT ${limit})
  endforeach()
endif()
