//! policy (see lib.rs).
