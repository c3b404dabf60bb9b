//! What is left to do on the answer of a forwarded request: refusals merged
//! back in, and the answers that list more than was asked filtered. The
//! per-API halves live beside their checks; this is the dispatch.
use std::collections::HashSet;

use kafka_protocol::messages::{GroupId, ResponseKind, TopicName};

use super::refusal::{Denied, DeniedResource, Merge, MergeResources};
use super::{Gate, TOPIC_AUTH, fetch, groups, metadata};

/// Refused topics and how the answer takes them back.
#[derive(Clone, Debug)]
pub(super) struct Refusals {
    pub(super) denied: Vec<Denied>,
    pub(super) merge: Merge,
}

/// Work to do on the response of a forwarded request.
#[derive(Clone, Debug, Default)]
pub struct Fixup(pub(super) FixupKind);

#[derive(Clone, Debug, Default)]
pub(super) enum FixupKind {
    #[default]
    Nothing,
    /// Topics removed from the request, re-added to the answer refused.
    Topics(Refusals),
    /// As `Topics`; the rest of the answer is cut to what the caller may
    /// read now, and the fetch session dropped.
    Fetch(Refusals),
    /// As `Topics`; the rest is cut to what the caller may describe.
    DescribeTopicPartitions(Refusals),
    /// Explicitly requested topics that were removed; the rest is filtered.
    /// With `Some(asked)`, a Metadata v0–v3 request for named topics was
    /// sent upstream as "all topics" (those versions cannot say "do not
    /// auto-create"): the answer is cut back to `asked`, and an asked topic
    /// the broker does not have is answered UNKNOWN_TOPIC_OR_PARTITION.
    Metadata(Refusals, Option<Vec<TopicName>>),
    /// Config resources removed from the request, re-added refused.
    Configs(Vec<DeniedResource>, MergeResources),
    /// Names the request asked for explicitly (others are filtered silently).
    OffsetFetch(HashSet<String>),
    /// Groups removed from the request, answered GROUP_AUTHORIZATION_FAILED.
    DescribeGroups(Vec<GroupId>),
    /// The answer keeps only groups the caller may use.
    ListGroups,
}

impl Fixup {
    /// Nothing to change in the response.
    pub fn is_nothing(&self) -> bool {
        matches!(self.0, FixupKind::Nothing)
    }

    /// Must the response be decoded and rewritten? (Refusals to merge in, or
    /// Metadata/OffsetFetch answers to filter.)
    pub fn needs_response_work(&self) -> bool {
        match &self.0 {
            FixupKind::Metadata(..)
            | FixupKind::OffsetFetch(_)
            | FixupKind::DescribeTopicPartitions(_)
            | FixupKind::Fetch(_)
            | FixupKind::ListGroups => true,
            FixupKind::DescribeGroups(refused) => !refused.is_empty(),
            FixupKind::Nothing => false,
            FixupKind::Topics(r) => !r.denied.is_empty(),
            FixupKind::Configs(d, _) => !d.is_empty(),
        }
    }

    /// Was the request trimmed (or, for Metadata, possibly changed) so that
    /// it must be re-encoded before forwarding? Otherwise the original
    /// frame can go upstream as it came.
    pub fn request_changed(&self) -> bool {
        match &self.0 {
            FixupKind::Metadata(..) | FixupKind::Fetch(_) => true,
            FixupKind::DescribeGroups(refused) => !refused.is_empty(),
            FixupKind::Nothing | FixupKind::OffsetFetch(_) | FixupKind::ListGroups => false,
            FixupKind::Topics(r) | FixupKind::DescribeTopicPartitions(r) => !r.denied.is_empty(),
            FixupKind::Configs(d, _) => !d.is_empty(),
        }
    }

    /// Add the refusals to a response from the broker (or to an empty local one).
    /// Returns whether the response changed (an unchanged one is forwarded
    /// as the broker's bytes, not re-encoded).
    pub fn apply(&self, gate: &Gate<'_>, response: &mut ResponseKind) -> bool {
        let mut changed = !self.refused_topics().is_empty();
        self.merge(response);
        changed |= match (&self.0, response) {
            (FixupKind::Metadata(_, asked), ResponseKind::Metadata(r)) => {
                metadata::filter_metadata(gate, asked.as_deref(), r)
            }
            (FixupKind::Fetch(refused), ResponseKind::Fetch(r)) => {
                fetch::filter_fetch(gate, &refused.denied, r)
            }
            (FixupKind::DescribeTopicPartitions(_), ResponseKind::DescribeTopicPartitions(r)) => {
                metadata::filter_describe_topic_partitions(gate, r)
            }
            (FixupKind::ListGroups, ResponseKind::ListGroups(r)) => {
                groups::filter_list_groups(gate, r)
            }
            (FixupKind::DescribeGroups(refused), ResponseKind::DescribeGroups(_)) => {
                !refused.is_empty()
            }
            (FixupKind::OffsetFetch(requested), ResponseKind::OffsetFetch(r)) => {
                groups::filter_offset_fetch(gate, requested, r)
            }
            _ => false,
        };
        changed
    }

    /// Re-add removed entries with TOPIC_AUTHORIZATION_FAILED.
    pub(super) fn merge(&self, response: &mut ResponseKind) {
        match &self.0 {
            FixupKind::Topics(r)
            | FixupKind::Fetch(r)
            | FixupKind::DescribeTopicPartitions(r)
            | FixupKind::Metadata(r, _) => (r.merge)(response, &r.denied, TOPIC_AUTH),
            FixupKind::Configs(d, merge) => merge(response, d),
            FixupKind::DescribeGroups(d) => groups::merge_describe_groups(response, d),
            FixupKind::Nothing | FixupKind::OffsetFetch(_) | FixupKind::ListGroups => {}
        }
    }

    /// The refused topic names (for logs and audit).
    pub fn refused_topics(&self) -> Vec<String> {
        match &self.0 {
            FixupKind::Topics(r)
            | FixupKind::Fetch(r)
            | FixupKind::DescribeTopicPartitions(r)
            | FixupKind::Metadata(r, _) => r.denied.iter().map(|t| t.name.0.to_string()).collect(),
            FixupKind::Configs(d, _) => d.iter().map(|x| x.name.to_string()).collect(),
            FixupKind::Nothing
            | FixupKind::OffsetFetch(_)
            | FixupKind::DescribeGroups(_)
            | FixupKind::ListGroups => Vec::new(),
        }
    }
}
