//! vaultdisk: LUKS2 volumes served as one plaintext file through FUSE, without dm-crypt.
#![deny(unsafe_code)]

pub mod cli;
pub mod crypto;
pub mod daemon;
pub mod device;
pub mod disk;
pub mod error;
pub mod escape;
pub mod fsutil;
pub mod fusefs;
pub mod geometry;
pub mod hex;
pub mod keyslot;
pub mod luks1;
pub mod luks2;
pub mod mount;
pub mod secret;
pub mod signature;
pub mod sys;
pub mod token;
pub mod unlock;
pub mod vault;
pub mod verify;
pub mod volume;
