//! Two network namespaces joined by a veth pair, for peers that really vanish.
//!
//! [`NetPair::new`] creates a server and a client namespace (unique names per test: process
//! id + counter), joins them with a veth pair and addresses both ends inside a private
//! `10.x.y.0/30` ([`NetPair::routed`] puts a router namespace in between). Sockets are created inside a namespace from this process by a short-lived
//! thread that enters it with `setns(CLONE_NEWNET)`; a socket keeps the namespace it was
//! created in, so the test hands it to tokio afterwards. [`NetPair::vanish_client`] installs
//! a `blackhole` qdisc on the client's interface: every packet the client would send is
//! dropped, so the server never sees a FIN or a RST (a true half-open connection).
//!
//! Everything is deleted in `Drop`, also when the test panics. Creating the namespaces
//! needs root (CI runs as root): a test first requires [`Need::Netns`] (and
//! [`Need::Blackhole`] to vanish), so that it skips, or fails in CI, with the reason.
//!
//! [`Need::Netns`]: crate::system::Need::Netns
//! [`Need::Blackhole`]: crate::system::Need::Blackhole

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
use socket2::{Domain, Protocol, Socket, Type};

use crate::ss::ss_output;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A server and a client namespace joined by a veth pair. Deleted on drop.
#[derive(Debug)]
pub struct NetPair {
    /// Name of the server's namespace (`/var/run/netns/<name>`).
    pub server_ns: String,
    /// Name of the client's namespace.
    pub client_ns: String,
    /// Name of the router's namespace, for [`NetPair::routed`] pairs.
    pub router_ns: Option<String>,
    /// The veth end inside the server's namespace.
    pub server_if: String,
    /// The veth end inside the client's namespace.
    pub client_if: String,
    /// The server's address (on `server_if`).
    pub server_ip: Ipv4Addr,
    /// The client's address (on `client_if`).
    pub client_ip: Ipv4Addr,
}

