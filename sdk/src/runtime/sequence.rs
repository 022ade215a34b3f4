//! The one rule for where a request goes along its route's sequence.

use spright_core::ids::FnId;

/// Where in its sequence a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Coming in at the gateway.
    Entry,
    /// Step `hops` has answered; `ok` unless its answer was an error (4xx/5xx or none at all).
    Answered { hops: u8, ok: bool },
}

/// The next step of a sequence: the function and the `hops` its descriptor carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub function: FnId,
    pub hops: u8,
}

/// The step after `position` in `sequence`, or `None` when the answer goes to the gateway:
/// the sequence is done, or a step answered an error (which ends it early, as a Knative
/// Sequence stops at a failed step).
pub fn next_hop(sequence: &[u16], position: Position) -> Option<Step> {
    let hops = match position {
        Position::Entry => 0,
        Position::Answered { ok: false, .. } => return None,
        Position::Answered { hops, ok: true } => hops.checked_add(1)?,
    };
    sequence.get(hops as usize).map(|&f| Step {
        function: FnId(f),
        hops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_runs_in_order_then_ends_at_the_gateway() {
        let seq = [3, 1, 2];
        let step = |function, hops| {
            Some(Step {
                function: FnId(function),
                hops,
            })
        };
        assert_eq!(next_hop(&seq, Position::Entry), step(3, 0));
        let after = |hops| next_hop(&seq, Position::Answered { hops, ok: true });
        assert_eq!(after(0), step(1, 1));
        assert_eq!(after(1), step(2, 2));
        assert_eq!(after(2), None, "the last step answers the gateway");
        assert_eq!(after(255), None, "a hop count at its limit does not wrap");
    }

    #[test]
    fn an_error_ends_the_sequence_early() {
        let seq = [3, 1, 2];
        assert_eq!(
            next_hop(&seq, Position::Answered { hops: 0, ok: false }),
            None
        );
        assert_eq!(next_hop(&[], Position::Entry), None);
    }
}
