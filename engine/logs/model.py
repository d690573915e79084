"""The log line: one line of a step's output, or one note of the server (DESIGN §7).

A line is stored and sent as the reference's JSONL object
`{"ts": "<ISO 8601 UTC>", "stream": "stdout"|"stderr", "step": …, "line": …}`. Its `seq`
is its 1-based position in the job's log: the cursor a reader passes back as `after`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

STDOUT = "stdout"
STDERR = "stderr"
SERVER_STEP = "_server"
"""The step name of the server's own notes (they use stream `stdout`)."""


def format_ts(ts: float) -> str:
    """Epoch seconds → ISO 8601 in UTC with microseconds and a `Z` (as `datetime` rounds
    them: half to even). Every log line and note is stamped so: the text of the whole
    second is kept from the previous call."""
    global _second_text
    fraction, whole = math.modf(ts)
    if ts < 0:
        return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    second = int(whole)
    if _second_text[0] != second:
        _second_text = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second_text[1]}.{micros:06d}Z"


_second_text: tuple[int, str] = (-1, "")


def parse_ts(text: str) -> float:
    """ISO 8601 (with `Z` or an offset) → epoch seconds."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


@dataclass(frozen=True, slots=True)
class LogLine:
    """One log line. `seq` is 0 until a store has given the line its place."""

    ts: float
    stream: str
    step: str
    line: str
    seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The reference's object, in its key order (without `seq`)."""
        return {"ts": format_ts(self.ts), "stream": self.stream, "step": self.step,
                "line": self.line}

    def to_json(self) -> bytes:
        """The reference's JSONL object (one line, no trailing newline)."""
        return orjson.dumps(self.to_dict())

    def with_seq(self, seq: int) -> LogLine:
        """A copy placed at `seq`."""
        return replace(self, seq=seq)

    @classmethod
    def from_json(cls, data: bytes | str, seq: int = 0) -> LogLine:
        """Parse one JSONL object written by `to_json`."""
        obj = orjson.loads(data)
        return cls(ts=parse_ts(obj["ts"]), stream=obj["stream"], step=obj["step"],
                   line=obj["line"], seq=seq)
