//! The one integration-test binary (architecture.md "Tests").
mod cli;
mod compat;
mod corrupt;
mod fuse;
mod support;
