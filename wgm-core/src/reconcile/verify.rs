//! When the backends' acknowledgement of a plan is proof that the host holds it, and
//! what the host holds then.
//!
//! Neither the kernel nor UAPI has a per-peer read: reading a device back costs a dump
//! of every peer, however small the change. Both acknowledge a set only when every
//! operation in it succeeded (`errno=0`, a netlink ACK); a failure stops part-way and is
//! reported. [`Verify::trusts_acknowledgement`] decides, from what an apply knows after
//! executing ([`Execution`]), whether it may skip the read-back; [`acknowledged_state`]
//! is then what the host holds, by the backends' own semantics
//! ([`crate::backend::DeviceState::apply`], [`crate::backend::LinkState::apply`]).

use serde::Serialize;

use crate::backend::{DeviceState, LinkState};

use super::plan::Plan;

/// How an apply makes sure that what it executed landed.
///
/// Neither the kernel nor UAPI has a per-peer read: reading a device back costs a dump
/// of every peer (45–100 ms for wireguard-go at 10 000 peers on a small machine),
/// however small the change. Both acknowledge a set only when every operation in it succeeded
/// (`errno=0`, a netlink ACK); a failure stops part-way and is reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verify {
    /// Read the host back in full after every executed plan and plan again.
    Always,
    /// Read the host back in full unless the backends' acknowledgement is proof enough.
    /// Acknowledgement is trusted only when all of these hold: every delta was
    /// acknowledged without error; no device was created or deleted and no full resync
    /// or port choice was asked for; the backend can tell the device's incarnation
    /// ([`crate::backend::WireGuardBackend::device_instance`]) and it is the one the plan
    /// was made for; and the plan was made from a full read of this apply, or (when
    /// there was something to do) from a state verified less than
    /// [`Execution::reverify_after`] ago (the manager's `reverify_after_secs`).
    ///
    /// So an apply with nothing to change re-reads (that is how a periodic reconcile
    /// finds out-of-band changes), a device recreated or a daemon restarted is noticed
    /// before planning, and a stream of changes costs a full read at most once per
    /// interval instead of once per change.
    #[default]
    Auto,
}

/// Where the live state a plan was made from came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlannedFrom {
    /// A full read of the host during this apply.
    Read,
    /// A state kept from an earlier apply (a read-back plus acknowledged deltas), whose
    /// last full read was `age` ago; the device is the same instance.
    Kept {
        /// Time since the kept state was last read in full.
        age: time::Duration,
    },
}

/// What an apply knows after executing a plan: the input of
/// [`Verify::trusts_acknowledgement`].
#[derive(Clone, Copy, Debug)]
pub struct Execution<'a> {
    /// The executed plan.
    pub plan: &'a Plan,
    /// Whether any backend call failed.
    pub failed: bool,
    /// Whether the backend could tell the device's instance the plan was made for.
    pub instance_known: bool,
    /// Where the plan's live state came from.
    pub planned_from: PlannedFrom,
    /// How long a kept state may stand for a read.
    pub reverify_after: time::Duration,
}

impl Verify {
    /// Whether, under this policy, the backends' acknowledgement of `ex` is proof that
    /// the host holds the plan (no read-back needed). See [`Verify::Auto`].
    #[must_use]
    pub fn trusts_acknowledgement(self, ex: &Execution<'_>) -> bool {
        let pl = ex.plan;
        let fresh_enough = match ex.planned_from {
            PlannedFrom::Read => true,
            // Nothing to change re-reads: that is how out-of-band changes are found.
            PlannedFrom::Kept { age } => !pl.is_empty() && age < ex.reverify_after,
        };
        self == Verify::Auto
            && !ex.failed
            && ex.instance_known
            && !pl.create_device
            && !pl.delete_device
            && !pl.device.replace_peers
            && pl.device.listen_port != Some(0)
            && fresh_enough
    }
}

