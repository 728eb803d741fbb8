//! vaultdisk: LUKS2 volumes served as one plaintext file through FUSE, without dm-crypt.
#![deny(unsafe_code)]

pub mod api;
pub mod benchmark;
pub mod bitlocker;
pub mod cli;
pub mod crypto;
pub mod daemon;
pub mod device;
pub mod discard;
pub mod disk;
pub mod erase;
pub mod error;
pub mod escape;
pub mod format;
pub mod fsutil;
pub mod fusefs;
pub mod geometry;
pub mod header_backup;
pub mod hex;
pub mod keys;
pub mod keyslot;
pub mod luks1;
pub mod luks2;
pub mod mount;
pub mod recovery_key;
pub mod report;
pub mod resize;
pub mod safepath;
pub mod secret;
pub mod signature;
pub mod sys;
pub mod token;
pub mod unlock;
pub mod vault;
pub mod verify;
pub mod volume;
