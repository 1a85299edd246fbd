//! One integration-test binary: the behaviour suite against both stores,
//! the supported function shapes, Redis-specific properties (round trips,
//! events, SCAN), faults, and the trybuild UI tests.

mod cascades;
mod common;
mod faults;
mod locks;
mod redis_only;
mod shapes;
mod suite;
mod ui;
