//! The one integration-test binary (architecture.md "Tests").
mod fuse;
