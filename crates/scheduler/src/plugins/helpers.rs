//! Scoring shared by the default plugins (matching is `capstan_api::ext`'s).

use crate::framework::{NodeScore, MAX_NODE_SCORE};

/// kube-scheduler's `DefaultNormalizeScore`: scales scores so the highest is
/// `MAX_NODE_SCORE`; with `reverse`, the lowest raw score gets the most.
pub(crate) fn default_normalize(scores: &mut [NodeScore], reverse: bool) {
    let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
    if max == 0 {
        if reverse {
            for s in scores {
                s.score = MAX_NODE_SCORE;
            }
        }
        return;
    }
    for s in scores {
        let v = MAX_NODE_SCORE * s.score / max;
        s.score = if reverse { MAX_NODE_SCORE - v } else { v };
    }
}
