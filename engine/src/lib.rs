//! The Sluice engine: runs ML pipelines whose steps are WebAssembly
//! components, with a content-addressed store, a step cache, hard sandbox
//! limits and a hash-chained run record.
//!
//! Start at [`cli::run`] (the `sluice` binary) or, as a library, at
//! [`spec::load`] → [`run::execute`]. The crate is not the guest SDK (see
//! `sluice-guest`) and not the WIT host bindings (see `sluice-host-api`).
//! `ARCHITECTURE.md` at the repository root maps the modules and their
//! layers. A module is `pub` only because another crate (the end-to-end
//! tests, the examples, the `sluice` binary) names it; the rest are
//! `pub(crate)`.

pub(crate) mod artifact;
pub mod attempt;
pub mod build;
pub(crate) mod cache;
pub mod cli;
pub(crate) mod config;
pub mod digest;
pub(crate) mod durable;
pub(crate) mod executor;
pub(crate) mod expr;
pub mod failure;
pub(crate) mod fault;
pub mod gpu;
pub mod hook;
pub(crate) mod junit;
pub(crate) mod limits;
pub(crate) mod lineage;
pub(crate) mod policy;
pub(crate) mod position;
pub(crate) mod quoting;
pub(crate) mod record;
pub mod remote;
pub(crate) mod replay;
pub(crate) mod report;
pub mod run;
pub mod sandbox;
pub(crate) mod scaffold;
pub(crate) mod scheduler;
pub(crate) mod scriptbuild;
pub mod seal;
pub(crate) mod section;
pub mod server;
pub mod spec;
pub mod store;
pub(crate) mod tool;
pub mod transparency;
pub(crate) mod verify;
