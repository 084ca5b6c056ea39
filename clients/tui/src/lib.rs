//! pa-tui: the Personal Agent terminal client. The binary (src/main.rs) wires these modules to
//! the terminal and the network; everything here is testable without either.

pub mod api;
pub mod app;
pub mod auth;
pub mod sse;
pub mod ui;
