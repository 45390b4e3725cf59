//! The few messages of the Remote Workers API (package
//! `google.devtools.remoteworkers.v1test2`, service `Bots`) a worker needs,
//! declared by hand (the `bazel-remote-apis` crate does not carry them),
//! and a client for its two calls. Field numbers are those of BuildGrid
//! 0.4.4's `bots.proto` and `worker.proto`; fields a worker never reads or
//! writes (assignment, inline_assignment, requirements, update_mask) are
//! left out, which protobuf allows.

use std::time::Duration;

use bazel_remote_apis::google::protobuf::{Any, Timestamp};
use bazel_remote_apis::google::rpc::Status;
use kflow_cache::cas::Cas;
use tonic::codegen::http::uri::PathAndQuery;

#[derive(Clone, PartialEq, prost::Message)]
pub struct BotSession {
    /// `<instance>/<uuid>`, chosen by the server.
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub bot_id: String,
    #[prost(enumeration = "BotStatus", tag = "3")]
    pub status: i32,
    #[prost(message, optional, tag = "4")]
    pub worker: Option<Worker>,
    #[prost(message, repeated, tag = "5")]
    pub leases: Vec<Lease>,
    /// When the server gives up on a bot that has not called back.
    #[prost(message, optional, tag = "6")]
    pub expire_time: Option<Timestamp>,
    /// The server's count of lease changes: a bot sends back the last one
    /// it received, and a lease assigned in a reply it never got comes back.
    #[prost(string, tag = "7")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Lease {
    #[prost(enumeration = "LeaseState", tag = "2")]
    pub state: i32,
    #[prost(message, optional, tag = "3")]
    pub status: Option<Status>,
    #[prost(message, optional, tag = "5")]
    pub expire_time: Option<Timestamp>,
    #[prost(string, tag = "7")]
    pub id: String,
    /// A packed `build.bazel.remote.execution.v2.Action` (BuildGrid).
    #[prost(message, optional, tag = "8")]
    pub payload: Option<Any>,
    /// A packed `build.bazel.remote.execution.v2.ActionResult`.
    #[prost(message, optional, tag = "9")]
    pub result: Option<Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Worker {
    /// The first device is the one that runs commands.
    #[prost(message, repeated, tag = "1")]
    pub devices: Vec<Device>,
    #[prost(message, repeated, tag = "2")]
    pub properties: Vec<Property>,
    /// BuildGrid reads the key `capacity` here.
    #[prost(message, repeated, tag = "3")]
    pub configs: Vec<Property>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Device {
    #[prost(string, tag = "1")]
    pub handle: String,
    #[prost(message, repeated, tag = "2")]
    pub properties: Vec<Property>,
}

/// `Worker.Property`, `Worker.Config` and `Device.Property`: the same
/// key/value shape on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Property {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

impl Property {
    pub fn new(key: &str, value: &str) -> Property {
        Property {
            key: key.to_owned(),
            value: value.to_owned(),
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateBotSessionRequest {
    #[prost(string, tag = "1")]
    pub parent: String,
    #[prost(message, optional, tag = "2")]
    pub bot_session: Option<BotSession>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateBotSessionRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub bot_session: Option<BotSession>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum BotStatus {
    Unspecified = 0,
    Ok = 1,
    Unhealthy = 2,
    HostRebooting = 3,
    BotTerminating = 4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum LeaseState {
    Unspecified = 0,
    Pending = 1,
    Active = 2,
    Completed = 4,
    Cancelled = 5,
}

const CREATE: &str = "/google.devtools.remoteworkers.v1test2.Bots/CreateBotSession";
const UPDATE: &str = "/google.devtools.remoteworkers.v1test2.Bots/UpdateBotSession";

/// The `Bots` service of one server, over the CAS client's channel (and
/// with its bearer token).
#[derive(Clone, Debug)]
pub struct BotsClient {
    cas: Cas,
}

impl BotsClient {
    pub fn new(cas: &Cas) -> BotsClient {
        BotsClient { cas: cas.clone() }
    }

    /// Registers a session under `parent` (the instance name). The server
    /// long-polls for 0.8 x min(`deadline`, its keepalive) when `deadline`
    /// is 3 s or more.
    pub async fn create(
        &self,
        parent: &str,
        session: BotSession,
        deadline: Duration,
    ) -> Result<BotSession, tonic::Status> {
        let message = CreateBotSessionRequest {
            parent: parent.to_owned(),
            bot_session: Some(session),
        };
        self.call(CREATE, message, deadline).await
    }

    /// Reports the session's leases and receives the server's view of them.
    pub async fn update(&self, session: BotSession, deadline: Duration) -> Result<BotSession, tonic::Status> {
        let message = UpdateBotSessionRequest {
            name: session.name.clone(),
            bot_session: Some(session),
        };
        self.call(UPDATE, message, deadline).await
    }

    async fn call<M>(&self, path: &'static str, message: M, deadline: Duration) -> Result<BotSession, tonic::Status>
    where
        M: prost::Message + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.cas.channel.clone());
        let mut request = self.cas.request(message);
        // The server reads the deadline to size its long poll.
        request.set_timeout(deadline);
        let call = async {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("the server is not ready: {e}")))?;
            let codec = tonic_prost::ProstCodec::<M, BotSession>::default();
            grpc.unary(request, PathAndQuery::from_static(path), codec).await
        };
        // Our own bound too: a dead peer must not hang the worker.
        match tokio::time::timeout(deadline + Duration::from_secs(2), call).await {
            Ok(reply) => Ok(reply?.into_inner()),
            Err(_) => Err(tonic::Status::deadline_exceeded("no answer from the server in time")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Field numbers as BuildGrid's descriptors give them, checked on the
    /// bytes: `BotSession.version` is field 7 (tag 0x3a), `Lease.id` 7 and
    /// `Lease.state` 2.
    #[test]
    fn field_numbers_match_the_protocol() {
        let session = BotSession {
            version: "3".into(),
            ..Default::default()
        };
        assert_eq!(session.encode_to_vec(), vec![0x3a, 1, b'3']);
        let lease = Lease {
            id: "x".into(),
            state: LeaseState::Completed as i32,
            ..Default::default()
        };
        assert_eq!(lease.encode_to_vec(), vec![0x10, 4, 0x3a, 1, b'x']);
    }
}
