//! Helpers for tests (feature `testing`): what the property tests of several crates share.

/// xorshift64: the same pseudo-random cases on every run, without a dependency.
pub struct Noise(pub u64);

impl Noise {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
