//! Halo: a self-hostable static-site deployment platform.
//!
//! Layout, from the bottom up:
//! - [`digest`]: the `Sha256` content address and streaming hashing.
//! - [`store`]: the `BlobStore` trait and its backends (local directory by default).
//! - [`model`]: pure domain types — names, manifests, deployment states.
//! - [`meta`]: metadata persistence (SQLite by default) behind the `MetaStore` trait.
//! - [`control`]: the control plane's operations — deploy, build, promote — over store and meta.
//! - [`api`]: the HTTP API v1 (axum) on top of `control`.
//! - [`edge`]: the hyper server routing Host → alias → deployment → blob.
//! - [`acme`]: automatic HTTPS — ACME orders, challenges, certificates in the store.
//! - [`cli`]: the `halo` client commands (deploy, promote, rollback, …).
//! - [`config`] and [`server`]: layered configuration and the process that runs both servers.
//! - [`fault`]: named fault points that crash tests arm through the environment.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod acme;
pub mod api;
pub mod cli;
pub mod config;
pub mod control;
pub mod digest;
pub mod edge;
pub mod fault;
pub mod meta;
pub mod model;
pub mod server;
pub mod store;
