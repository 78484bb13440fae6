//! pgfrost: an encrypted, deduplicating backup agent for PostgreSQL.
//!
//! The binary (`src/main.rs`) is a thin shell over this library. Layering:
//! cli -> commands -> repo -> store (docs/architecture.md).

pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod error;
pub mod fsx;
pub mod logging;
pub mod net;
pub mod passphrase;
pub mod pg;
pub mod progress;
pub mod repo;
pub mod retention;
pub mod store;
pub mod users;
