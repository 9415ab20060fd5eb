//! `tcp-hygiene`: a host-wide census of TCP states with a diagnosis of every unusual pile,
//! and a reaper for lingering sockets of any process. Linux only.
//!
//! ```text
//! tcp-hygiene census [--port P] [--json] [--top N | --all] [--watch SECS [--count N]]
//!                    [--netns NAME]
//! tcp-hygiene reap (--port P | --remote-port P) --idle-ms N [--pid PID]
//!                  [--state close-wait|fin-wait-2|last-ack|fin-wait-1]
//!                  [--dry-run] [--limit K] [--json] [--every SECS [--count N]] [--netns NAME]
//! tcp-hygiene exporter --listen ADDR [--netns NAME]
//! ```
//!
//! Install with `cargo install tcp-hygiene-cli`. Exit status: 0 done (also when the
//! reader of the output went away, or SIGTERM/SIGINT stopped a guard or the exporter),
//! 1 an error (printed on stderr), 2 a usage error or not Linux.

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "tcp-hygiene: Linux only (it reads the kernel's socket tables through netlink \
         sock_diag and /proc, and destroys sockets with SOCK_DESTROY)"
    );
    std::process::ExitCode::from(2)
}

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    linux::main()
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fmt::Write as _;
    use std::io::{self, BufRead, BufReader, Read as _, Write as _};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
    use tcp_hygiene_cli::{
        reap_tracked, AgeTracker, Census, CensusQuery, KernelState, PortCensus, ReapFilter, Source,
    };

    /// Which TCP sockets pile up on this host, why, and what to do; and a reaper for the
    /// ones that linger.
    #[derive(Debug, Parser)]
    #[command(version)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Debug, Subcommand)]
    enum Command {
        /// Count TCP sockets by local port and state (the numbers `ss -tan` shows), with
        /// orphans, owning processes, accept queues, how long each pile has lingered, and
        /// a diagnosis line for every unusual pile.
        Census(CensusArgs),
        /// Destroy sockets of any process that linger in a state on a local port, or to a
        /// remote port (netlink SOCK_DESTROY, as `ss -K`; needs CAP_NET_ADMIN). The
        /// owner's descriptor stays open: its reads return EOF (ECONNABORTED for a socket
        /// in FIN_WAIT_1 or FIN_WAIT_2), its writes fail with ECONNABORTED then EPIPE; the
        /// peer gets a RST, except from an orphaned FIN_WAIT_2 socket, which sends none.
        /// With --every, a guard: the reap again every SECS, one summary line a round,
        /// until --count rounds or SIGTERM/SIGINT.
        Reap(ReapArgs),
        /// Serve the census on `GET /metrics` in the Prometheus text format: sockets by
        /// side, port and state, orphans, the oldest socket of each pile, accept queues,
        /// listen overflows. Prints `listening on IP:PORT` first; stops on SIGTERM/SIGINT.
        Exporter(ExporterArgs),
    }

    #[derive(Debug, Args)]
    struct ExporterArgs {
        /// The address to serve on, such as 127.0.0.1:9978 or [::]:9978 (port 0: any free
        /// port, printed).
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// Count inside this network namespace (`ip netns` name, or a path such as
        /// /proc/PID/ns/net).
        #[arg(long, value_name = "NAME")]
        netns: Option<String>,
    }

    #[derive(Debug, Args)]
    struct CensusArgs {
        /// Only this local port (1-65535).
        #[arg(long, value_parser = port_number)]
        port: Option<u16>,
        /// One JSON object per census instead of text (every group, whatever --top).
        #[arg(long)]
        json: bool,
        /// Show the N biggest groups (default 20).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        top: Option<u64>,
        /// Show every group.
        #[arg(long, conflicts_with = "top")]
        all: bool,
        /// Take a census every SECS seconds, 0.1 to 86400 (until interrupted, or
        /// --count).
        #[arg(long, value_name = "SECS", value_parser = interval, allow_negative_numbers = true)]
        watch: Option<Duration>,
        /// Stop after N censuses (with --watch; at least 1).
        #[arg(long, value_name = "N", requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Count inside this network namespace (`ip netns` name, or a path such as
        /// /proc/PID/ns/net).
        #[arg(long, value_name = "NAME")]
        netns: Option<String>,
        /// Read the socket tables from this source only (default: sock_diag, falling back
        /// to /proc/net/tcp).
        #[arg(long, value_enum)]
        source: Option<SourceArg>,
    }

    #[derive(Debug, Clone, Copy, ValueEnum)]
    enum SourceArg {
        SockDiag,
        Procfs,
    }

    #[derive(Debug, Args)]
    #[command(group(ArgGroup::new("target").required(true).args(["port", "remote_port"])))]
    struct ReapArgs {
        /// The local port whose sockets to reap (1-65535): a server's.
        #[arg(long, value_parser = port_number)]
        port: Option<u16>,
        /// Reap the connections this host opened to this remote port, any address
        /// (1-65535): a client's, such as a pool that keeps connections its server closed.
        #[arg(long, value_name = "PORT", value_parser = port_number)]
        remote_port: Option<u16>,
        /// Only sockets this process holds (orphans are then left alone).
        #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
        pid: Option<u32>,
        /// One JSON object per reap (with every matched socket) instead of text.
        #[arg(long)]
        json: bool,
        /// Guard: reap again every SECS seconds, 0.1 to 86400, one summary line a round
        /// (with --json, the report plus `round`, `at_ms` since the start and
        /// `at_unix_ms`, when the round began, and `took_ms`), until --count rounds or
        /// SIGTERM/SIGINT. Sockets are followed from round to
        /// round, so an age keepalive resets still grows.
        #[arg(long, value_name = "SECS", value_parser = interval, allow_negative_numbers = true)]
        every: Option<Duration>,
        /// Stop after N rounds (with --every; at least 1).
        #[arg(long, value_name = "N", requires = "every", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Only sockets that have lingered in the state at least this long (milliseconds).
        #[arg(long, value_name = "N")]
        idle_ms: u64,
        /// The state to reap.
        #[arg(long, value_enum, default_value_t = StateArg::CloseWait)]
        state: StateArg,
        /// Show what would be destroyed; destroy nothing.
        #[arg(long)]
        dry_run: bool,
        /// Destroy at most K sockets, the oldest first.
        #[arg(long, value_name = "K")]
        limit: Option<usize>,
        /// Reap inside this network namespace (`ip netns` name, or a path).
        #[arg(long, value_name = "NAME")]
        netns: Option<String>,
    }

    #[derive(Debug, Clone, Copy, ValueEnum)]
    enum StateArg {
        CloseWait,
        #[value(name = "fin-wait-2")]
        FinWait2,
        LastAck,
        #[value(name = "fin-wait-1")]
        FinWait1,
    }

    /// The shortest `--watch` and `--every` interval: shorter ones would spin a core.
    const MIN_INTERVAL: Duration = Duration::from_millis(100);
    /// The longest: a day.
    const MAX_INTERVAL: Duration = Duration::from_secs(86_400);

    /// An interval in seconds, 0.1 to 86400.
    fn interval(s: &str) -> Result<Duration, String> {
        let range = || {
            format!(
                "an interval in seconds from {} to {} is expected",
                MIN_INTERVAL.as_secs_f64(),
                MAX_INTERVAL.as_secs()
            )
        };
        let secs: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("not a number: {}", range()))?;
        if !(MIN_INTERVAL.as_secs_f64()..=MAX_INTERVAL.as_secs_f64()).contains(&secs) {
            return Err(format!("out of range: {}", range()));
        }
        Ok(Duration::from_secs_f64(secs))
    }

    /// A TCP port, 1 to 65535: port 0 names no socket's port.
    fn port_number(s: &str) -> Result<u16, String> {
        match s.trim().parse::<u16>() {
            Ok(0) => Err("port 0 is no socket's port: 1 to 65535 is expected".to_owned()),
            Ok(port) => Ok(port),
            Err(_) => Err("a port number from 1 to 65535 is expected".to_owned()),
        }
    }

    pub(crate) fn main() -> ExitCode {
        let cli = Cli::parse();
        let result = match cli.command {
            Command::Census(args) => census(&args),
            Command::Reap(args) => run_reap(&args),
            Command::Exporter(args) => exporter(&args),
        };
        match result {
            Ok(code) => code,
            // The reader went away (`census | head -1`): done, quietly, as `ss` does.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tcp-hygiene: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn census(args: &CensusArgs) -> io::Result<ExitCode> {
        let query = CensusQuery::new()
            .port(args.port)
            .netns(args.netns.clone())
            .source(args.source.map(|s| match s {
                SourceArg::SockDiag => Source::SockDiag,
                SourceArg::Procfs => Source::Procfs,
            }));
        let samples = match args.watch {
            None => 1,
            Some(_) => args.count.unwrap_or(u64::MAX),
        };
        let started = Instant::now();
        let mut next = started;
        let mut previous: Option<Census> = None;
        // Follows sockets from census to census: an age the kernel only bounds grows.
        let mut tracker = AgeTracker::new();
        for sample in 0..samples {
            if let (Some(every), true) = (args.watch, sample > 0) {
                // On schedule, without drift; a day at most between two censuses, so
                // the sum never overflows before the universe ends.
                next += every;
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            let census = query.run_tracked(&mut tracker)?;
            let text = if args.json {
                serde_json::to_string(&census)? + "\n"
            } else {
                let at = args.watch.map(|_| started.elapsed());
                let top = if args.all {
                    None
                } else {
                    Some(args.top.unwrap_or(DEFAULT_TOP))
                };
                render(&census, previous.as_ref(), at, top)
            };
            let mut stdout = io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
            previous = Some(census);
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Groups shown when neither --top nor --all says otherwise.
    const DEFAULT_TOP: u64 = 20;
    /// Processes named on a group's line; the rest are counted.
    const PROCESSES_SHOWN: usize = 4;

    /// The census as text: a header, the host's totals, the biggest groups (server piles
    /// by listening port, client piles by remote endpoint), then their diagnosis.
    fn render(
        census: &Census,
        previous: Option<&Census>,
        at: Option<Duration>,
        top: Option<u64>,
    ) -> String {
        let mut out = String::new();
        if let Some(at) = at {
            let _ = writeln!(out, "--- census at +{:.1} s", at.as_secs_f64());
        }
        let source = census.source().map_or("?", |s| s.as_str());
        let _ = write!(out, "TCP sockets from {source}");
        if let Some(netns) = census.netns() {
            let _ = write!(out, ", in network namespace {netns}");
        }
        if let Some(reason) = census.fallback_reason() {
            let _ = write!(out, " ({reason})");
        }
        out.push('\n');
        let _ = write!(out, "total {}", census.sockets());
        for (state, n) in census.states() {
            let _ = write!(out, " {state} {n}");
        }
        let _ = writeln!(
            out,
            " | orphans {} | {} server ports, {} remote endpoints",
            census.orphans(),
            census.ports().count(),
            census.remotes().count()
        );
        if let (Some(overflows), Some(drops)) = (census.listen_overflows(), census.listen_drops()) {
            let since = if census.netns().is_some() {
                "since the namespace was created"
            } else {
                "since boot"
            };
            let _ = write!(
                out,
                "ListenOverflows {overflows}, ListenDrops {drops} {since}"
            );
            if let Some(before) = previous.and_then(Census::listen_overflows) {
                let _ = write!(
                    out,
                    " ({:+} overflows since the previous census)",
                    overflows.saturating_sub(before)
                );
            }
            out.push('\n');
        }
        let groups = census.groups();
        if groups.is_empty() {
            out.push_str("no TCP sockets\n");
        }
        let shown = top.map_or(groups.len(), |n| {
            groups.len().min(usize::try_from(n).unwrap_or(usize::MAX))
        });
        for group in &groups[..shown] {
            out.push_str(&group_line(group));
        }
        let hidden = &groups[shown..];
        if !hidden.is_empty() {
            let sockets: u64 = hidden.iter().map(|g| g.sockets()).sum();
            let _ = writeln!(
                out,
                "… {} more groups with {sockets} sockets (--top N, --all)",
                hidden.len()
            );
        }
        let mut diagnosis: Vec<String> =
            groups[..shown].iter().flat_map(|g| g.diagnosis()).collect();
        let unshown = hidden.iter().filter(|g| !g.diagnosis().is_empty()).count();
        diagnosis.extend(census.host_diagnosis());
        if !diagnosis.is_empty() || unshown > 0 {
            out.push_str("\nDiagnosis:\n");
            for line in diagnosis {
                let _ = writeln!(out, "  {line}");
            }
            if unshown > 0 {
                let _ = writeln!(
                    out,
                    "  … and {unshown} groups not shown have a diagnosis (--all)"
                );
            }
        }
        out
    }

    /// A server group, by its listening port:
    /// ` 8080  LISTEN 1 ESTABLISHED 3 CLOSE_WAIT 15 | orphans 2 | accept queue 0/128 | 4242 python3: ESTABLISHED 3 CLOSE_WAIT 15`;
    /// a client group, by the remote endpoint:
    /// `→ 10.0.0.5:5432  ESTABLISHED 3 CLOSE_WAIT 40 | 777 java: ESTABLISHED 3 CLOSE_WAIT 40`.
    fn group_line(group: &PortCensus) -> String {
        let mut line = match group.remote() {
            None => format!("{:>5} ", group.port()),
            Some(remote) => format!("→ {remote} "),
        };
        for (state, n) in group.states() {
            let _ = write!(line, " {state} {n}");
        }
        if group.orphans() > 0 {
            let _ = write!(line, " | orphans {}", group.orphans());
        }
        if let Some(queue) = group.listen() {
            let backlog = queue.backlog.map_or("?".to_owned(), |b| b.to_string());
            let _ = write!(line, " | accept queue {}/{backlog}", queue.accept_queue);
        }
        let mut separator = " |";
        let holders = group.by_process();
        for holder in holders.iter().take(PROCESSES_SHOWN) {
            let _ = write!(line, "{separator} {}:", holder.process);
            for (state, n) in holder.states() {
                let _ = write!(line, " {state} {n}");
            }
            separator = ",";
        }
        if holders.len() > PROCESSES_SHOWN {
            let _ = write!(
                line,
                "{separator} {} more processes",
                holders.len() - PROCESSES_SHOWN
            );
        }
        if group.owner_unknown() > 0 {
            let _ = write!(line, "{separator} {} owner unknown", group.owner_unknown());
        }
        line.push('\n');
        line
    }

    /// Set by SIGTERM or SIGINT: a guard or the exporter finishes what it is doing and
    /// stops.
    fn stop_flag() -> io::Result<Arc<AtomicBool>> {
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(signal, Arc::clone(&stop))?;
        }
        Ok(stop)
    }

    /// Sleeps until `deadline` or until `stop` is set, whichever comes first; whether it
    /// was stopped.
    fn sleep_until(deadline: Instant, stop: &AtomicBool) -> bool {
        loop {
            if stop.load(Ordering::Relaxed) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    fn run_reap(args: &ReapArgs) -> io::Result<ExitCode> {
        let state = match args.state {
            StateArg::CloseWait => KernelState::CloseWait,
            StateArg::FinWait2 => KernelState::FinWait2,
            StateArg::LastAck => KernelState::LastAck,
            StateArg::FinWait1 => KernelState::FinWait1,
        };
        let idle = Duration::from_millis(args.idle_ms);
        // clap's group requires exactly one of them.
        let filter = match (args.port, args.remote_port) {
            (Some(port), None) => ReapFilter::new(port, idle),
            (None, Some(port)) => ReapFilter::remote_port(port, idle),
            _ => {
                eprintln!("tcp-hygiene reap: give --port or --remote-port (one of them)");
                return Ok(ExitCode::from(2));
            }
        };
        let filter = filter
            .with_state(state)
            .with_pid(args.pid)
            .with_dry_run(args.dry_run)
            .with_limit(args.limit)
            .with_netns(args.netns.clone());
        let mut tracker = AgeTracker::new();
        let Some(every) = args.every else {
            let report = reap_tracked(&filter, &mut tracker)?;
            let mut stdout = io::stdout().lock();
            if args.json {
                writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
            } else {
                for victim in &report.victims {
                    writeln!(stdout, "{victim}")?;
                }
                writeln!(stdout, "{report}")?;
            }
            return Ok(if report.failed() > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        };
        // The guard.
        let stop = stop_flag()?;
        let started = Instant::now();
        let mut next = started;
        let rounds = args.count.unwrap_or(u64::MAX);
        let (mut reaped, mut failed) = (0usize, 0usize);
        let mut round = 0;
        while round < rounds {
            if round > 0 {
                next += every;
                if sleep_until(next, &stop) {
                    break;
                }
            }
            round += 1;
            let round_at = started.elapsed();
            let round_wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let report = reap_tracked(&filter, &mut tracker)?;
            reaped += report.reaped();
            failed += report.failed();
            let mut stdout = io::stdout().lock();
            if args.json {
                let mut line = serde_json::to_value(&report)?;
                line["round"] = round.into();
                // When the round began, from the guard's start.
                line["at_ms"] = u64::try_from(round_at.as_millis())
                    .unwrap_or(u64::MAX)
                    .into();
                // The same moment on the wall clock, to line up with other logs.
                line["at_unix_ms"] = u64::try_from(round_wall.as_millis())
                    .unwrap_or(u64::MAX)
                    .into();
                let took = started.elapsed().saturating_sub(round_at);
                line["took_ms"] = u64::try_from(took.as_millis()).unwrap_or(u64::MAX).into();
                writeln!(stdout, "{line}")?;
            } else {
                writeln!(
                    stdout,
                    "+{:.1} s round {round}: {report}",
                    round_at.as_secs_f64()
                )?;
            }
            stdout.flush()?;
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        if stop.load(Ordering::Relaxed) {
            eprintln!(
                "tcp-hygiene: stopped by a signal after {round} rounds, {reaped} sockets reaped"
            );
        }
        Ok(if failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }

    /// The longest a scrape's request may take to arrive: one slow client holds up the
    /// others (requests are served one at a time).
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

    fn exporter(args: &ExporterArgs) -> io::Result<ExitCode> {
        let stop = stop_flag()?;
        let listener = TcpListener::bind(args.listen)
            .map_err(|e| io::Error::new(e.kind(), format!("--listen {}: {e}", args.listen)))?;
        listener.set_nonblocking(true)?;
        let query = CensusQuery::new().owners(false).netns(args.netns.clone());
        // Try once now: a namespace that cannot be entered is an error at start, not at
        // the first scrape.
        let mut tracker = AgeTracker::new();
        query.run_tracked(&mut tracker)?;
        {
            let mut stdout = io::stdout().lock();
            writeln!(stdout, "listening on {}", listener.local_addr()?)?;
            stdout.flush()?;
        }
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = serve(stream, &query, &mut tracker) {
                        eprintln!("tcp-hygiene exporter: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => eprintln!("tcp-hygiene exporter: accept: {e}"),
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Answers one HTTP/1.x request and closes the connection.
    fn serve(stream: TcpStream, query: &CensusQuery, tracker: &mut AgeTracker) -> io::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        let mut reader = BufReader::new(&stream);
        let mut request_line = String::new();
        reader.by_ref().take(8192).read_line(&mut request_line)?;
        // The headers, unread beyond their end.
        let mut header = String::new();
        let mut header_bytes = 0;
        loop {
            header.clear();
            let n = reader.by_ref().take(8192).read_line(&mut header)?;
            header_bytes += n;
            if n == 0 || header == "\r\n" || header == "\n" || header_bytes > 65536 {
                break;
            }
        }
        let mut words = request_line.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let path = path.split('?').next().unwrap_or("");
        let (status, content_type, body) = match (method, path) {
            ("GET" | "HEAD", "/metrics") => {
                let started = Instant::now();
                match query.run_tracked(tracker) {
                    Ok(census) => (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        census.to_prometheus(started.elapsed()),
                    ),
                    Err(e) => (
                        "500 Internal Server Error",
                        "text/plain; charset=utf-8",
                        format!("census failed: {e}\n"),
                    ),
                }
            }
            ("GET" | "HEAD", "/") => (
                "200 OK",
                "text/plain; charset=utf-8",
                "tcp-hygiene exporter: the metrics are at /metrics\n".to_owned(),
            ),
            ("GET" | "HEAD", _) => (
                "404 Not Found",
                "text/plain; charset=utf-8",
                "not found: the metrics are at /metrics\n".to_owned(),
            ),
            _ => (
                "405 Method Not Allowed",
                "text/plain; charset=utf-8",
                "only GET and HEAD\n".to_owned(),
            ),
        };
        let mut out = &stream;
        write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        if method != "HEAD" {
            out.write_all(body.as_bytes())?;
        }
        out.flush()
    }
}
