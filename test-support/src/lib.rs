//! Helpers the integration tests of `tcp-hygiene` and `tcp-hygiene-cli` share: skipping
//! (loudly) what the machine cannot do, the kernel's view through `ss`, and pairs of
//! network namespaces whose peers can vanish. Each crate's `tests/support/mod.rs`
//! re-exports what its tests use.

pub mod netns;
pub mod ss;
pub mod system;
