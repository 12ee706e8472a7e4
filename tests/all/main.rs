//! End-to-end tests: the real `sluice` binary, real components built from
//! the example and hostile step crates, a real store in a temp dir per test.

mod harness;
mod http;

mod architecture;
mod attempt;
mod audit;
mod blocking;
mod build;
mod cache;
mod cli;
mod config;
mod crash;
mod data;
mod executor;
mod expansion;
mod faults;
mod gpu;
mod javascript;
mod kubernetes;
mod language;
mod lineage;
mod parquet;
mod pipeline;
mod policy;
mod polyglot;
mod python;
mod ray;
mod replay;
mod s3;
mod sandbox;
mod server;
mod spec;
mod store;
mod sweep;
mod table;
