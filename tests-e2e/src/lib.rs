//! Runs the real mesh in-process against the real dev stack: `Mesh::builder().start()` gives a
//! fresh Postgres database, every service on its own loopback port, and helpers to talk to them
//! over HTTP, SSE and gRPC. Used by the end-to-end tests and by pa-bench.
//!
//! By concern: `mesh` (the mesh), `sse` and `http` (the clients), `fixtures` (peers started
//! beside it), `ports`, `metrics`, `stores` (Postgres, Redis and Temporal of a test's own), `tls` (a CA, TLS-only stores and a TLS
//! terminator), and
//! `chaos` (the chaos mesh of processes).

pub use pa_kit::config::{DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL};

pub mod chaos;
pub mod compose;
pub mod deployment;
mod fixtures;
pub mod helm;
mod http;
mod mesh;
mod metrics;
mod ports;
mod sse;
mod stores;
mod tls;
pub use fixtures::*;
pub use http::*;
pub use mesh::*;
pub use metrics::*;
pub use ports::*;
pub use sse::*;
pub use stores::{OwnPostgres, OwnRedis, OwnTemporal, eventually};
pub use tls::*;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(test)]
mod tests {
    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            crate::mesh::with_database("postgres://pa@h:1/db", "x"),
            "postgres://pa@h:1/x"
        );
        assert_eq!(
            crate::mesh::with_database("postgres://pa@h:1/db?sslmode=disable", "x"),
            "postgres://pa@h:1/x?sslmode=disable"
        );
        assert_eq!(
            crate::mesh::with_database("postgres://pa@h:1", "x"),
            "postgres://pa@h:1/x"
        );
    }
}
