//! hubsim's integration tests (one binary; modules per area).

mod it {
    pub mod common;
    pub mod routes;
}
