//! Benchmark helper (bench/net): TCP request/response latency.
//!
//! `tcp-rr server ADDR:PORT` echoes every byte back; `tcp-rr client ADDR:PORT COUNT` sends one byte
//! and waits for it COUNT times on one connection, then prints `median_us p99_us` of the round trips.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("server") => {
            let l = TcpListener::bind(&args[2]).expect("bind");
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                std::thread::spawn(move || {
                    let _ = c.set_nodelay(true);
                    let mut b = [0u8; 1];
                    while c.read_exact(&mut b).is_ok() {
                        if c.write_all(&b).is_err() {
                            break;
                        }
                    }
                });
            }
        }
        Some("client") => {
            let n: usize = args[3].parse().expect("count");
            let mut c = TcpStream::connect(&args[2]).expect("connect");
            c.set_nodelay(true).unwrap();
            let mut b = [7u8; 1];
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                c.write_all(&b).unwrap();
                c.read_exact(&mut b).unwrap();
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
            times.sort_by(f64::total_cmp);
            println!("{:.1} {:.1}", times[n / 2], times[n * 99 / 100]);
        }
        _ => {
            eprintln!("usage: tcp-rr server ADDR:PORT | tcp-rr client ADDR:PORT COUNT");
            std::process::exit(2);
        }
    }
}
