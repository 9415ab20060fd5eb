//! `Serialize` for a census: the document `tcp-hygiene census --json` prints. The parts
//! that are plain data ([`Process`](super::Process), [`ListenQueue`](super::ListenQueue),
//! [`Lingering`](super::Lingering), [`Source`](super::Source)) derive it where they are
//! defined; a census and a port are serialized through a view of what their methods
//! compute (the diagnosis, the states present), so the document says what the API says.

use serde::{Serialize, Serializer};
use tcp_hygiene::KernelState;

use super::{Census, Lingering, ListenQueue, PortCensus, Process, Source};

impl Serialize for Census {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        CensusDocument {
            ports: self.ports().collect(),
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
        PortDocument {
            port: self.port(),
            states: self.states().collect(),
            orphans: self.orphans(),
            processes: self.processes(),
            diagnosis: self.diagnosis(),
            owner_unknown: self.owner_unknown(),
            awaiting_accept: self.awaiting_accept(),
            lingered_ms: self.lingering().collect(),
            listen: self.listen(),
        }
        .serialize(serializer)
    }
}

#[derive(Serialize)]
struct CensusDocument<'a> {
    ports: Vec<&'a PortCensus>,
    source: Option<Source>,
    fallback_reason: Option<&'a str>,
    netns: Option<&'a str>,
    listen_overflows: Option<u64>,
    listen_drops: Option<u64>,
    /// The namespace-wide lines; each port holds its own.
    diagnosis: Vec<String>,
}

#[derive(Serialize)]
struct PortDocument<'a> {
    port: u16,
    #[serde(serialize_with = "by_state")]
    states: Vec<(KernelState, u64)>,
    orphans: u64,
    processes: &'a [Process],
    diagnosis: Vec<String>,
    owner_unknown: u64,
    awaiting_accept: u64,
    #[serde(serialize_with = "by_state")]
    lingered_ms: Vec<(KernelState, Lingering)>,
    listen: Option<ListenQueue>,
}

/// A map keyed by the kernel's state names, in the census's order.
fn by_state<S: Serializer, T: Serialize>(
    pairs: &[(KernelState, T)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(pairs.iter().map(|(state, value)| (state.as_str(), value)))
}
