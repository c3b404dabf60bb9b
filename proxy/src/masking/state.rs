//! The MaskingRules in force for the data path: a [`MaskingSet`] compiled
//! from the current policy (`CompiledPolicy::masking_rules`) and the HMAC keys
//! under `--secret-dir`, recompiled whenever the policy is reloaded.
//!
//! Compile errors (bad path, missing key) are logged once per reload; the
//! failing rule is blocked in the set, so its topics never pass unmasked.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::masking::{CompileError, DEFAULT_MAX_BATCH_BYTES, MaskingSet};
use crate::policy::decide::CompiledPolicy;
use crate::policy::handle::PolicyHandle;

/// Shared by every connection (see `Proxy::masking`).
#[derive(Debug)]
pub struct MaskingState {
    /// `DIR/<secret name>/<key>` (the Secret volume the operator mounts);
    /// without it, rules with a hash key are blocked.
    secret_dir: Option<PathBuf>,
    /// `--masking-max-batch-bytes`, handed to every compiled set.
    max_batch_bytes: usize,
    /// The policy the set was compiled from (compared by pointer) and the set.
    cache: Mutex<Option<(Arc<CompiledPolicy>, Arc<MaskingSet>)>>,
}

impl Default for MaskingState {
    fn default() -> Self {
        Self::new(None)
    }
}

impl MaskingState {
    pub fn new(secret_dir: Option<PathBuf>) -> Self {
        Self {
            secret_dir,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            cache: Mutex::default(),
        }
    }

    /// The per-batch budget (`--masking-max-batch-bytes`): no batch is
    /// decompressed past it; larger ones are refused, never forwarded unmasked.
    pub fn with_max_batch_bytes(mut self, max_batch_bytes: usize) -> Self {
        self.max_batch_bytes = max_batch_bytes;
        self
    }

    /// The set for the policy currently in force (recompiled after a reload).
    pub fn current(&self, policy: &PolicyHandle) -> Arc<MaskingSet> {
        self.for_policy(&policy.current())
    }

    /// The set compiled from `policy` (cached while the policy is unchanged).
    pub fn for_policy(&self, policy: &Arc<CompiledPolicy>) -> Arc<MaskingSet> {
        let mut cache = match self.cache.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((seen, set)) = cache.as_ref()
            && Arc::ptr_eq(seen, policy)
        {
            return Arc::clone(set);
        }
        let set = Arc::new(self.compile(policy));
        *cache = Some((Arc::clone(policy), Arc::clone(&set)));
        set
    }

    fn compile(&self, policy: &CompiledPolicy) -> MaskingSet {
        let docs = policy.masking_rules();
        // The policy sources read one namespace: the pod's.
        let Some(namespace) = docs.first().map(|d| d.namespace.clone()) else {
            return MaskingSet::default();
        };
        let dir = self.secret_dir.clone().unwrap_or_default();
        let (set, errors) = MaskingSet::from_docs(&namespace, docs, &dir);
        let issuers = policy.token_issuers();
        let exempt_issuer = match issuers.len() {
            1 => issuers.first().map(|i| i.to_string()),
            _ => None,
        };
        let set = set
            .with_max_batch_bytes(self.max_batch_bytes)
            .with_exempt_issuer(exempt_issuer);
        for error in &errors {
            // Never carries key bytes.
            match error {
                CompileError::PatientKey { .. } => tracing::error!(
                    %error,
                    "MaskingRule cannot name patients: its records are counted unattributed in the audit trail"
                ),
                _ => tracing::error!(%error, "MaskingRule fails closed: its topics are blocked"),
            }
        }
        tracing::info!(
            rules = docs.len(),
            failed = errors.len(),
            "masking rules compiled"
        );
        set
    }
}
