"""The router's history is bounded, and "since position n" stays right as old records go."""
from engine.cluster.history import BoundedDict, History


def test_history_keeps_the_latest_records_and_positions_survive_dropping():
    history = History(limit=3)
    history.extend(range(5))              # 0 and 1 are dropped
    assert list(history) == [2, 3, 4] and len(history) == 3
    assert history.since(0) == ([2, 3, 4], 5)   # a reader far behind gets what is left
    assert history.since(4) == ([4], 5)
    history.extend([5])
    assert history.since(5) == ([5], 6) and history.since(6) == ([], 6)


def test_bounded_dict_forgets_its_oldest_entries():
    transfers = BoundedDict(limit=2)
    for key in "abc":
        transfers[key] = key.upper()
    assert list(transfers) == ["b", "c"] and transfers["c"] == "C"
