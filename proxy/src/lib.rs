//! streamgate sidecar.
