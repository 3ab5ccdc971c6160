//! Who runs which part of a forward pass: one core, or two.
//!
//! The forward pass cuts its big matrix-vector products by rows (whole row quads, the format's
//! weight layout) and attention by query heads (whole key/value-head groups) into two parts, at
//! the point [`split_point`] gives, and hands both to [`Cores::join`]: the first runs on this
//! core, the second on the other (core 1 on the RP2040, a second thread on the host). Every
//! output row and every head is computed by the same code either way, so two cores give the
//! same bits as one.
//!
//! A [`crate::Session`] without cores ([`OneCore`], the default) runs today's uncut code: the
//! forward pass is generic over its `Cores`, and for [`OneCore`] [`Cores::splits`] is a constant
//! `false`, so the cut paths are not even compiled into that instance.

/// One part of a cut step: runs once per [`Cores::join`].
pub type Part<'p> = &'p mut (dyn FnMut() + Send + 'p);

/// Runs the two parts of each cut step of the forward pass.
pub trait Cores: Sync {
    /// Whether the forward pass cuts its steps in two ([`OneCore`]: no).
    #[inline(always)]
    fn splits(&self) -> bool {
        true
    }

    /// Runs `first` on this core and `second` on the other; returns when both have finished.
    /// The two parts write disjoint outputs and only read what they share.
    fn join(&self, first: Part, second: Part);
}

/// Everything on the calling core, uncut.
#[derive(Clone, Copy, Debug, Default)]
pub struct OneCore;

impl Cores for OneCore {
    #[inline(always)]
    fn splits(&self) -> bool {
        false
    }

    #[inline(always)]
    fn join(&self, first: Part, second: Part) {
        first();
        second();
    }
}

/// Both parts on the calling core, one after the other, but cut as for two cores: the cut
/// forward pass without a second core (tests; a firmware whose core 1 did not answer uses
/// [`OneCore`] instead, which does not cut at all).
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial;

impl Cores for Serial {
    fn join(&self, first: Part, second: Part) {
        first();
        second();
    }
}

/// The second part on a scoped thread of the host (`std`): a new thread per join, so this
/// proves the cut, not the speed.
#[cfg(feature = "std")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Threads;

#[cfg(feature = "std")]
impl Cores for Threads {
    fn join(&self, first: Part, second: Part) {
        std::thread::scope(|scope| {
            scope.spawn(second);
            first();
        });
    }
}

/// Where `units` items, cut only at multiples of `granule`, are divided between the two cores:
/// the first core takes `0..split_point(units, granule)`, the second the rest. It is the
/// multiple of `granule` nearest to `units / 2` (a tie goes up, to the first core), so a
/// remainder smaller than `granule` stays with the second core. Rows: `granule` 4 (row quads);
/// heads: the query heads per key/value head. 0 for `granule` 0.
///
/// ```
/// use starmind_engine::cores::split_point;
/// assert_eq!(split_point(64, 4), 32);
/// assert_eq!(split_point(172, 4), 88); // 22 quads here, 21 there
/// assert_eq!(split_point(6, 4), 4); // one quad here, the 2 tail rows there
/// assert_eq!(split_point(4, 4), 4); // a single quad is not cut
/// assert_eq!(split_point(8, 2), 4); // 8 heads in groups of 2
/// ```
#[inline]
pub fn split_point(units: usize, granule: usize) -> usize {
    if granule == 0 {
        return 0;
    }
    (granule * ((units + granule) / (2 * granule))).min(units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_point_is_the_multiple_of_the_granule_nearest_the_middle() {
        for granule in 1..=8usize {
            for units in 0..200usize {
                let at = split_point(units, granule);
                assert!(
                    at <= units && at.is_multiple_of(granule),
                    "{units} {granule}"
                );
                // No multiple of the granule (≤ units) is nearer the middle.
                let distance = |p: usize| (2 * p).abs_diff(units);
                for p in (0..=units).step_by(granule) {
                    assert!(
                        distance(at) <= distance(p),
                        "{units} {granule}: {at} vs {p}"
                    );
                }
            }
        }
        assert_eq!(split_point(10, 0), 0);
    }

    #[test]
    fn every_kind_of_cores_runs_both_parts() {
        let kinds: [&dyn Cores; 2] = [&OneCore, &Serial];
        for cores in kinds {
            let mut out = [0u8; 2];
            let (a, b) = out.split_at_mut(1);
            cores.join(&mut || a[0] = 1, &mut || b[0] = 2);
            assert_eq!(out, [1, 2]);
        }
    }
}
