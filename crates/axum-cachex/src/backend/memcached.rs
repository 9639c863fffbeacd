//! Memcached backend (work in progress).
