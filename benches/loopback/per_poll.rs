//! Per poll: `poll_read` and `poll_write` called directly with a no-op waker, on one CPU,
//! while data is always ready, the three contenders polling the very same kernel socket.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rustix::thread::{sched_setaffinity, CpuSet};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio_io_timeout::TimeoutStream;

use crate::common::current_thread_runtime as current_thread;
use crate::common::stats::{median, median_ci, percentile, sorted};
use crate::contenders::{hygiene_builder, timeout_stream, Contender};
use crate::report::PollResults;
use crate::{Params, SMALL};

/// Calls of `read_polls`/`write_polls` so far: callgrind dumps once after each.
pub(crate) static LOOPS: AtomicUsize = AtomicUsize::new(0);

/// Polls per timed batch (reads: one 64 KiB refill per batch).
pub(crate) const READ_BATCH: usize = 1000;
/// Polls per timed batch (writes: the send path must never fill up within a batch).
pub(crate) const WRITE_BATCH: usize = 64;

/// One kernel socket, polled through each contender's stream type.
pub(crate) struct PollRig {
    rt: Runtime,
    peer: std::net::TcpStream,
    raw: TcpStream,
    hygiene: tcp_hygiene::TcpStream,
    tio: Pin<Box<TimeoutStream<TcpStream>>>,
    /// Bytes the peer wrote that no contender has read yet.
    queued: usize,
    zeros: Vec<u8>,
    sink: Vec<u8>,
    _listener: tcp_hygiene::TcpListener,
}

impl PollRig {
    pub(crate) fn new() -> Self {
        let rt = current_thread();
        let (listener, hygiene, peer) = rt.block_on(async {
            let listener = hygiene_builder().bind("127.0.0.1:0").await.expect("bind");
            let peer = std::net::TcpStream::connect(listener.local_addr().expect("addr"))
                .expect("connect");
            peer.set_nodelay(true).expect("nodelay");
            let (hygiene, _) = listener.accept().await.expect("accept");
            (listener, hygiene, peer)
        });
        let dup = || {
            let fd = hygiene.get_ref().as_fd().try_clone_to_owned().expect("dup");
            let std = std::net::TcpStream::from(fd);
            std.set_nonblocking(true).expect("nonblocking");
            let _guard = rt.enter();
            TcpStream::from_std(std).expect("register")
        };
        let raw = dup();
        let tio = {
            let stream = dup();
            let _guard = rt.enter();
            timeout_stream(stream)
        };
        Self {
            raw,
            hygiene,
            tio,
            peer,
            queued: 0,
            zeros: vec![0; READ_BATCH * SMALL],
            sink: vec![0; WRITE_BATCH * SMALL],
            _listener: listener,
            rt,
        }
    }

    fn tokio_stream(&self, c: Contender) -> &TcpStream {
        match c {
            Contender::Raw => &self.raw,
            Contender::Hygiene => self.hygiene.get_ref(),
            Contender::TokioIoTimeout => self.tio.get_ref(),
            #[cfg(feature = "metrics")]
            Contender::HygieneMetrics => {
                unreachable!("not a per-poll contender (Contender::PER_POLL)")
            }
        }
    }

    /// Waits (driving the reactor) until tokio knows the socket is readable for `c`.
    fn wait_readable(&self, c: Contender) {
        self.rt
            .block_on(async { self.tokio_stream(c).readable().await })
            .expect("readable");
    }

    fn wait_writable(&self, c: Contender) {
        self.rt
            .block_on(async { self.tokio_stream(c).writable().await })
            .expect("writable");
    }

