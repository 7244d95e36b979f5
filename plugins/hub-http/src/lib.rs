//! HTTP for hubget's first-party plugins (placeholder).
