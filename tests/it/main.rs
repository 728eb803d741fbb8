//! The one integration-test binary: runs the built `vaultdisk` against real files, FUSE,
//! loop devices, ext4, cryptsetup, qemu-img and an independent Python XTS oracle.
// Test helpers may unwrap: a failed setup step panics the test by design.
#![allow(clippy::unwrap_used)]

mod badinputs;
mod bench;
mod bitlocker;
mod cli;
mod cluster;
mod cluster_support;
mod compat;
mod corrupt;
mod crypttab;
mod detached;
mod devices;
mod discard;
mod disk;
mod escrow;
mod ext4;
mod frozen;
mod fuse;
mod hygiene;
mod kdfbomb;
mod keychain;
mod keys;
mod library;
mod lifecycle;
mod mount;
mod oneline;
mod packaging;
mod perf;
mod reliability;
mod report;
mod support;
mod toolbox;
mod unlock;
mod validity;
mod vault;
mod verify;
mod vm;
mod writeback;
