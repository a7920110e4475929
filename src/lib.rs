//! weir: an authoritative DNS traffic manager. See ARCHITECTURE.md for the map.

pub mod admin;
pub mod app;
pub mod clock;
pub mod config;
pub mod convergence;
pub mod ctl;
pub mod dns;
pub mod health;
pub mod metrics;
pub mod model;
pub mod rollout;
pub mod snapshot;
pub mod split;
pub mod state;
pub mod store;
pub mod zones;
