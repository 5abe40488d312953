//! The host an apply drives: which WireGuard backend (kernel or wireguard-go), this
//! host's name, and the network backend for addresses, routes and MTU. Shared by the
//! CLI and the Python bindings, so `auto` means the same everywhere.
//!
//! ```no_run
//! # async fn demo() -> wgm_core::Result<()> {
//! use wgm_cli::host::{host_name, wireguard, Backend};
//! let wg = wireguard(Backend::Auto).await?;
//! let name = host_name(None)?;
//! let host = wgm_core::manager::Host::new(name, wg, None);
//! # let _ = host; Ok(()) }
//! ```

use std::sync::Arc;

use wgm_backend_kernel::KernelWireGuard;
use wgm_backend_userspace::{UserspaceBackend, UserspaceConfig};
use wgm_core::backend::WireGuardBackend;
use wgm_core::{Error, Result};

/// What drives the live WireGuard device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Kernel WireGuard when the kernel has it (built in, loaded or loadable), else
    /// wireguard-go.
    #[default]
    Auto,
    /// Linux kernel WireGuard over generic netlink.
    Kernel,
    /// wireguard-go over its UAPI socket.
    Userspace,
}

impl Backend {
    /// `auto`, `kernel` or `userspace`, naming `field` in the error.
    pub fn parse(s: &str, field: &'static str) -> Result<Backend> {
        match s {
            "auto" => Ok(Backend::Auto),
            "kernel" => Ok(Backend::Kernel),
            "userspace" => Ok(Backend::Userspace),
            _ => Err(Error::invalid(field, "must be auto, kernel or userspace")),
        }
    }
}

/// This host's name: `given`, else the kernel's host name (else `localhost`).
pub fn host_name(given: Option<&str>) -> Result<String> {
    if let Some(h) = given {
        if h.is_empty() || h.len() > 253 || h.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Error::invalid(
                "host",
                "must be 1 to 253 characters without spaces or control characters",
            ));
        }
        return Ok(h.to_owned());
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    Ok(if name.is_empty() { "localhost" } else { name }.to_owned())
}

/// The WireGuard backend `kind` asks for. `Auto` takes the kernel's when the kernel has
/// WireGuard (the probe resolves its generic netlink family, which loads the module
/// when it can), wireguard-go when it has none; any other failure of the probe is an
/// error, not a reason to fall back. `Kernel` on a kernel without WireGuard is the
/// probe's `Unsupported`, which each front end completes with its own spelling of the
/// alternative (`--backend userspace`, `backend="userspace"`).
pub async fn wireguard(kind: Backend) -> Result<Arc<dyn WireGuardBackend>> {
    let userspace = || Arc::new(UserspaceBackend::new(UserspaceConfig::default()));
    match kind {
        Backend::Userspace => Ok(userspace()),
        Backend::Kernel => {
            let wg = KernelWireGuard::new();
            wg.probe().await?;
            Ok(Arc::new(wg))
        }
        Backend::Auto => {
            let wg = KernelWireGuard::new();
            match wg.probe().await {
                Ok(()) => Ok(Arc::new(wg)),
                Err(Error::Unsupported { .. }) => Ok(userspace()),
                Err(e) => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_checked() {
        assert!(host_name(Some("a b")).is_err());
        assert!(host_name(Some("")).is_err());
        assert!(host_name(Some(&"h".repeat(254))).is_err());
        assert_eq!(host_name(Some("h1")).unwrap(), "h1");
        assert!(!host_name(None).unwrap().is_empty());
    }

    #[test]
    fn backend_words() {
        assert_eq!(Backend::parse("auto", "b").unwrap(), Backend::Auto);
        assert_eq!(Backend::parse("kernel", "b").unwrap(), Backend::Kernel);
        assert_eq!(
            Backend::parse("userspace", "b").unwrap(),
            Backend::Userspace
        );
        assert!(matches!(
            Backend::parse("Kernel", "b"),
            Err(Error::InvalidInput { field, .. }) if field == "b"
        ));
    }
}
