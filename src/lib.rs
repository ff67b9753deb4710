//! kassa: a self-hosted, single-binary merchant order server.
//!
//! Imports flow one way: `http` and `sandbox` (the web surfaces) use `service` and
//! `jobs`, which use `webhooks`, `providers` and `db` through `core`; `domain` uses
//! nothing of the crate.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod cli;
pub mod commands;
pub mod config;
pub mod core;
pub mod db;
pub mod domain;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod providers;
pub mod sandbox;
pub mod service;
pub mod startup;
pub mod telemetry;
pub mod webhooks;
