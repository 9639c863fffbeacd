//! Server-side sessions (work in progress).
