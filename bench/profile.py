"""Summarise py-spy samples from ``python -m bench.run --profile DIR``: where server CPU goes.

    .venv/bin/python -m bench.run --servers switchboard --scenarios rooms --reps 1 --profile bench/results/profile
    .venv/bin/python -m bench.profile bench/results/profile/rooms-switchboard-*.txt

Prints markdown tables over all the given files (all server processes of a run): the stages of
a message's path through a Switchboard instance, then the functions where samples were taken
(self) and the functions on the stack (inclusive), as shares of the samples, lines folded into
their function.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# "name (path/to/file.py:123)" -> "name (file.py)": one row per function, not per line.
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<path>[^()]*?)(?::\d+)?\)$")


def function(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["path"]
    for marker in ("site-packages/", "/app/", "/bench/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1] if marker != "/app/" else "app/" + path.split(marker, 1)[1]
            break
    return f"{match['name']} ({path})"


# A sample belongs to the stage of the innermost function on its stack that names one.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("the send system call, one per delivery (`try_write`)", ("WebSocketProtocol.try_write", "ChunkWriter.try_write")),
    ("publishing: the write to Redis", ("StreamWriter.writelines",)),
    ("publishing: reading the replies", ("Publisher._replies",)),
    ("publishing: packing and queueing", ("Publisher.run", "Publisher.publish")),
    ("fan-out: `Connection.offer`", ("Connection.offer",)),
    ("fan-out: `Hub.deliver`", ("Hub.deliver",)),
    ("pub/sub: parse, unpack, dispatch", ("PubSubReader.data_received",)),
    ("the client frame: the app (session, checks, the publish call)", ("WebSocketsSansIOProtocol.run_asgi",)),
    ("the client frame: uvicorn's and websockets' parsing", ("(uvicorn/protocols/websockets/", "(websockets/")),
]
OTHER = "the event loop and everything else"


def stage(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, keys in STAGES:
            if any(key in frame for key in keys):
                return name
    return OTHER


def summarise(files: list[Path], top: int) -> str:
    own: Counter[str] = Counter()
    on_stack: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    total = 0
    for file in files:
        for line in file.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = [function(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            total += n
            own[frames[-1]] += n
            stages[stage(frames)] += n
            for name in set(frames):
                on_stack[name] += n
    out = [f"{total} samples from {len(files)} processes", "", "| stage | share |", "| --- | --- |"]
    out += [f"| {name} | {100 * n / total:.1f} % |" for name, n in stages.most_common()]
    out.append("")
    for title, counter in (("self", own), ("inclusive", on_stack)):
        out += [f"| {title} | function |", "| --- | --- |"]
        out += [f"| {100 * n / total:.1f} % | `{name}` |" for name, n in counter.most_common(top)]
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarise(args.files, args.top))


if __name__ == "__main__":
    main()
