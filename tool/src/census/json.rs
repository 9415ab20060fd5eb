//! A census as one JSON object (`tcp-hygiene census --json`).

use std::fmt::Write;

use super::{Census, PortCensus};

impl Census {
    /// The census as one JSON object:
    ///
    /// ```text
    /// {"ports":[{"port":8080,
    ///            "states":{"LISTEN":1,"CLOSE_WAIT":15},
    ///            "orphans":0,
    ///            "processes":[{"pid":4242,"command":"java"}],
    ///            "diagnosis":["CLOSE_WAIT: 15 on port 8080, lingered …"],
    ///            "owner_unknown":0,
    ///            "awaiting_accept":0,
    ///            "lingered_ms":{"CLOSE_WAIT":{"sockets":15,"newest":812,"median":5914,"oldest":6120}},
    ///            "listen":{"listeners":1,"accept_queue":0,"backlog":128,"full":false}}],
    ///  "source":"sock_diag","fallback_reason":null,"netns":null,
    ///  "listen_overflows":0,"listen_drops":0,
    ///  "diagnosis":[]}
    /// ```
    ///
    /// States use the kernel's names, upper case with underscores (`ESTABLISHED`,
    /// `SYN_SENT`, `SYN_RECV`, `FIN_WAIT_1`, `FIN_WAIT_2`, `TIME_WAIT`, `CLOSE_WAIT`,
    /// `LAST_ACK`, `LISTEN`, `CLOSING`), only those with sockets. `listen` is `null` on a
    /// port without listeners, `backlog` `null` from `/proc`. The top-level `diagnosis`
    /// holds the namespace-wide lines; each port holds its own.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"ports\":[");
        for (i, port) in self.ports().enumerate() {
            if i > 0 {
                out.push(',');
            }
            port_json(port, &mut out);
        }
        out.push_str("],\"source\":");
        optional_string(self.source().map(|s| s.as_str()), &mut out);
        out.push_str(",\"fallback_reason\":");
        optional_string(self.fallback_reason(), &mut out);
        out.push_str(",\"netns\":");
        optional_string(self.netns(), &mut out);
        let _ = write!(
            out,
            ",\"listen_overflows\":{},\"listen_drops\":{},\"diagnosis\":",
            number(self.listen_overflows()),
            number(self.listen_drops())
        );
        strings(&self.host_diagnosis(), &mut out);
        out.push('}');
        out
    }
}

fn port_json(port: &PortCensus, out: &mut String) {
    let _ = write!(out, "{{\"port\":{},\"states\":{{", port.port());
    for (i, (state, n)) in port.states().enumerate() {
        let comma = if i > 0 { "," } else { "" };
        let _ = write!(out, "{comma}\"{state}\":{n}");
    }
    let _ = write!(out, "}},\"orphans\":{},\"processes\":[", port.orphans());
    for (i, process) in port.processes().iter().enumerate() {
        let comma = if i > 0 { "," } else { "" };
        let _ = write!(out, "{comma}{{\"pid\":{},\"command\":", process.pid);
        string(&process.command, out);
        out.push('}');
    }
    out.push_str("],\"diagnosis\":");
    strings(&port.diagnosis(), out);
    let _ = write!(
        out,
        ",\"owner_unknown\":{},\"awaiting_accept\":{},\"lingered_ms\":{{",
        port.owner_unknown(),
        port.awaiting_accept()
    );
    for (i, (state, l)) in port.lingering().enumerate() {
        let comma = if i > 0 { "," } else { "" };
        let _ = write!(
            out,
            "{comma}\"{state}\":{{\"sockets\":{},\"newest\":{},\"median\":{},\"oldest\":{}}}",
            l.sockets,
            l.newest.as_millis(),
            l.median.as_millis(),
            l.oldest.as_millis()
        );
    }
    out.push_str("},\"listen\":");
    match port.listen() {
        None => out.push_str("null"),
        Some(q) => {
            let _ = write!(
                out,
                "{{\"listeners\":{},\"accept_queue\":{},\"backlog\":{},\"full\":{}}}",
                q.listeners,
                q.accept_queue,
                number(q.backlog),
                q.full
            );
        }
    }
    out.push('}');
}

fn number<T: ToString>(n: Option<T>) -> String {
    n.map_or_else(|| "null".to_owned(), |n| n.to_string())
}

fn strings(items: &[String], out: &mut String) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(item, out);
    }
    out.push(']');
}

fn optional_string(s: Option<&str>, out: &mut String) {
    match s {
        Some(s) => string(s, out),
        None => out.push_str("null"),
    }
}

/// A JSON string literal (RFC 8259 escapes).
fn string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        string("a\"b\\c\nd\u{1}é", &mut out);
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn an_empty_census() {
        assert_eq!(
            Census::default().to_json(),
            "{\"ports\":[],\"source\":null,\"fallback_reason\":null,\"netns\":null,\
             \"listen_overflows\":null,\"listen_drops\":null,\"diagnosis\":[]}"
        );
    }
}
