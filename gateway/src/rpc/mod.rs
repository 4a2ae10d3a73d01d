//! ONC RPC version 2 (RFC 5531) as the NFS and MOUNT programs need it, sans-IO.
//!
//! Owns: record marking (`record`), the call/reply envelopes (`message`), credentials
//! (`auth`), the protocol error type (`error`), the dispatcher that turns one record
//! into one reply over a `Vfs` (`dispatch`) and the duplicate request cache it consults
//! (`drc`).
//!
//! Must never: touch sockets (that is `server`) or know a procedure's arguments (that is
//! each program's module).

pub mod auth;
pub mod dispatch;
pub mod drc;
#[cfg(test)]
mod drc_tests;
pub mod error;
pub mod message;
pub mod record;

pub use auth::Credentials;
pub use dispatch::{CallContext, ProcOutcome, handle_call, handle_call_with_drc, handle_record};
pub use drc::{DrcOptions, DuplicateRequestCache};
pub use error::ProtocolError;
