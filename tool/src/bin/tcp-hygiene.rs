//! `tcp-hygiene`: a host-wide census of TCP states with a diagnosis of every unusual pile,
//! and a reaper for lingering sockets of any process. Linux only.
//!
//! ```text
//! tcp-hygiene census [--port P] [--json] [--watch SECS [--count N]] [--netns NAME]
//! tcp-hygiene reap --port P --idle-ms N [--state close-wait|fin-wait-2|last-ack|fin-wait-1]
//!                  [--dry-run] [--limit K] [--netns NAME]
//! ```
//!
//! Install with `cargo install tcp-hygiene-cli`. Exit status: 0 done, 1 an
//! error (printed on stderr), 2 a usage error or not Linux.

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
    use std::io::{self, Write as _};
    use std::process::ExitCode;
    use std::thread;
    use std::time::{Duration, Instant};

    use clap::{Args, Parser, Subcommand, ValueEnum};
    use tcp_hygiene_cli::{reap, Census, CensusQuery, KernelState, PortCensus, ReapFilter, Source};

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
        /// Destroy sockets of any process that linger in a state on a local port
        /// (netlink SOCK_DESTROY, as `ss -K`; needs CAP_NET_ADMIN). The owner's
        /// descriptor stays open: its reads return EOF, its writes fail with ECONNABORTED
        /// then EPIPE; the peer gets a RST.
        Reap(ReapArgs),
    }

    #[derive(Debug, Args)]
    struct CensusArgs {
        /// Only this local port (1-65535).
        #[arg(long, value_parser = port_number)]
        port: Option<u16>,
        /// One JSON object per census instead of text.
        #[arg(long)]
        json: bool,
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
    struct ReapArgs {
        /// The local port whose sockets to reap (1-65535).
        #[arg(long, value_parser = port_number)]
        port: u16,
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
        for sample in 0..samples {
            if let (Some(every), true) = (args.watch, sample > 0) {
                // On schedule, without drift; a day at most between two censuses, so
                // the sum never overflows before the universe ends.
                next += every;
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            let census = query.run()?;
            let text = if args.json {
                serde_json::to_string(&census)? + "\n"
            } else {
                let at = args.watch.map(|_| started.elapsed());
                render(&census, previous.as_ref(), at)
            };
            let mut stdout = io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
            previous = Some(census);
        }
        Ok(ExitCode::SUCCESS)
    }

    /// The census as text: a header, one line per port, then the diagnosis.
    fn render(census: &Census, previous: Option<&Census>, at: Option<Duration>) -> String {
        let mut out = String::new();
        if let Some(at) = at {
            let _ = writeln!(out, "--- census at +{:.1} s", at.as_secs_f64());
        }
        let source = census.source().map_or("?", |s| s.as_str());
        let _ = write!(out, "TCP sockets by local port, from {source}");
        if let Some(netns) = census.netns() {
            let _ = write!(out, ", in network namespace {netns}");
        }
        if let Some(reason) = census.fallback_reason() {
            let _ = write!(out, " ({reason})");
        }
        out.push('\n');
        if let (Some(overflows), Some(drops)) = (census.listen_overflows(), census.listen_drops()) {
            let _ = write!(
                out,
                "ListenOverflows {overflows}, ListenDrops {drops} since boot"
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
        let mut any = false;
        for port in census.ports() {
            any = true;
            out.push_str(&port_line(port));
        }
        if !any {
            out.push_str("no TCP sockets\n");
        }
        let diagnosis = census.diagnosis();
        if !diagnosis.is_empty() {
            out.push_str("\nDiagnosis:\n");
            for line in diagnosis {
                let _ = writeln!(out, "  {line}");
            }
        }
        out
    }

    /// ` 8080  LISTEN 1 ESTABLISHED 3 CLOSE_WAIT 15 | orphans 2 | accept queue 0/128 | 4242 python3`
    fn port_line(port: &PortCensus) -> String {
        let mut line = format!("{:>5} ", port.port());
        for (state, n) in port.states() {
            let _ = write!(line, " {state} {n}");
        }
        if port.orphans() > 0 {
            let _ = write!(line, " | orphans {}", port.orphans());
        }
        if let Some(queue) = port.listen() {
            let backlog = queue.backlog.map_or("?".to_owned(), |b| b.to_string());
            let _ = write!(line, " | accept queue {}/{backlog}", queue.accept_queue);
        }
        let mut separator = " |";
        for process in port.processes() {
            let _ = write!(line, "{separator} {process}");
            separator = ",";
        }
        if port.owner_unknown() > 0 {
            let _ = write!(line, "{separator} {} owner unknown", port.owner_unknown());
        }
        line.push('\n');
        line
    }

    fn run_reap(args: &ReapArgs) -> io::Result<ExitCode> {
        let state = match args.state {
            StateArg::CloseWait => KernelState::CloseWait,
            StateArg::FinWait2 => KernelState::FinWait2,
            StateArg::LastAck => KernelState::LastAck,
            StateArg::FinWait1 => KernelState::FinWait1,
        };
        let filter = ReapFilter::new(args.port, Duration::from_millis(args.idle_ms))
            .with_state(state)
            .with_dry_run(args.dry_run)
            .with_limit(args.limit)
            .with_netns(args.netns.clone());
        let report = reap(&filter)?;
        let mut stdout = io::stdout().lock();
        for victim in &report.victims {
            writeln!(stdout, "{victim}")?;
        }
        writeln!(stdout, "{report}")?;
        Ok(if report.failed() > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}
