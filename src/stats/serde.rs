//! The `serde` feature: `Serialize` for the types an application reports. The enums are
//! their `as_str` names; `Stats` has a key for every field and every state and reason,
//! so its document keeps one shape as counts change.

use serde::ser::{Serialize, SerializeMap, SerializeStruct, Serializer};

use super::{ConnectionSnapshot, Stats};
use crate::state::{CloseReason, ConnectionState};
use crate::tcp_info::KernelState;

macro_rules! as_str {
    ($($ty:ty),*) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    )*};
}

as_str!(ConnectionState, CloseReason, KernelState);

/// A map of every state (or reason) to its count.
struct Counts<T: 'static, F>(&'static [T], F);

impl<T: Copy + Serialize, F: Fn(T) -> u64> Serialize for Counts<T, F> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for key in self.0 {
            map.serialize_entry(key, &(self.1)(*key))?;
        }
        map.end()
    }
}

impl Serialize for Stats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Stats", 14)?;
        s.serialize_field("accepted", &self.accepted)?;
        s.serialize_field("open", &self.open)?;
        s.serialize_field("released", &self.released)?;
        let by_state = Counts(&ConnectionState::ALL, |st| self.open_in(st));
        s.serialize_field("open_by_state", &by_state)?;
        let by_reason = Counts(&CloseReason::ALL, |r| self.closed(r));
        s.serialize_field("closed_by_reason", &by_reason)?;
        s.serialize_field("socket_option_failures", &self.socket_option_failures)?;
        s.serialize_field("fin_watch_failures", &self.fin_watch_failures)?;
        s.serialize_field("accept_errors", &self.accept_errors)?;
        s.serialize_field("accept_resource_errors", &self.accept_resource_errors)?;
        s.serialize_field("accept_backoffs", &self.accept_backoffs)?;
        s.serialize_field("rejected_per_ip", &self.rejected_per_ip)?;
        s.serialize_field("connected", &self.connected)?;
        s.serialize_field("connect_errors", &self.connect_errors)?;
        s.serialize_field("tls_handshake_failures", &self.tls_handshake_failures)?;
        s.end()
    }
}

/// `age` is `age_seconds`, a float.
impl Serialize for ConnectionSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("ConnectionSnapshot", 8)?;
        s.serialize_field("id", &self.id)?;
        s.serialize_field("peer_addr", &self.peer_addr)?;
        s.serialize_field("age_seconds", &self.age.as_secs_f64())?;
        s.serialize_field("state", &self.state)?;
        s.serialize_field("close_reason", &self.close_reason)?;
        s.serialize_field("bytes_read", &self.bytes_read)?;
        s.serialize_field("bytes_written", &self.bytes_written)?;
        s.serialize_field("tcp_info", &self.tcp_info)?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_serialize_every_key_in_order() {
        let counters = crate::stats::Counters::default();
        counters.accepted();
        counters.enter_state(ConnectionState::PeerClosed);
        counters.closed(CloseReason::CloseWaitTimeout);
        let stats = counters.snapshot();
        assert_eq!(stats.closed(CloseReason::CloseWaitTimeout), 1);
        let text = serde_json::to_string(&stats).unwrap();
        let keys = [
            "accepted",
            "open",
            "released",
            "open_by_state",
            "closed_by_reason",
            "socket_option_failures",
            "fin_watch_failures",
            "accept_errors",
            "accept_resource_errors",
            "accept_backoffs",
            "rejected_per_ip",
            "connected",
            "connect_errors",
            "tls_handshake_failures",
        ];
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let object = json.as_object().unwrap();
        assert_eq!(object.keys().count(), keys.len(), "{text}");
        let at: Vec<usize> = keys
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(json["accepted"], 1);
        assert_eq!(json["open"], 1);
        assert_eq!(json["open_by_state"]["peer_closed"], 1);
        assert_eq!(json["closed_by_reason"]["close_wait_timeout"], 1);
        let reasons = json["closed_by_reason"].as_object().unwrap();
        assert_eq!(
            reasons.len(),
            CloseReason::ALL.len(),
            "every reason, zeros too"
        );
        let states = json["open_by_state"].as_object().unwrap();
        assert_eq!(
            states.len(),
            ConnectionState::ALL.len(),
            "every state, zeros too"
        );
    }

    #[test]
    fn enums_serialize_as_their_names() {
        for reason in CloseReason::ALL {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
        }
        let json = serde_json::to_string(&KernelState::CloseWait).unwrap();
        assert_eq!(json, "\"CLOSE_WAIT\"");
    }
}
