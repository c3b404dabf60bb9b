//! streamgate's Kubernetes API.
#![forbid(unsafe_code)]
