//! Test plugin (placeholder).
