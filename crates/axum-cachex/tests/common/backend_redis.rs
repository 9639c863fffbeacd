//! Factory of Redis backends for the suites (owned by the Redis work).
