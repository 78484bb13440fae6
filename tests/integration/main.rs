//! The integration tests, in one binary (ripgrep's tests/ layout): one link of the crate, its
//! dependencies and the fixtures instead of one per file, and one place that lists them. Run one
//! file's tests with `cargo test --test integration restore::`.
//!
//! tests/index_memory.rs stays a binary of its own: it measures its process's memory, which other
//! tests running beside it in the same process would distort.

#[path = "../common/mod.rs"]
mod common;

mod archive;
mod backup;
mod cli;
mod clouds;
mod docker_guide;
mod drill;
mod expire;
mod majors;
mod pg_fixture;
mod pitr;
mod reference_reader;
mod regress_db;
mod restore;
mod static_binary;
mod store_conformance;
mod systemd_units;
mod tamper;
mod timelines;
mod trust;
mod vectors;
