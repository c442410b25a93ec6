//! The FITS indexer on arbitrary bytes, fed in two pieces split where the input says: it must
//! never panic, and the split must not change the index.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::fits::Indexer;

fuzz_target!(|input: &[u8]| {
    let Some((&split, bytes)) = input.split_first() else {
        return;
    };
    let mut whole = Indexer::new();
    whole.update(bytes);
    let split = usize::from(split) * bytes.len() / 256;
    let mut pieces = Indexer::new();
    pieces.update(&bytes[..split]);
    pieces.update(&bytes[split..]);
    assert_eq!(whole.finish(), pieces.finish());
});
