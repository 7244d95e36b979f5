//! hubget's end-to-end tests: one test binary (`e2e`), one module per area. Each module runs the
//! `hubget` binary (built by `cargo build --workspace`) in an isolated environment from the
//! testkit (`hubget_tests`), or uses the host library directly where a process boundary would
//! hide what is tested.
//!
//! To add an area: create `tests/tests/e2e/<area>.rs` and add `mod <area>;` below.

mod cache;
mod config;
mod disk;
mod download;
mod hub_limits;
mod interop;
mod isolation;
mod lfs;
mod mirror;
mod plugins;
mod project;
mod s3;
mod shared_store;
mod xet;
mod xet_reuse;