    /// Runs one batch of `polls` reads through `c`; the time if every poll was ready.
    pub(crate) fn read_batch(&mut self, c: Contender, polls: usize) -> Option<Duration> {
        let need = polls * SMALL;
        if self.queued < need {
            self.peer
                .write_all(&self.zeros[..need - self.queued])
                .expect("refill");
            self.queued = need;
        }
        let _guard = self.rt.enter();
        let start = Instant::now();
        let done = match c {
            Contender::Raw => read_polls(&mut self.raw, polls),
            Contender::Hygiene => read_polls(&mut self.hygiene, polls),
            Contender::TokioIoTimeout => read_polls(&mut self.tio, polls),
            #[cfg(feature = "metrics")]
            Contender::HygieneMetrics => {
                unreachable!("not a per-poll contender (Contender::PER_POLL)")
            }
        };
        let elapsed = start.elapsed();
        LOOPS.fetch_add(1, Ordering::Relaxed);
        drop(_guard);
        self.queued -= done * SMALL;
        if done < polls {
            self.wait_readable(c);
            return None;
        }
        Some(elapsed)
    }

    /// Runs one batch of `polls` writes through `c`; the peer drains afterwards.
    pub(crate) fn write_batch(&mut self, c: Contender, polls: usize) -> Option<Duration> {
        let _guard = self.rt.enter();
        let start = Instant::now();
        let done = match c {
            Contender::Raw => write_polls(&mut self.raw, polls),
            Contender::Hygiene => write_polls(&mut self.hygiene, polls),
            Contender::TokioIoTimeout => write_polls(&mut self.tio, polls),
            #[cfg(feature = "metrics")]
            Contender::HygieneMetrics => {
                unreachable!("not a per-poll contender (Contender::PER_POLL)")
            }
        };
        let elapsed = start.elapsed();
        LOOPS.fetch_add(1, Ordering::Relaxed);
        drop(_guard);
        self.peer
            .read_exact(&mut self.sink[..done * SMALL])
            .expect("drain");
        if done < polls {
            self.wait_writable(c);
            return None;
        }
        Some(elapsed)
    }

    /// Brings every contender to the steady state: readiness known, lazy state
    /// initialised, first-poll effects gone.
    pub(crate) fn warm_up(&mut self) {
        for c in Contender::PER_POLL {
            // A failed batch waits for readiness (after the refill, so data is there).
            for _ in 0..3 {
                let _ = self.read_batch(c, READ_BATCH);
                let _ = self.write_batch(c, WRITE_BATCH);
            }
        }
    }
}

/// `polls` reads of 64 bytes; how many completed before the first non-ready poll.
#[inline(never)]
fn read_polls<S: AsyncRead + Unpin>(stream: &mut S, polls: usize) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    let mut buf = [0_u8; SMALL];
    for i in 0..polls {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut *stream).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().len() == SMALL => {}
            Poll::Ready(Ok(())) => panic!("short read: {}", rb.filled().len()),
            Poll::Ready(Err(e)) => panic!("read: {e}"),
            Poll::Pending => return i,
        }
    }
    std::hint::black_box(&buf);
    polls
}

/// `polls` writes of 64 bytes; how many were accepted whole before the first miss.
#[inline(never)]
fn write_polls<S: AsyncWrite + Unpin>(stream: &mut S, polls: usize) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    let buf = std::hint::black_box([0x42_u8; SMALL]);
    for i in 0..polls {
        match Pin::new(&mut *stream).poll_write(&mut cx, &buf) {
            Poll::Ready(Ok(SMALL)) => {}
            Poll::Ready(Ok(n)) => panic!("short write: {n}"),
            Poll::Ready(Err(e)) => panic!("write: {e}"),
            Poll::Pending => return i,
        }
    }
    polls
}

