//! OAuth state manager (work in progress).
