//! Command line: clap types and one file per verb.
