//! LUKS1 header: parse and validate only; unlock feeds the same data path as LUKS2.
