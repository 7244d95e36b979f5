//! hubsim's integration tests, in one binary to keep link time down.

mod it {
    pub mod cli;
    pub mod common;
    pub mod faults;
    pub mod fidelity;
    pub mod hf_hub_client;
    pub mod routes;
    pub mod shaping;
    pub mod xet;
}
