//! Policy: the compiled StreamPolicy decision function (pure), the Kafka API
//! enforcement built on it (pure), and the sources that feed it
//! (`--policy-dir` files, or Kubernetes reflectors) through one [`PolicyHandle`].
pub mod decide;
pub mod apis;
pub mod enforce;
