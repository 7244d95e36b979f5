//! hubsim (placeholder).
