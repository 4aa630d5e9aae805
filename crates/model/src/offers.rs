//! Why nodes declined a task: Marathon's `NoOfferMatchReason` vocabulary and
//! a per-node tally of it, as `/v2/queue` reports in `processedOffersSummary`.
//! In Wharf every reachable node is one "offer" the scheduler considered.

/// Marathon's reasons for not using an offer, in the order of its funnel
/// (`NoOfferMatchReason.reasonFunnel`): a node that fails several checks is
/// counted once, under the earliest of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeclineReason {
    UnfulfilledRole,
    UnfulfilledConstraint,
    NoCorrespondingReservationFound,
    AgentMaintenance,
    InsufficientCpus,
    InsufficientMemory,
    InsufficientDisk,
    InsufficientGpus,
    InsufficientPorts,
    DeclinedScarceResources,
}

impl DeclineReason {
    /// Every reason, in funnel order (Marathon lists them all, zeros included).
    pub const FUNNEL: [DeclineReason; 10] = [
        DeclineReason::UnfulfilledRole,
        DeclineReason::UnfulfilledConstraint,
        DeclineReason::NoCorrespondingReservationFound,
        DeclineReason::AgentMaintenance,
        DeclineReason::InsufficientCpus,
        DeclineReason::InsufficientMemory,
        DeclineReason::InsufficientDisk,
        DeclineReason::InsufficientGpus,
        DeclineReason::InsufficientPorts,
        DeclineReason::DeclinedScarceResources,
    ];

    pub fn marathon_name(self) -> &'static str {
        match self {
            DeclineReason::UnfulfilledRole => "UnfulfilledRole",
            DeclineReason::UnfulfilledConstraint => "UnfulfilledConstraint",
            DeclineReason::NoCorrespondingReservationFound => "NoCorrespondingReservationFound",
            DeclineReason::AgentMaintenance => "AgentMaintenance",
            DeclineReason::InsufficientCpus => "InsufficientCpus",
            DeclineReason::InsufficientMemory => "InsufficientMemory",
            DeclineReason::InsufficientDisk => "InsufficientDisk",
            DeclineReason::InsufficientGpus => "InsufficientGpus",
            DeclineReason::InsufficientPorts => "InsufficientPorts",
            DeclineReason::DeclinedScarceResources => "DeclinedScarceResources",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One funnel stage as Marathon renders it: of `processed` offers that got
/// this far, `declined` stopped here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunnelStep {
    pub reason: DeclineReason,
    pub declined: u32,
    pub processed: u32,
}

/// How the nodes considered for one task answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OfferSummary {
    /// Nodes considered (reachable nodes; unreachable ones make no offers).
    pub processed: u32,
    declined: [u32; 10],
}

impl OfferSummary {
    /// Counts one node that declined for `reason` (its earliest in the funnel).
    pub fn decline(&mut self, reason: DeclineReason) {
        self.processed += 1;
        self.declined[reason.index()] += 1;
    }

    /// Counts one node that could have taken the task.
    pub fn accept(&mut self) {
        self.processed += 1;
    }

    pub fn declined(&self, reason: DeclineReason) -> u32 {
        self.declined[reason.index()]
    }

    /// Nodes that declined, for any reason.
    pub fn unused(&self) -> u32 {
        self.declined.iter().sum()
    }

    /// Every reason in funnel order, each with the nodes that reached it.
    pub fn funnel(&self) -> Vec<FunnelStep> {
        let mut left = self.processed;
        DeclineReason::FUNNEL
            .iter()
            .map(|&reason| {
                let declined = self.declined(reason);
                let step = FunnelStep { reason, declined, processed: left };
                left = left.saturating_sub(declined);
                step
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn funnel_subtracts_earlier_declines() {
        let mut s = OfferSummary::default();
        s.decline(DeclineReason::InsufficientMemory);
        s.decline(DeclineReason::UnfulfilledConstraint);
        s.decline(DeclineReason::UnfulfilledConstraint);
        s.accept();
        let f = s.funnel();
        assert_eq!(f.len(), 10);
        assert_eq!(f[0], FunnelStep { reason: DeclineReason::UnfulfilledRole, declined: 0, processed: 4 });
        assert_eq!(f[1], FunnelStep { reason: DeclineReason::UnfulfilledConstraint, declined: 2, processed: 4 });
        assert_eq!(f[5], FunnelStep { reason: DeclineReason::InsufficientMemory, declined: 1, processed: 2 });
        assert_eq!(f[9], FunnelStep { reason: DeclineReason::DeclinedScarceResources, declined: 0, processed: 1 });
        assert_eq!(s.unused(), 3);
    }
}
