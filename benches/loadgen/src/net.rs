//! Sockets: loopback-only targets, source addresses taken round-robin, the open-file limit.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpSocket, TcpStream};

/// The server address and the local addresses client sockets bind to. One source address has
/// about 28,000 ephemeral ports; 50,000 connections need two or more.
pub struct Endpoint {
    pub server: SocketAddr,
    sources: Vec<IpAddr>,
    next: AtomicUsize,
}

impl Endpoint {
    /// Resolves `host:port` and refuses anything outside 127.0.0.0/8 and ::1.
    pub fn new(host_port: &str, sources: u8) -> Result<Self, String> {
        let server = host_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host_port}: {e}"))?
            .next()
            .ok_or(format!("no address for {host_port}"))?;
        if !server.ip().is_loopback() {
            return Err(format!(
                "{server} is not a loopback address; refusing to load it"
            ));
        }
        let sources = if server.is_ipv4() {
            (1..=sources.max(1))
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
                .collect()
        } else {
            vec![server.ip()]
        };
        Ok(Endpoint {
            server,
            sources,
            next: AtomicUsize::new(0),
        })
    }

    /// A new TCP connection to the server from the next source address, Nagle off.
    pub async fn connect(&self) -> io::Result<TcpStream> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sources.len();
        let socket = if self.server.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(self.sources[i], 0))?;
        let stream = socket.connect(self.server).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Raises the soft open-file limit to the hard one (and the hard one, where allowed).
/// Returns the soft limit in force afterwards.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let wanted = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: lim.rlim_max.max(1 << 20),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur
    }
}

/// User plus system CPU seconds this process has used so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
