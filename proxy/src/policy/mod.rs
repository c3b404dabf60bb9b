//! Policy: the compiled StreamPolicy decision function (pure), the Kafka API
//! enforcement built on it (pure), and the sources that feed it
//! (`--policy-dir` files, or Kubernetes reflectors) through one [`PolicyHandle`].
pub mod admit;
pub mod apis;
pub mod coordination;
pub mod decide;
pub mod enforce;
pub mod handle;
pub mod source_dir;
pub mod source_kube;

pub use handle::{PolicyHandle, PolicyInputs, PolicyPublisher, PolicyReload, policy_channel};
pub mod conn;
