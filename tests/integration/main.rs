//! One integration-test binary: the behaviour, strategy and cascade suites
//! against the in-process store, a `redis-server` and a three-master Redis
//! Cluster; the supported function shapes; Redis-specific properties (round
//! trips, events, SCAN, big invalidations); locks, tiers, transactions,
//! write-through and write-behind; metrics and spans; faults, and a load test under repeated
//! faults (`reliability`); security (ACL, TLS, namespaces); consistency under
//! concurrent writes; a model of what a reader may see under random
//! concurrent programs with faults (`model`); and the trybuild UI tests.

mod adaptive;
mod batch;
mod cascades;
mod cluster;
mod combined;
mod common;
mod conditions;
mod consistency;
mod fail_safe;
mod faults;
mod idle;
mod locks;
mod model;
mod observability;
mod redis_only;
mod reliability;
mod security;
mod shapes;
mod soft_timeout;
mod strategies;
mod suite;
mod switches;
mod tiers;
mod transactions;
mod ui;
mod write_behind;
mod write_through;
