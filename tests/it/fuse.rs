//! FUSE behaviour of PLAIN (owned by another helper; placeholder until merged).
