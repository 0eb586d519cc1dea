"""Colour frames of a recording paired with the depth image nearest their stamp (segpp-bag --depth-topic).

A bag is read in recording order, and a depth image is often recorded after the colour frame
it belongs to. So a colour frame waits here until its pairing is decided, then comes out with
the depth image whose header stamp is nearest its own, if within ``max_skew_ns`` (the node's
depth.max_skew_ms rule), else with None. Its pairing is decided when

- a depth image stamped at or after the frame's stamp has been read (depth stamps only grow, so
  no later one is nearer), or
- the recording has gone on ``lookahead_ns`` past the frame (a depth stream that stopped or
  lags by more than that), or
- the bag has ended (``finish``).

Frames come out in the order they went in. Memory is bounded: the last ``keep`` depth images
(2 s at 30 Hz by default) and the frames of the lookahead.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Generic, TypeVar

from ..ros.realtime import ByStamp

T = TypeVar("T")


class DepthPairing(Generic[T]):
    """Frames (any payload, by stamp) in; (payload, depth message or None) out, in order."""

    def __init__(self, max_skew_ns: int, lookahead_ns: int = 1_000_000_000, keep: int = 64) -> None:
        self.max_skew_ns = max_skew_ns
        self.lookahead_ns = lookahead_ns
        self.depths: ByStamp[Any] = ByStamp(keep)
        self.latest_depth: int | None = None
        self.waiting: deque[tuple[int, int, T]] = deque()    # (stamp, recorded at, payload)

    def depth(self, stamp: int, recorded: int, msg: Any) -> list[tuple[T, Any]]:
        """A depth image stamped ``stamp``, recorded at ``recorded`` (ns); the frames now decided."""
        self.depths.put(stamp, msg)
        self.latest_depth = stamp if self.latest_depth is None else max(self.latest_depth, stamp)
        return self._decided(recorded)

    def frame(self, stamp: int, recorded: int, payload: T) -> list[tuple[T, Any]]:
        """A colour frame; the frames now decided (this one among them when it already is)."""
        self.waiting.append((stamp, recorded, payload))
        return self._decided(recorded)

    def finish(self) -> list[tuple[T, Any]]:
        """The bag has ended: every waiting frame, paired with what there is."""
        out = [(payload, self.depths.closest(stamp, self.max_skew_ns)) for stamp, _, payload in self.waiting]
        self.waiting.clear()
        return out

    def _decided(self, now: int) -> list[tuple[T, Any]]:
        out = []
        while self.waiting:
            stamp, recorded, payload = self.waiting[0]
            seen_after = self.latest_depth is not None and self.latest_depth >= stamp
            if not (seen_after or now - recorded > self.lookahead_ns):
                break
            self.waiting.popleft()
            out.append((payload, self.depths.closest(stamp, self.max_skew_ns)))
        return out
