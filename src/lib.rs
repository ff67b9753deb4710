//! kassa: a self-hosted, single-binary merchant order server.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod jobs;
pub mod live;
pub mod providers;
pub mod service;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod webhooks;
