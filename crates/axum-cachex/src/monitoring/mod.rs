//! Monitoring routes, metrics and dashboard (work in progress).
