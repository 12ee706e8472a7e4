//! The Sluice engine: runs ML pipelines whose steps are WebAssembly
//! components, with a content-addressed store, a step cache, hard sandbox
//! limits and a hash-chained run record.
//!
//! Start at [`cli::run`] (the `sluice` binary) or, as a library, at
//! [`spec::load`] → [`run::execute`]. The crate is not the guest SDK (see
//! `sluice-guest`) and not the WIT host bindings (see `sluice-host-api`).
//! `ARCHITECTURE.md` at the repository root maps the modules.

pub mod artifact;
pub mod attempt;
pub mod build;
pub mod cache;
pub mod cli;
pub mod config;
pub mod digest;
pub mod durable;
pub mod expr;
pub mod failure;
pub mod fault;
pub mod gpu;
pub mod hook;
pub mod junit;
pub mod limits;
pub mod policy;
pub mod position;
pub mod quoting;
pub mod record;
pub mod replay;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod scaffold;
pub mod scheduler;
pub mod seal;
pub mod section;
pub mod server;
pub mod spec;
pub mod store;
pub mod transparency;
pub mod verify;
