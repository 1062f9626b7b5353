//! systemd's service notification protocol (sd_notify(3)) for `mount.s3ql --systemd`: one
//! datagram such as `READY=1` to the Unix socket named by `$NOTIFY_SOCKET`, a path or, on
//! Linux, an abstract socket written with a leading `@`.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// The environment variable systemd sets for `Type=notify` services.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where to send notifications: the value of `$NOTIFY_SOCKET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifier {
    socket: OsString,
}

impl Notifier {
    /// The notifier of `$NOTIFY_SOCKET`, or `None` if it is unset or empty.
    pub fn from_env() -> Option<Notifier> {
        std::env::var_os(NOTIFY_SOCKET)
            .filter(|s| !s.is_empty())
            .map(|socket| Notifier { socket })
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines, e.g. `READY=1`) in one datagram.
    /// Returns once the socket has accepted it.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let name = self.socket.as_bytes();
        let sent = match name.strip_prefix(b"@") {
            Some(abstract_name) => send_abstract(&sock, abstract_name, state.as_bytes())?,
            None => sock.send_to(state.as_bytes(), &self.socket)?,
        };
        if sent != state.len() {
            return Err(io::Error::other(format!(
                "only {sent} of {} bytes were sent",
                state.len()
            )));
        }
        Ok(())
    }
}

/// Sends `data` to the abstract Unix socket `name` (Linux only).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(sock: &UnixDatagram, name: &[u8], data: &[u8]) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(data, &addr)
}

/// Abstract Unix sockets exist on Linux only.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_sock: &UnixDatagram, _name: &[u8], _data: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets (NOTIFY_SOCKET=@...) exist on Linux only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier {
            socket: path.into_os_string(),
        };
        n.notify("READY=1\nSTATUS=mounted").expect("notify");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=mounted");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("s3ql-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract address");
        let server = UnixDatagram::bind_addr(&addr).expect("bind");
        let n = Notifier {
            socket: format!("@{name}").into(),
        };
        n.notify("STOPPING=1").expect("notify");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"STOPPING=1");
    }

    #[test]
    fn missing_socket_is_an_error() {
        let n = Notifier {
            socket: "/nonexistent/notify".into(),
        };
        assert!(n.notify("READY=1").is_err());
    }
}
