//! `Serialize` for a census: the document `tcp-hygiene census --json` prints. The parts
//! that are plain data ([`Process`](super::Process), [`ListenQueue`](super::ListenQueue),
//! [`Lingering`](super::Lingering), [`Source`](super::Source)) derive it where they are
//! defined; a census and a port are serialized through a view of what their methods
//! compute (the diagnosis, the states present), so the document says what the API says.

use serde::{Serialize, Serializer};
use tcp_hygiene::KernelState;

use super::{Census, Lingering, ListenQueue, PortCensus, Process, ProcessSockets, Side, Source};

impl Serialize for Census {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        CensusDocument {
            totals: Totals {
                sockets: self.sockets(),
                states: self.states().collect(),
                orphans: self.orphans(),
            },
            ports: self.ports().collect(),
            remotes: self.remotes().collect(),
            source: self.source(),
            fallback_reason: self.fallback_reason(),
            netns: self.netns(),
            listen_overflows: self.listen_overflows(),
            listen_drops: self.listen_drops(),
            diagnosis: self.host_diagnosis(),
        }
        .serialize(serializer)
    }
}

impl Serialize for PortCensus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let server = self.side() == Side::Server;
        PortDocument {
            port: server.then_some(self.port()),
            remote: self.remote().map(|r| r.to_string()),
            states: self.states().collect(),
            orphans: self.orphans(),
            processes: self.processes(),
            by_process: self.by_process(),
            diagnosis: self.diagnosis(),
            owner_unknown: self.owner_unknown(),
            awaiting_accept: server.then_some(self.awaiting_accept()),
            lingered_ms: self.lingering().collect(),
            listen: server.then_some(self.listen()),
        }
        .serialize(serializer)
    }
}

impl Serialize for ProcessSockets {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ProcessDocument {
            pid: self.process.pid,
            command: &self.process.command,
            sockets: self.sockets(),
            states: self.states().collect(),
        }
        .serialize(serializer)
    }
}

#[derive(Serialize)]
struct ProcessDocument<'a> {
    pid: u32,
    command: &'a str,
    sockets: u64,
    #[serde(serialize_with = "by_state")]
    states: Vec<(KernelState, u64)>,
}

#[derive(Serialize)]
struct Totals {
    sockets: u64,
    #[serde(serialize_with = "by_state")]
    states: Vec<(KernelState, u64)>,
    orphans: u64,
}

#[derive(Serialize)]
struct CensusDocument<'a> {
    totals: Totals,
    /// The server side, by local port.
    ports: Vec<&'a PortCensus>,
    /// The client side, by remote endpoint.
    remotes: Vec<&'a PortCensus>,
    source: Option<Source>,
    fallback_reason: Option<&'a str>,
    netns: Option<&'a str>,
    listen_overflows: Option<u64>,
    listen_drops: Option<u64>,
    /// The namespace-wide lines; each port holds its own.
    diagnosis: Vec<String>,
}

/// A group: `port`, `awaiting_accept` and `listen` on the server side, `remote` on the
/// client side.
#[derive(Serialize)]
struct PortDocument<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote: Option<String>,
    #[serde(serialize_with = "by_state")]
    states: Vec<(KernelState, u64)>,
    orphans: u64,
    processes: &'a [Process],
    by_process: &'a [ProcessSockets],
    diagnosis: Vec<String>,
    owner_unknown: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    awaiting_accept: Option<u64>,
    #[serde(serialize_with = "by_state")]
    lingered_ms: Vec<(KernelState, Lingering)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<Option<ListenQueue>>,
}

/// A map keyed by the kernel's state names, in the census's order.
fn by_state<S: Serializer, T: Serialize>(
    pairs: &[(KernelState, T)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(pairs.iter().map(|(state, value)| (state.as_str(), value)))
}
