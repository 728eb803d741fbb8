//! Unlock / store / wipe one LUKS2 keyslot: kdf -> area -> AF -> digest.
