//! Integration tests of hajobs-core against a real Cassandra
//! (start one with `deploy/local/cassandra start`).

mod cassandra;
mod firings;
mod leases;
mod schema;
mod statuses;
