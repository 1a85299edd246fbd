//! One integration-test binary: the behaviour suite against both stores,
//! the supported function shapes, Redis-specific properties (round trips,
//! events, SCAN), the read-side strategies (single-flight, stale and early
//! refresh, negative caching, size limit, versions), faults, a load test
//! under repeated faults (`reliability`), and the trybuild UI tests.

mod cascades;
mod common;
mod consistency;
mod faults;
mod locks;
mod redis_only;
mod reliability;
mod shapes;
mod strategies;
mod suite;
mod tiers;
mod transactions;
mod ui;
mod write_behind;
mod write_through;
