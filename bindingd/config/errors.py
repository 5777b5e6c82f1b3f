"""ConfigError: one mistake in a bindingd.yaml (or a file it reads), pinned to file, line and key.

It is not a `BindingdError`: a bad config stops the daemon before any call is served, so it
has no gRPC status. `str(err)` is one line, in the `file:line: key.path: message` form that
editors and terminals turn into links.
"""

from __future__ import annotations

import re
from pathlib import Path


class ConfigError(Exception):
    """A configuration mistake. The message says what is wrong and what is allowed.

    It never holds an interpolated value: a `${env:…}` or `${file:…}` result may be a secret,
    so messages quote the reference, not what it resolved to.
    """

    def __init__(
        self,
        message: str,
        *,
        file: Path | None = None,
        line: int | None = None,
        key_path: str = "",
    ) -> None:
        # Keep str(err) on one line whatever a message (e.g. PyYAML's) contains.
        self.message = re.sub(r"\s*[\r\n]+\s*", " ", message).strip()
        self.file = file
        self.line = line
        self.key_path = key_path
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = str(self.file) if self.line is None else f"{self.file}:{self.line}"
        elif self.line is not None:
            where = f"line {self.line}"
        return ": ".join(part for part in (where, self.key_path, self.message) if part)
