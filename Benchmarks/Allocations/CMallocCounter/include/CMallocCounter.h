#ifndef SWITCHBOARD_MALLOC_COUNTER_H
#define SWITCHBOARD_MALLOC_COUNTER_H
#include <stdint.h>

/// Heap allocations (malloc, calloc, realloc of NULL or to a new block, the aligned
/// variants) made by the whole process since it started. Linking this module replaces the
/// process's allocator entry points with counting wrappers around glibc's own.
uint64_t switchboard_allocations(void);
/// Blocks freed since the process started.
uint64_t switchboard_frees(void);

#endif
