//! The backend conformance suite against the in-memory implementations.
#![cfg(feature = "conformance")]

use wgm_core::backend::{MemoryWireGuard, WireGuardBackend};
use wgm_core::conformance::backend::{self as suite, Params};
use wgm_core::names::InterfaceName;

fn name(s: &str) -> InterfaceName {
    InterfaceName::new(s).expect("valid interface name")
}

#[tokio::test]
async fn memory_wireguard_passes_the_suite() {
    let wg = MemoryWireGuard::new();
    suite::run_wireguard(&wg, &name("wgc0"), &Params::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn memory_wireguard_without_optional_capabilities_passes_the_suite() {
    let caps = wgm_core::backend::Capabilities::default();
    let wg = MemoryWireGuard::with_capabilities(caps);
    let params = Params {
        large_peers: 500,
        many_allowed_ips: 500,
    };
    suite::run_wireguard(&wg, &name("wgc1"), &params)
        .await
        .unwrap();
}

#[tokio::test]
async fn memory_network_passes_the_suite() {
    let wg = MemoryWireGuard::new();
    let n = name("wgc2");
    wg.create_device(&n).await.unwrap();
    suite::run_network(&wg.network(), &n).await.unwrap();
}

/// A backend whose reads lose peers past the first 20, like the netlink dumps that were
/// not merged in other managers: the suite must catch it.
#[derive(Debug)]
struct TruncatingReads(MemoryWireGuard);

#[async_trait::async_trait]
impl WireGuardBackend for TruncatingReads {
    fn name(&self) -> &'static str {
        "truncating"
    }
    fn capabilities(&self) -> wgm_core::backend::Capabilities {
        self.0.capabilities()
    }
    async fn list_devices(&self) -> wgm_core::Result<Vec<InterfaceName>> {
        self.0.list_devices().await
    }
    async fn create_device(&self, name: &InterfaceName) -> wgm_core::Result<()> {
        self.0.create_device(name).await
    }
    async fn delete_device(&self, name: &InterfaceName) -> wgm_core::Result<()> {
        self.0.delete_device(name).await
    }
    async fn read_device(
        &self,
        name: &InterfaceName,
    ) -> wgm_core::Result<Option<wgm_core::backend::DeviceState>> {
        let mut state = self.0.read_device(name).await?;
        if let Some(s) = state.as_mut() {
            let keep: Vec<_> = s.peers.keys().take(20).copied().collect();
            s.peers.retain(|k, _| keep.contains(k));
        }
        Ok(state)
    }
    async fn apply_device(
        &self,
        name: &InterfaceName,
        delta: &wgm_core::backend::DeviceDelta,
    ) -> wgm_core::Result<()> {
        self.0.apply_device(name, delta).await
    }
}

#[tokio::test]
#[should_panic(expected = "100 peers set, 20 read back")]
async fn the_suite_catches_truncated_reads() {
    let wg = TruncatingReads(MemoryWireGuard::new());
    suite::large_device(&wg, &name("wgc3"), 100).await.unwrap();
}
