//! HTTP routes. Each submodule owns one resource.

pub mod files;
pub mod health;
