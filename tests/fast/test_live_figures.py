"""The dashboard's live charts draw a bounded number of points and never drop a stall."""
import pandas as pd

from lab.figures import itl_timeline, middle_and_longest_gaps, rolling_itl
from lab.load_generator import RequestKind


def gaps(users: int = 2, seconds: float = 10.0, every_s: float = 0.05, stall_at: float = 4.0) -> pd.DataFrame:
    """Each user gets a token every 30 to 90 ms (around `every_s`), except one 3-second stall for user 0."""
    rows = []
    for user in range(users):
        t, i = 0.0, 0
        while t < seconds:
            i += 1
            gap = 3.0 if user == 0 and abs(t - stall_at) < every_s / 2 else every_s * (0.6 + 0.1 * (i % 7))
            t += gap
            rows.append({"kind": RequestKind.SHORT, "user": user, "t": t, "gap_ms": 1000 * gap})
    return pd.DataFrame(rows)


def test_middle_and_longest_gaps_keep_each_users_median_and_longest_gap_per_slice():
    tokens = gaps()
    kept = middle_and_longest_gaps(tokens, 0.5)
    slices = (tokens["t"] // 0.5).nunique()
    assert len(kept) <= 2 * 2 * slices < len(tokens) / 2
    assert kept["gap_ms"].max() == 3000.0 and kept.loc[kept["gap_ms"].idxmax(), "user"] == 0
    by_slice = lambda frame: frame.groupby([frame["user"], frame["t"] // 0.5])["gap_ms"]  # noqa: E731
    pd.testing.assert_series_equal(by_slice(kept).max(), by_slice(tokens).max())
    lower_median = by_slice(tokens).apply(lambda g: sorted(g)[(len(g) - 1) // 2])
    pd.testing.assert_series_equal(by_slice(kept).min(), lower_median, check_names=False)
    assert kept.index.isin(tokens.index).all()   # measured gaps, none made up


def test_live_itl_chart_draws_fewer_points_with_the_same_stall():
    tokens = gaps()
    every = itl_timeline(tokens, [], "", "en")
    sliced = itl_timeline(tokens, [], "", "en", slice_s=0.5)
    points = lambda fig: sum(len(trace.y) for trace in fig.data)  # noqa: E731
    assert points(sliced) < points(every) / 2
    assert max(max(trace.y) for trace in sliced.data) == max(max(trace.y) for trace in every.data) == 3000.0


def test_rolling_itl_every_slice_keeps_the_value_at_each_slices_end():
    tokens = gaps(users=1)
    every = rolling_itl(tokens, "", "en")
    sliced = rolling_itl(tokens, "", "en", every_s=0.5)
    for full, few in zip(every.data, sliced.data):
        assert len(few.x) == (tokens["t"] // 0.5).nunique()
        assert few.y[-1] == full.y[-1]
        # each kept point is the full series' point at the same time
        at = dict(zip(full.x, full.y))
        assert all(at[x] == y for x, y in zip(few.x, few.y))
