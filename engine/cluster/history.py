"""The router's records, bounded: the most recent ones, numbered from the first ever kept, so a reader
can ask for "everything since position n" (the /events feed) while old records are dropped."""
from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

STEPS_KEPT = 50_000       # about 40 minutes of steps at this CPU's ~20 per second; minutes on a GPU
REQUESTS_KEPT = 10_000
TRANSFERS_KEPT = 10_000


class History(Generic[T]):
    def __init__(self, limit: int):
        self._items: deque[T] = deque(maxlen=limit)
        self.total = 0   # records ever added: the position the next one gets

    def extend(self, items: Iterable[T]) -> None:
        for item in items:
            self._items.append(item)
            self.total += 1

    def since(self, position: int) -> tuple[list[T], int]:
        """Records from `position` on (those still kept), and the position to ask from next time."""
        first = self.total - len(self._items)
        return list(self._items)[max(0, position - first):], self.total

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)


class BoundedDict(OrderedDict):
    """A dict that forgets its oldest entries beyond `limit`."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        while len(self) > self.limit:
            self.popitem(last=False)
