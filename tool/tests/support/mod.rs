//! Shared helpers for the tool's integration tests: real piles of TCP states, the
//! kernel's own view through `ss`, and the `tcp-hygiene` binary.
#![allow(dead_code)]

pub(crate) mod census;
pub(crate) mod piles;
pub(crate) mod tool;

// Each test file includes this module and uses only part of it.
#[allow(unused_imports)]
pub(crate) use tcp_hygiene_test_support::{
    netns, require,
    ss::ss_output,
    system::{self, Need},
};