pub(crate) fn timed(p: &Params) -> PollResults {
    std::thread::spawn({
        let p = p.clone();
        move || {
            let cpu = pin_to_last_cpu();
            let mut rig = PollRig::new();
            rig.warm_up();
            // ns per poll, [round][contender], for reads and writes.
            let mut reads = Vec::new();
            let mut writes = Vec::new();
            let mut discarded = 0;
            // Short, paired samples: adjacent batches of different contenders see the
            // same machine, so their difference is far less noisy than either.
            for round in 0..p.poll_rounds {
                let (mut r, mut w) = ([0.0; 3], [0.0; 3]);
                for c in Contender::order(round, &Contender::PER_POLL) {
                    let (mut t, mut n) = (Duration::ZERO, 0);
                    while n < p.poll_batches {
                        match rig.read_batch(c, READ_BATCH) {
                            Some(d) => {
                                t += d;
                                n += 1;
                            }
                            None => discarded += 1,
                        }
                    }
                    r[c.index()] = t.as_nanos() as f64 / (n * READ_BATCH) as f64;
                }
                for c in Contender::order(round, &Contender::PER_POLL) {
                    let (mut t, mut n) = (Duration::ZERO, 0);
                    // Writes cost ~5x more per poll; batches are smaller to keep the
                    // send path from filling up, so take more of them.
                    while n < p.poll_batches * 4 {
                        match rig.write_batch(c, WRITE_BATCH) {
                            Some(d) => {
                                t += d;
                                n += 1;
                            }
                            None => discarded += 1,
                        }
                    }
                    w[c.index()] = t.as_nanos() as f64 / (n * WRITE_BATCH) as f64;
                }
                reads.push(r);
                writes.push(w);
            }
            summarize_polls(&reads, &writes, discarded, cpu)
        }
    })
    .join()
    .expect("per-poll thread")
}

fn summarize_polls(
    reads: &[[f64; 3]],
    writes: &[[f64; 3]],
    discarded: usize,
    cpu: Option<usize>,
) -> PollResults {
    let col = |v: &[[f64; 3]], c: Contender| v.iter().map(|r| r[c.index()]).collect::<Vec<_>>();
    let diff = |v: &[[f64; 3]], c: Contender| {
        v.iter()
            .map(|r| r[c.index()] - r[Contender::Raw.index()])
            .collect::<Vec<_>>()
    };
    let mut table = vec![format!(
        "{} rounds, pinned to CPU {}, {discarded} batches discarded (a poll was not ready)",
        reads.len(),
        cpu.map_or("none (affinity failed)".to_string(), |c| c.to_string())
    )];
    table.push(format!(
        "{:<17} {:>9} {:>9} {:>10} {:>10} {:>10} {:>16} {:>16}",
        "contender",
        "read ns",
        "write ns",
        "read Δ",
        "write Δ",
        "mean Δ",
        "Δ 95% CI",
        "Δ rounds p10..90"
    ));
    let mut values = Vec::new();
    for c in Contender::PER_POLL {
        let (dr, dw) = (diff(reads, c), diff(writes, c));
        let both: Vec<f64> = dr.iter().zip(&dw).map(|(a, b)| (a + b) / 2.0).collect();
        let sorted = sorted(both.clone());
        let (lo, hi) = median_ci(&sorted);
        table.push(format!(
            "{:<17} {:>9.1} {:>9.1} {:>10.2} {:>10.2} {:>10.2} {:>16} {:>16}",
            c.name(),
            median(&col(reads, c)),
            median(&col(writes, c)),
            median(&dr),
            median(&dw),
            median(&both),
            format!("{lo:.1}..{hi:.1}"),
            format!(
                "{:.0}..{:.0}",
                percentile(&sorted, 0.1),
                percentile(&sorted, 0.9)
            )
        ));
        if c != Contender::Raw {
            values.push(("poll_overhead_ns", c, median(&both)));
            values.push(("poll_read_overhead_ns", c, median(&dr)));
            values.push(("poll_write_overhead_ns", c, median(&dw)));
        }
    }
    PollResults { table, values }
}

/// Pins the calling thread to the last CPU; which one, if it worked.
fn pin_to_last_cpu() -> Option<usize> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = cpus - 1;
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(None, &set).ok().map(|()| cpu)
}
