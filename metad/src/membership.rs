//! Membership of the metad group: listing the members, adding a node (as a learner, waiting
//! until it has caught up, then promoting it to voter if asked) and removing one.
//!
//! Owns: the membership view operators see ([`MembersView`]) and the rules of changing it on
//! the leader (openraft's `add_learner` / `change_membership`, one joint-consensus change at a
//! time). Adding a node that is already a member at the same address is a no-op (so a node
//! restarted with an empty data directory can ask to join again); removing the last voter is
//! refused.
//! Must never: change membership on a follower (the caller forwards to the leader), or wait
//! without a bound.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ChangeMembers, ServerState};
use proto::FsError;

use crate::error::{MetadError, Result};
use crate::node::Metad;

/// How long `add_node` waits for a new node to catch up before giving up (it stays a learner).
pub const CATCH_UP_DEADLINE: Duration = Duration::from_secs(60);

/// One member as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub node_id: u64,
    pub addr: String,
    pub voter: bool,
    /// The last log index the leader knows this member holds (leader only).
    pub matched_index: Option<u64>,
}

/// The group as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersView {
    pub members: Vec<MemberInfo>,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
}

fn raft_err(e: impl std::fmt::Display) -> MetadError {
    MetadError::Raft(e.to_string())
}

impl Metad {
    /// The current membership, leader, term and commit index; matched indexes on the leader.
    pub fn members(&self) -> MembersView {
        let rx = self.raft().metrics();
        let m = rx.borrow_watched();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberInfo {
                node_id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
                matched_index: m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id))
                    .map(|l| l.as_ref().map(|l| l.index()).unwrap_or(0)),
            })
            .collect();
        MembersView {
            members,
            leader_id: m.current_leader,
            term: m.current_term,
            commit_index: m.local_committed.as_ref().map(|l| l.index()).unwrap_or(0),
        }
    }

    /// `NotLeader` unless this node is the leader.
    fn ensure_leader(&self) -> Result<()> {
        let rx = self.raft().metrics();
        let m = rx.borrow_watched();
        if m.state == ServerState::Leader { Ok(()) } else { Err(MetadError::NotLeader { leader: m.current_leader }) }
    }

    /// Adds node `id` at `addr` as a learner, waits (up to [`CATCH_UP_DEADLINE`]) until it has
    /// caught up with the log, then makes it a voter if `voter`. Leader only.
    pub async fn add_node(&self, id: u64, addr: &str, voter: bool) -> Result<MembersView> {
        if id == 0 {
            return Err(FsError::Invalid("node id 0 is not allowed".into()).into());
        }
        if tonic::transport::Endpoint::from_shared(addr.to_string()).is_err() || !addr.starts_with("http") {
            return Err(FsError::Invalid(format!("bad node address {addr:?} (want http://host:port)")).into());
        }
        self.ensure_leader()?;
        let current = self.members();
        let existing = current.members.iter().find(|m| m.node_id == id);
        if existing.is_some_and(|m| m.addr == addr && (m.voter || !voter)) {
            return Ok(current);
        }
        let raft = self.raft();
        if existing.is_none_or(|m| m.addr != addr) {
            raft.add_learner(id, BasicNode::new(addr), false).await.map_err(|e| match e.forward_to_leader() {
                Some(f) => MetadError::NotLeader { leader: f.leader_id },
                None => raft_err(e),
            })?;
        }
        let target = raft.metrics().borrow_watched().last_log_index.unwrap_or(0);
        raft.wait(Some(CATCH_UP_DEADLINE))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id))
                        .is_some_and(|l| l.as_ref().is_some_and(|l| l.index() >= target))
                },
                "the new node to catch up",
            )
            .await
            .map_err(|_| MetadError::Timeout { what: "the new node to catch up with the log" })?;
        if voter && !existing.is_some_and(|m| m.voter) {
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await.map_err(
                |e| match e.forward_to_leader() {
                    Some(f) => MetadError::NotLeader { leader: f.leader_id },
                    None => raft_err(e),
                },
            )?;
        }
        tracing::info!(node_id = id, addr, voter, "node added");
        Ok(self.members())
    }

    /// Removes node `id` (demoting it first if it is a voter). Leader only.
    pub async fn remove_node(&self, id: u64) -> Result<MembersView> {
        self.ensure_leader()?;
        let current = self.members();
        let Some(member) = current.members.iter().find(|m| m.node_id == id) else {
            return Err(FsError::NotFound.into());
        };
        let change = if member.voter {
            if current.members.iter().filter(|m| m.voter).count() <= 1 {
                return Err(FsError::Invalid("cannot remove the last voter".into()).into());
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft().change_membership(change, false).await.map_err(|e| match e.forward_to_leader() {
            Some(f) => MetadError::NotLeader { leader: f.leader_id },
            None => raft_err(e),
        })?;
        tracing::info!(node_id = id, "node removed");
        Ok(self.members())
    }
}
