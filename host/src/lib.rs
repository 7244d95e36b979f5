//! hubget: the host library (placeholder until the foundation lands).
