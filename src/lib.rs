//! weir: an authoritative DNS traffic manager. See ARCHITECTURE.md for the map.

pub(crate) mod admin;
pub mod app;
pub mod clock;
pub mod config;
pub(crate) mod convergence;
pub mod ctl;
pub mod dns;
pub mod dnssec;
pub mod geo;
pub mod health;
pub mod metrics;
pub mod model;
pub mod notify;
pub(crate) mod rollout;
pub mod snapshot;
pub(crate) mod split;
pub mod state;
pub mod store;
pub mod tsig;
pub mod update;
pub mod zones;