/// Runs `ip` with `args`; panics with its stderr (and a hint) if it fails.
fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `ip {}`: {e} (iproute2 must be installed)",
            args.join(" ")
        )
    });
    assert!(
        out.status.success(),
        "`ip {}` failed ({}): {}\nNetwork namespaces need root (CAP_NET_ADMIN + \
         CAP_SYS_ADMIN); a test that uses them requires `Need::Netns` first.",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

impl NetPair {
    /// Creates both namespaces joined directly by one veth pair, addresses in one `/30`,
    /// every link up.
    ///
    /// # Panics
    ///
    /// If anything cannot be created (not root, no iproute2, no veth support), with the
    /// command and its error.
    #[allow(clippy::new_without_default)] // creates namespaces: no default value
    pub fn new() -> Self {
        Self::create(false)
    }

    /// Like [`new`](Self::new), but with a router namespace in between: the server in
    /// one `/30`, the client in another, the router forwarding between them. Needed for
    /// ICMP errors (a router that lost its route to the client answers the server with
    /// "host unreachable"); see [`router_drop_route_to_client`](Self::router_drop_route_to_client).
    pub fn routed() -> Self {
        Self::create(true)
    }

    fn create(routed: bool) -> Self {
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Interface names must fit in IFNAMSIZ - 1 = 15 bytes: "hv" + pid (≤ 7 digits)
        // + "x" + n (≤ 3 digits in practice) + a suffix of ≤ 2.
        let tag = format!("hv{pid}x{n}");
        assert!(tag.len() <= 13, "interface names from {tag} too long");
        // Addresses only matter inside these namespaces, which nothing else shares; they
        // are still distinct per process and test to keep `ss` output unambiguous:
        // 10.<pid>.<n>.0/30 for the server's link, 10.<pid>.<n>.4/30 for the client's
        // link when routed.
        let (b, c) = (100 + (pid % 100) as u8, (n % 256) as u8);
        let net = |host| Ipv4Addr::new(10, b, c, host);
        let mut pair = NetPair {
            server_ns: format!("{tag}s"),
            client_ns: format!("{tag}c"),
            router_ns: None,
            server_if: format!("{tag}s"),
            client_if: format!("{tag}c"),
            server_ip: net(1),
            client_ip: net(if routed { 6 } else { 2 }),
        };
        // From here on Drop cleans up whatever was created, also if a later step panics.
        ip(&["netns", "add", &pair.server_ns]);
        ip(&["netns", "add", &pair.client_ns]);
        let link = |a_if: &str, a_ns: &str, b_if: &str, b_ns: &str| {
            // Created directly inside the namespaces: no name appears in the root one.
            ip(&[
                "link", "add", a_if, "netns", a_ns, "type", "veth", "peer", "name", b_if, "netns",
                b_ns,
            ]);
        };
        let addr = |ns: &str, dev: &str, ip4: Ipv4Addr| {
            ip(&["-n", ns, "addr", "add", &format!("{ip4}/30"), "dev", dev]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        };
        if routed {
            let router = format!("{tag}r");
            ip(&["netns", "add", &router]);
            pair.router_ns = Some(router.clone());
            let (r_server_if, r_client_if) = (format!("{tag}rs"), format!("{tag}rc"));
            link(&pair.server_if, &pair.server_ns, &r_server_if, &router);
            link(&pair.client_if, &pair.client_ns, &r_client_if, &router);
            addr(&pair.server_ns, &pair.server_if, pair.server_ip);
            addr(&pair.client_ns, &pair.client_if, pair.client_ip);
            addr(&router, &r_server_if, net(2));
            addr(&router, &r_client_if, net(5));
            let (via_server, via_client) = (net(2).to_string(), net(5).to_string());
            ip(&[
                "-n",
                &pair.server_ns,
                "route",
                "add",
                "default",
                "via",
                &via_server,
            ]);
            ip(&[
                "-n",
                &pair.client_ns,
                "route",
                "add",
                "default",
                "via",
                &via_client,
            ]);
            ip(&[
                "netns",
                "exec",
                &router,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ]);
        } else {
            link(
                &pair.server_if,
                &pair.server_ns,
                &pair.client_if,
                &pair.client_ns,
            );
            addr(&pair.server_ns, &pair.server_if, pair.server_ip);
            addr(&pair.client_ns, &pair.client_if, pair.client_ip);
        }
        pair
    }

    /// The router forgets how to reach the client (an `unreachable` route): from now on
    /// it answers every packet the server sends to the client with ICMP "host
    /// unreachable". Only for [`routed`](Self::routed) pairs.
    pub fn router_drop_route_to_client(&self) {
        let router = self
            .router_ns
            .as_deref()
            .expect("NetPair::routed() has a router");
        let host = format!("{}/32", self.client_ip);
        ip(&["-n", router, "route", "add", "unreachable", &host]);
    }

    /// A nonblocking listener on `server_ip:0` inside the server's namespace, ready for
    /// `tokio::net::TcpListener::from_std`.
    pub fn listen(&self) -> std::net::TcpListener {
        let addr = SocketAddr::V4(SocketAddrV4::new(self.server_ip, 0));
        let listener = in_netns(&self.server_ns, move || std::net::TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", self.server_ns));
        listener.set_nonblocking(true).expect("set_nonblocking");
        listener
    }

    /// A connected, nonblocking stream from the client's namespace to `to`, ready for
    /// `tokio::net::TcpStream::from_std`. `configure` runs on the socket before `connect`
    /// (buffer sizes, linger …).
    pub fn connect_with(
        &self,
        to: SocketAddr,
        configure: impl FnOnce(&Socket) -> std::io::Result<()> + Send + 'static,
    ) -> std::net::TcpStream {
        let stream = in_netns(&self.client_ns, move || {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            configure(&socket)?;
            socket.connect_timeout(&to.into(), Duration::from_secs(5))?;
            Ok(std::net::TcpStream::from(socket))
        })
        .unwrap_or_else(|e| panic!("connect to {to} from {}: {e}", self.client_ns));
        stream.set_nonblocking(true).expect("set_nonblocking");
        stream
    }

    /// [`connect_with`](Self::connect_with) with no extra configuration.
    pub fn connect(&self, to: SocketAddr) -> std::net::TcpStream {
        self.connect_with(to, |_| Ok(()))
    }

    /// The client vanishes: every packet it would send is dropped from now on (no FIN, no
    /// RST, no ACK reaches the server).
    pub fn vanish_client(&self) {
        blackhole(&self.client_ns, &self.client_if);
    }

    /// The server's packets are lost from now on: its SYN-ACKs, FINs and ACKs never reach
    /// the client, while the client's still arrive. With [`pin_neighbours`](Self::pin_neighbours)
    /// the client can still start handshakes (it needs no ARP reply).
    pub fn blackhole_server(&self) {
        blackhole(&self.server_ns, &self.server_if);
    }

    /// Permanent neighbour (ARP) entries on both ends of a direct pair, so that a
    /// blackholed end — which cannot answer ARP — neither fails a new handshake nor makes
    /// the other end's neighbour entry fail later. Only for [`new`](Self::new) pairs.
    pub fn pin_neighbours(&self) {
        assert!(
            self.router_ns.is_none(),
            "pin_neighbours is for direct pairs"
        );
        let mac = |ns: &str, dev: &str| {
            let out = ip(&["-n", ns, "-o", "link", "show", "dev", dev]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut words = text.split_whitespace();
            words
                .find(|w| *w == "link/ether")
                .and_then(|_| words.next())
                .unwrap_or_else(|| panic!("no MAC address for {dev} in {ns}: {text}"))
                .to_owned()
        };
        let server_mac = mac(&self.server_ns, &self.server_if);
        let client_mac = mac(&self.client_ns, &self.client_if);
        for (ns, dev, ip4, lladdr) in [
            (
                &self.client_ns,
                &self.client_if,
                self.server_ip,
                &server_mac,
            ),
            (
                &self.server_ns,
                &self.server_if,
                self.client_ip,
                &client_mac,
            ),
        ] {
            let ip4 = ip4.to_string();
            ip(&[
                "-n",
                ns,
                "neigh",
                "replace",
                &ip4,
                "lladdr",
                lladdr,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }
    }

    /// Starts a connection from the client's namespace to `to` and returns at once with
    /// the socket (nonblocking), whether or not the handshake can complete.
    pub fn start_connect(&self, to: SocketAddr) -> Socket {
        in_netns(&self.client_ns, move || {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            socket.set_nonblocking(true)?;
            match socket.connect(&to.into()) {
                Ok(()) => Ok(socket),
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(socket),
                Err(e) => Err(e),
            }
        })
        .unwrap_or_else(|e| panic!("start connecting to {to} from {}: {e}", self.client_ns))
    }

    /// A command that runs `program` inside the server's namespace (`ip netns exec`).
    pub fn server_command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.server_ns, program]);
        cmd
    }

    /// `ss -Htan state STATE '( sport = :PORT )'` inside the server's namespace: the server
    /// sockets on `port` in `state` (`all`, `established`, `fin-wait-1`, …), one per line.
    /// Listening sockets are left out.
    pub fn server_ss(&self, port: u16, state: &str) -> Vec<String> {
        let filter = format!("( sport = :{port} )");
        let mut ss = self.server_command("ss");
        ss.args(["-Htan", "state", state, &filter]);
        ss_output(ss)
            .into_iter()
            .filter(|l| !l.starts_with("LISTEN"))
            .collect()
    }

    /// `ss -tino` for `port` inside the server's namespace, for failure messages.
    pub fn server_ss_detail(&self, port: u16) -> String {
        let filter = format!("( sport = :{port} )");
        let out = self
            .server_command("ss")
            .args(["-Htanio", "state", "all", &filter])
            .output()
            .expect("run ss in the server namespace");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        // Deleting a namespace destroys its end of the veth pair, which destroys the other
        // end too. Sockets still open keep a namespace alive, unnamed, until they close.
        let router = self.router_ns.iter();
        for ns in [&self.server_ns, &self.client_ns].into_iter().chain(router) {
            match Command::new("ip").args(["netns", "del", ns]).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    let err = String::from_utf8_lossy(&out.stderr);
                    // Creation may have failed before this namespace existed.
                    if !err.contains("No such file") {
                        eprintln!("warning: ip netns del {ns}: {}", err.trim());
                    }
                }
                Err(e) => eprintln!("warning: ip netns del {ns}: {e}"),
            }
        }
    }
}

/// Every packet `dev` in namespace `ns` would send is dropped from now on.
fn blackhole(ns: &str, dev: &str) {
    ip(&[
        "netns",
        "exec",
        ns,
        "tc",
        "qdisc",
        "add",
        "dev",
        dev,
        "root",
        "blackhole",
    ]);
}

/// Runs `f` on a new thread that has entered the network namespace `ns` and returns its
/// result. Sockets created by `f` stay in `ns` for their whole life, whichever thread or
/// runtime uses them later.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path)?;
        // Only this thread changes namespace; it is ours and ends after `f`.
        move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))?;
        f()
    })
    .join()
    .expect("namespace thread panicked")
}
