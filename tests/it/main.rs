//! weir's integration tests: one binary, real sockets on 127.0.0.1 port 0.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod admin;
mod admin_limits;
mod backends;
mod bad_input;
mod cli;
mod config_files;
mod convergence;
mod ctl;
mod ctl_rollout;
mod deploy;
mod descriptors;
mod disk;
mod dnssec;
mod docs;
#[cfg(feature = "etcd")]
mod etcd;
mod health;
mod ixfr;
mod managed_health;
mod mmdb;
mod observability;
mod octodns;
mod pools;
mod protocol;
mod resolvers;
mod rollouts;
mod routing;
mod rrl;
mod support;
mod tidy;
mod transfers;
mod transport;
mod tsig;
mod updates;
// The DNSSEC tests use it; unused until they exist.
#[allow(dead_code)]
mod validating;
#[cfg(feature = "xdp")]
mod xdp;
