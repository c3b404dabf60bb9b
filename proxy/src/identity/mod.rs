//! identity (see lib.rs).
