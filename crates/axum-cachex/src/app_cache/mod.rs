//! Typed application cache (work in progress).
