//! masking (see lib.rs).