/// What the host holds after acknowledging every delta of `plan`, made from `device`
/// and `link`: those states with the deltas applied by the backends' semantics. `None`
/// when the link delta does not apply to the link (then only a read can tell).
#[must_use]
pub fn acknowledged_state(
    plan: &Plan,
    mut device: Option<DeviceState>,
    mut link: Option<LinkState>,
) -> Option<(Option<DeviceState>, Option<LinkState>)> {
    if let Some(d) = device.as_mut() {
        d.apply(&plan.device);
    }
    match link.as_mut() {
        Some(l) if !plan.link.is_empty() => l.apply(&plan.link).ok()?,
        _ => {}
    }
    Some((device, link))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{DeviceDelta, LinkDelta};
    use crate::model::RevisionNo;
    use crate::names::InterfaceName;
    use crate::reconcile::PlanItem;

    fn plan_with(items: Vec<PlanItem>) -> Plan {
        Plan {
            interface: InterfaceName::new("wg0").unwrap(),
            revision: RevisionNo(1),
            items,
            create_device: false,
            delete_device: false,
            device: DeviceDelta::default(),
            link: LinkDelta::default(),
        }
    }

    fn ex(plan: &Plan, planned_from: PlannedFrom) -> Execution<'_> {
        Execution {
            plan,
            failed: false,
            instance_known: true,
            planned_from,
            reverify_after: time::Duration::seconds(60),
        }
    }

    #[test]
    fn acknowledgement_is_trusted_only_when_every_condition_holds() {
        let pl = plan_with(vec![PlanItem::SetUp]);
        let base = ex(&pl, PlannedFrom::Read);
        assert!(Verify::Auto.trusts_acknowledgement(&base));
        assert!(!Verify::Always.trusts_acknowledgement(&base));
        assert!(!Verify::Auto.trusts_acknowledgement(&Execution {
            failed: true,
            ..base
        }));
        assert!(!Verify::Auto.trusts_acknowledgement(&Execution {
            instance_known: false,
            ..base
        }));
        for tweak in 0..4 {
            let mut p = pl.clone();
            match tweak {
                0 => p.create_device = true,
                1 => p.delete_device = true,
                2 => p.device.replace_peers = true,
                _ => p.device.listen_port = Some(0),
            }
            assert!(
                !Verify::Auto.trusts_acknowledgement(&ex(&p, PlannedFrom::Read)),
                "{tweak}"
            );
        }
        // A port other than 0 is no choice left to the device.
        let mut p = pl.clone();
        p.device.listen_port = Some(51820);
        assert!(Verify::Auto.trusts_acknowledgement(&ex(&p, PlannedFrom::Read)));
    }

    #[test]
    fn a_kept_state_is_trusted_while_young_and_only_with_something_to_do() {
        let pl = plan_with(vec![PlanItem::SetUp]);
        let young = PlannedFrom::Kept {
            age: time::Duration::seconds(59),
        };
        let old = PlannedFrom::Kept {
            age: time::Duration::seconds(60),
        };
        assert!(Verify::Auto.trusts_acknowledgement(&ex(&pl, young)));
        assert!(!Verify::Auto.trusts_acknowledgement(&ex(&pl, old)));
        // Nothing to execute (report-only items): read back, that is how drift is found.
        let idle = plan_with(vec![PlanItem::UnresolvedEndpoint { name: "a".into() }]);
        assert!(!Verify::Auto.trusts_acknowledgement(&ex(&idle, young)));
        assert!(Verify::Auto.trusts_acknowledgement(&ex(&idle, PlannedFrom::Read)));
    }

    #[test]
    fn the_acknowledged_state_is_the_planned_one_with_the_deltas_applied() {
        let mut pl = plan_with(vec![PlanItem::SetMtu { from: 0, to: 1420 }]);
        pl.link.mtu = Some(1420);
        pl.device.listen_port = Some(51820);
        let link = LinkState {
            up: false,
            mtu: 0,
            addresses: Vec::new(),
            routes: Vec::new(),
        };
        let (dev, link) =
            acknowledged_state(&pl, Some(DeviceState::default()), Some(link)).unwrap();
        assert_eq!(dev.unwrap().listen_port, 51820);
        assert_eq!(link.unwrap().mtu, 1420);
        // No link to apply to: nothing to say about it.
        let (_, link) = acknowledged_state(&pl, None, None).unwrap();
        assert!(link.is_none());
    }
}
