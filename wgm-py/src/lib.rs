//! # wgm-py
//!
//! **Not implemented yet.** This crate will hold the Python bindings of wgm (pyo3 +
//! maturin: `import wgm`), a thin layer over `wgm_core::manager::Manager` with sync and
//! async facades and one exception hierarchy under `wgm.WgmError`. Until then it exports
//! nothing and is not part of the workspace's default members.
