//! A child process on a pseudo-terminal, driven like a user would (shared by the test files).

#![allow(dead_code)]

use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child on a pseudo-terminal, and what it wrote so far.
pub struct OnPty {
    child: Child,
    master: std::fs::File,
    rx: mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl OnPty {
    pub fn spawn(mut cmd: Command) -> Self {
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave: OwnedFd = pty.slave;
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn().unwrap();
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the child side is closed ends the loop.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            master,
            rx,
            seen: String::new(),
        }
    }

    /// Wait until the output (since the last call) contains `text`.
    pub fn expect(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(i) = self.seen.find(text) {
                self.seen.drain(..i + text.len());
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!("no {text:?} on the terminal; got:\n{}", self.seen),
            }
        }
    }

    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        writeln!(self.master, "{line}").unwrap();
    }

    pub fn finish(mut self) -> (i32, String) {
        let status = self.child.wait().unwrap();
        while let Ok(chunk) = self.rx.recv_timeout(Duration::from_millis(200)) {
            self.seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        (status.code().unwrap_or(-1), self.seen)
    }
}
