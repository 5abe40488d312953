//! The commands, one module per family.

pub mod history;
pub mod identity;
pub mod live;
pub mod peer;
pub mod policy;
pub mod server;
pub mod setup;
pub mod transfer;
