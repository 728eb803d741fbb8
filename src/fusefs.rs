//! fuser Filesystem exposing one regular file: a thin match onto `Volume`.
