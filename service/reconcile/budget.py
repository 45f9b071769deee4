"""A budget for event-triggered Marathon reads of apps the last resync did not list.

Events are unauthenticated hints (docs/architecture.md §2): each one naming an app costs a Marathon
read, and coalescing per app bounds that only for apps already known. A poster inventing valid app
ids (`/forged/app-1`, `/forged/app-2`, …) would cost one read each, as fast as it can post. Apps
Marathon has (listed by the last resync, or found by a read since) are never limited; every other
app id takes one unit of `limit` per `interval`, once per interval however often it is hinted. A
hint over the budget is dropped, counted (`unlisted_reads_skipped_total`) and logged once per spell
of skipping: the next resync lists every app Marathon runs, so a real new app is registered then at
the latest. The default (1,000 distinct new apps per 10 s) passes a deployment burst of a thousand
new apps untouched and holds a forger to 100 reads per second (each a cheap 404 of Marathon's). It
was 100: `python -m bench burst` (500 new apps x 10 tasks, announced only by their TASK_RUNNING)
then registered 1,000 of the 5,000 tasks and left the rest to the next resync.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class UnlistedReads:
    def __init__(self, *, limit: int, interval: float, on_skip: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or interval <= 0:
            raise ValueError("the unlisted-reads budget needs limit >= 1 and interval > 0")
        self.limit = limit
        self.interval = interval
        self._on_skip = on_skip
        self._clock = clock
        self._window_start = float("-inf")
        self._admitted: set[str] = set()  # at most `limit` ids: the forger's ids are not kept
        self._skipped = 0  # in this window
        self._spell = False  # skipping went on in the last window too: logged already

    def admit(self, app_id: str) -> bool:
        """Whether a hint for `app_id`, an app Marathon is not known to have, may cost a read now."""
        now = self._clock()
        if now - self._window_start >= self.interval:
            self._spell = self._skipped > 0 and now - self._window_start < 2 * self.interval
            self._window_start, self._admitted, self._skipped = now, set(), 0
        if app_id in self._admitted:
            return True
        if len(self._admitted) < self.limit:
            self._admitted.add(app_id)
            return True
        self._skipped += 1
        self._on_skip()
        if self._skipped == 1 and not self._spell:
            log.warning("more than %d apps the last resync did not list were hinted within %.0f s (forged "
                        "events?): their Marathon reads are skipped, the next resync covers them "
                        "(counted in unlisted_reads_skipped_total; logged once while it lasts)",
                        self.limit, self.interval)
        return False
