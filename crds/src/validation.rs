//! Validation CEL cannot express.
