//! Integration tests of the mirror backend (one binary): directory mirrors over temp caches,
//! endpoint mirrors against hubsim.

mod common;
mod dirs;
mod endpoints;
