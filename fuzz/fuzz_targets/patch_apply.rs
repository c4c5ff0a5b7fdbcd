//! A weights patch as a worker downloads it, on arbitrary bytes: it must be applied or refused,
//! never panic, never write past the target size the caller wants, and when it is applied the
//! hash it returns is the hash of what it wrote.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zero2048_storage::hash_bytes;
use zero2048_storage::patch::apply_patch;

const SIZE: u64 = 4096;

fuzz_target!(|bytes: &[u8]| {
    let base = vec![0x5au8; SIZE as usize];
    let wanted = vec![0u8; SIZE as usize];
    let wanted_sha = hash_bytes(&wanted);
    let base_sha = hash_bytes(&base);
    for with_base in [false, true] {
        let mut out = Vec::new();
        let mut base_reader = &base[..];
        let base_arg = with_base.then_some((&mut base_reader as &mut dyn std::io::Read, base_sha.as_str()));
        if let Ok(sha) = apply_patch(bytes, base_arg, SIZE, &wanted_sha, &mut out) {
            assert_eq!(out.len() as u64, SIZE);
            assert_eq!(sha, hash_bytes(&out));
        }
        assert!(out.len() as u64 <= SIZE);
    }
});
