//! The `hubget` command (placeholder until the foundation lands).
fn main() {}
