//! Shared helpers for hubget's end-to-end tests.
