//! The fault-injection harness (test-only).
//!
//! Will own: starting real multi-node clusters as processes (3 metad, 3 blockd, gateways
//! behind HAProxy, an S3 server), running NFS clients that record every acknowledged
//! operation, injecting seeded faults (kill -9, SIGSTOP, partitions, full disks, S3
//! outages) and checking that nothing acknowledged was lost and that histories are
//! linearizable. Empty until the cluster-deployment issue.
//!
//! Must never: be a dependency of a daemon; it is a harness only.
