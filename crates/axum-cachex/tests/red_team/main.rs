//! Red-team tests of the HTTP cache, one module per review round. Each
//! was written from the RFCs and the code by a reviewer who had not seen
//! the rest of the suite; each test is a way the cache served a response
//! to the wrong client or answered wrongly, found and then fixed. Tests
//! marked `GUARD` passed when written and guard a critical rule. One test
//! binary for all rounds: one link instead of one per round.
#![cfg(feature = "session")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../common/mod.rs"]
mod common;
mod support;

mod round1;
mod round10;
mod round11;
mod round12;
mod round13;
mod round14;
mod round2;
mod round3;
#[cfg(all(feature = "redis", feature = "memcached"))]
mod round4;
mod round5;
mod round6;
mod round7;
mod round8;
mod round9;
