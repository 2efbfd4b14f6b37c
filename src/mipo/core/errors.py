"""User errors: each is printed by the CLI as one line, with exit code 2 and no traceback."""

from __future__ import annotations

from pathlib import Path


class MipoError(Exception):
    """An error the user can fix (bad input, missing package, wrong flag)."""


class ConfigError(MipoError):
    """An invalid setting; the message names the field and, where it helps, the fix."""


class InputError(MipoError):
    """A bad input file: the message names the file, the line (1-based) and the field."""

    def __init__(self, path: str | Path, message: str, *, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = str(path), line, field
        where = self.path if line is None else f"{self.path}:{line}"
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {message}")


class OutputExistsError(MipoError):
    """A finished artifact would be overwritten (or, with ``resume``, resumed: it has nothing left to do)."""

    def __init__(self, path: str | Path, *, resume: bool = False):
        self.path = str(path)
        if resume:
            message = (
                f"{path} is a finished run: there is nothing to resume; "
                "pass --overwrite to replace it or choose another --out"
            )
        else:
            message = f"{path} already exists; pass --resume to continue it or --overwrite to replace it"
        super().__init__(message)
