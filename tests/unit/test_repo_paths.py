"""The repository stands alone: no committed file names a path outside it.

A reference to a sibling directory or to the machine it was written on works for its author only;
a clone elsewhere gets a dead link. The patterns are split so that this file does not match them.
"""

from __future__ import annotations

import re
import subprocess

from tests.support import ROOT

OUTSIDE = re.compile("|".join([re.escape(".." + "/shared"), r"(?<![\w.~-])/" + "work(?:/|\\b)"]))


def committed_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    return [name for name in listed.stdout.decode().split("\0") if name and (ROOT / name).is_file()]


def test_no_file_names_a_path_outside_the_repository() -> None:
    found = []
    for name in committed_files():
        try:
            text = (ROOT / name).read_text()
        except UnicodeDecodeError:
            continue  # images and other binaries
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{name}:{number}: {line.strip()[:120]}")
    lines = "\n".join(found)
    assert not found, f"files naming a path outside the repository (say it in the repository's own words):\n{lines}"


def test_the_pattern_catches_what_it_must() -> None:
    assert OUTSIDE.search("see " + ".." + "/shared/PROTOCOL.md")
    assert OUTSIDE.search("gitdir /" + "work/main/.git")
    assert not OUTSIDE.search("a network/" + "work/ path, or framework/" + "workers")
