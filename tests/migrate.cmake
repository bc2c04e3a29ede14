# Real programs used by the migration tests and benchmarks.
add_executable(mfs-test-counter progs/counter.c)
