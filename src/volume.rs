//! Header-free data path: backing file + volume key -> plaintext reads and writes by sector.
