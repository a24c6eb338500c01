//! Injected faults: each counts the calls to its operation from the moment it was injected.

use super::{Fault, FaultAction};

struct Slot {
    fault: Fault,
    seen: u32,
}

#[derive(Default)]
pub(crate) struct Faults {
    slots: Vec<Slot>,
}

impl Faults {
    pub(crate) fn inject(&mut self, fault: Fault) {
        self.slots.push(Slot { fault, seen: 0 });
    }

    pub(crate) fn clear(&mut self) {
        self.slots.clear();
    }

    /// Counts one call of `op` against every fault for it; the first fault (in injection order)
    /// whose window `nth ..= nth + times - 1` holds the call decides what happens.
    pub(crate) fn hit(&mut self, op: &str) -> Option<FaultAction> {
        let mut chosen = None;
        for slot in self.slots.iter_mut().filter(|s| s.fault.op == op) {
            slot.seen += 1;
            let first = slot.fault.nth.max(1);
            let end = first.saturating_add(slot.fault.times);
            if chosen.is_none() && slot.seen >= first && slot.seen < end {
                chosen = Some(slot.fault.action.clone());
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(op: &str, nth: u32, times: u32) -> Fault {
        Fault {
            op: op.into(),
            nth,
            times,
            action: FaultAction::Throttle { retry_after: None },
        }
    }

    #[test]
    fn window_counts_from_injection() {
        let mut f = Faults::default();
        f.inject(fault("a", 2, 2));
        let hits: Vec<bool> = (0..5).map(|_| f.hit("a").is_some()).collect();
        assert_eq!(hits, [false, true, true, false, false]);
        assert!(f.hit("b").is_none());
    }
}
