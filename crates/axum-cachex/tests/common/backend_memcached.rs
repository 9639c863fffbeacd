//! Factory of Memcached backends for the suites (owned by the Memcached work).
