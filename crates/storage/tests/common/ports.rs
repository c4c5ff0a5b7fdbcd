//! Loopback ports for test servers that another process binds.
//!
//! A port the kernel chose for a listener that then closed can be handed out again at once, to a
//! listener on port 0 or as the source port of an outgoing connection, before the server meant to
//! take it binds it ("Address already in use"). So ports are chosen below the kernel's ephemeral
//! range, where it hands out none of its own, from a random start, and never twice in one
//! process (a test binary holds one copy of this module).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;
use std::sync::Mutex;

/// Ports this process has handed out.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// How many ports below the ephemeral range are candidates.
const SPAN: u16 = 12_000;

/// The lowest port the kernel chooses by itself (Linux; 32768 where it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// `N` distinct ports free now, outside the kernel's ephemeral range.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let high = ephemeral_low();
    assert!(
        high > SPAN + 1024,
        "the ephemeral port range starts at {high}: too low to keep test ports below it"
    );
    let low = high - SPAN;
    let start = (RandomState::new().hash_one(std::process::id()) % u64::from(SPAN)) as u16;
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut chosen = Vec::with_capacity(N);
    for offset in 0..SPAN {
        let port = low + (start + offset) % SPAN;
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            chosen.push(port);
            if chosen.len() == N {
                return chosen.try_into().unwrap();
            }
        }
    }
    panic!("no {N} free loopback ports between {low} and {high}");
}

/// One port, as [`free_ports`].
pub fn free_port() -> u16 {
    let [port] = free_ports();
    port
}
