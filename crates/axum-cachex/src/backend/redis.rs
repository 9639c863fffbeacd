//! Redis backend (work in progress).
