//! Placeholder: the sessions example is being written.
fn main() {}
