//! The tar indexer on arbitrary bytes, fed in two pieces split where the input says: it must
//! never panic, the split must not change the index, and every member it lists lies inside
//! the archive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::tar::TarIndexer;

fuzz_target!(|input: &[u8]| {
    let Some((&split, bytes)) = input.split_first() else {
        return;
    };
    let mut whole = TarIndexer::new();
    whole.update(bytes);
    let split = usize::from(split) * bytes.len() / 256;
    let mut pieces = TarIndexer::new();
    pieces.update(&bytes[..split]);
    pieces.update(&bytes[split..]);
    let index = whole.finish();
    assert_eq!(index, pieces.finish());
    for member in &index.members {
        assert!(member.offset + member.size <= bytes.len() as u64);
    }
});
