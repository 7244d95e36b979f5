//! Range arithmetic of the ranged downloader: how the rest of a file is split into requests.
//! Merging ranges and finding holes is shared with the host, in
//! [`hubget_plugin_api::protocol`].

use std::ops::Range;

pub use hubget_plugin_api::protocol::{holes, merge_ranges};

/// Splits `offset..size` into consecutive ranges of at most `range_size` bytes.
pub fn split_ranges(offset: u64, size: u64, range_size: u64) -> Vec<Range<u64>> {
    let step = range_size.max(1);
    let mut out = Vec::new();
    let mut start = offset;
    while start < size {
        let end = size.min(start.saturating_add(step));
        out.push(start..end);
        start = end;
    }
    out
}

/// The smallest range worth its own request when splitting (unless `range_size` is smaller).
pub const MIN_RANGE: u64 = 1024 * 1024;

/// How [`crate::download::download_to_partial`] splits `offset..size` over `connections`:
/// * one range (one request) when `connections <= 1` or fewer than `2 * MIN_RANGE` bytes remain;
/// * else ranges of `base = min(range_size, max(remaining / connections, MIN_RANGE))`, so that a
///   mid-size file still keeps every connection busy;
/// * the last `connections * base` bytes in quarter-size pieces (at least `min(MIN_RANGE,
///   base)`), so that connections finish together instead of one slow range at the end.
pub fn plan_ranges(offset: u64, size: u64, range_size: u64, connections: u32) -> Vec<Range<u64>> {
    if offset >= size {
        return Vec::new();
    }
    let remaining = size - offset;
    let connections = u64::from(connections.max(1));
    if connections == 1 || remaining < 2 * MIN_RANGE {
        return std::iter::once(offset..size).collect();
    }
    let base = range_size
        .max(1)
        .min(remaining.div_ceil(connections).max(MIN_RANGE));
    let tail_len = (connections * base).min(remaining);
    let tail_start = size - tail_len;
    let mut ranges = split_ranges(offset, tail_start, base);
    let piece = (base / 4).max(MIN_RANGE.min(base));
    ranges.extend(split_ranges(tail_start, size, piece));
    ranges
}

/// [`plan_ranges`] over each hole of `offset..size` left by `written` (ranges already on
/// disk), ascending: only the missing bytes are requested.
pub fn plan_holes(
    offset: u64,
    size: u64,
    written: &[Range<u64>],
    range_size: u64,
    connections: u32,
) -> Vec<Range<u64>> {
    holes(offset, size, written)
        .into_iter()
        .flat_map(|h| plan_ranges(h.start, h.end, range_size, connections))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_what_written_ranges_leave_of_the_remainder() {
        assert_eq!(holes(10, 100, &[]), vec![10..100]);
        assert_eq!(
            holes(10, 100, &[50..60, 0..5, 20..30, 25..40, 95..120]),
            vec![10..20, 40..50, 60..95]
        );
        assert_eq!(holes(10, 100, &[0..50, 50..100]), Vec::<Range<u64>>::new());
        assert_eq!(holes(10, 100, &[5..15, 90..100]), vec![15..90]);
        assert_eq!(merge_ranges(vec![5..6, 0..2, 2..3, 9..9]), vec![0..3, 5..6]);
    }

    #[test]
    fn plan_holes_requests_only_the_holes_in_order() {
        let size = 64 * MIN_RANGE;
        let written = vec![8 * MIN_RANGE..20 * MIN_RANGE, 40 * MIN_RANGE..size];
        let plan = plan_holes(MIN_RANGE, size, &written, 4 * MIN_RANGE, 4);
        assert!(plan.windows(2).all(|w| w[0].end <= w[1].start), "{plan:?}");
        let planned: u64 = plan.iter().map(|r| r.end - r.start).sum();
        assert_eq!(planned, 7 * MIN_RANGE + 20 * MIN_RANGE);
        assert!(
            plan.iter()
                .all(|r| written.iter().all(|w| r.end <= w.start || r.start >= w.end)),
            "nothing written is asked for again: {plan:?}"
        );
        assert_eq!(plan.first().map(|r| r.start), Some(MIN_RANGE));
        assert_eq!(plan.last().map(|r| r.end), Some(40 * MIN_RANGE));
    }

    #[test]
    fn ranges_cover_the_remainder_exactly() {
        assert_eq!(split_ranges(0, 10, 4), vec![0..4, 4..8, 8..10]);
        assert_eq!(split_ranges(3, 10, 4), vec![3..7, 7..10]);
        assert_eq!(split_ranges(10, 10, 4), Vec::<Range<u64>>::new());
        assert_eq!(split_ranges(0, 8, 4), vec![0..4, 4..8]);
        assert_eq!(
            split_ranges(0, 5, 0),
            (0..5).map(|i| i..i + 1).collect::<Vec<_>>()
        );
        let big = split_ranges(1, 1 << 30, 16 << 20);
        assert_eq!(big.first().unwrap().start, 1);
        assert_eq!(big.last().unwrap().end, 1 << 30);
        assert!(big.windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn plans_keep_every_connection_busy_and_finish_together() {
        const M: u64 = MIN_RANGE;
        let contiguous = |r: &[Range<u64>], a: u64, b: u64| {
            r.first().unwrap().start == a
                && r.last().unwrap().end == b
                && r.windows(2).all(|w| w[0].end == w[1].start)
        };
        // Small remainders and one connection: one request.
        assert_eq!(plan_ranges(0, M, 16 * M, 8).len(), 1);
        assert_eq!(
            plan_ranges(5, 100 * M, 16 * M, 1),
            std::iter::once(5..100 * M).collect::<Vec<_>>()
        );
        assert!(plan_ranges(7, 7, 16 * M, 8).is_empty());
        // A mid-size file is spread over every connection.
        let r = plan_ranges(0, 40 * M, 16 * M, 8);
        assert!(r.len() >= 8 && contiguous(&r, 0, 40 * M), "{r:?}");
        // A large file: full ranges, then smaller pieces at the end.
        let r = plan_ranges(3, 1024 * M, 16 * M, 8);
        assert!(contiguous(&r, 3, 1024 * M));
        assert!(r.iter().all(|x| x.end - x.start <= 16 * M));
        assert_eq!(r.first().unwrap().end - 3, 16 * M);
        assert_eq!(r.last().unwrap().end - r.last().unwrap().start, 4 * M);
        let tail: u64 = r.iter().rev().take(32).map(|x| x.end - x.start).sum();
        assert_eq!(tail, 128 * M);
        // An explicitly small range size is honoured.
        let r = plan_ranges(0, 4 * M, 256 * 1024, 4);
        assert!(r.len() >= 16 && contiguous(&r, 0, 4 * M), "{}", r.len());
    }
}
