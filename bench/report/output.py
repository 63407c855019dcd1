"""Where the report writes, and how: only regular files inside the chosen output
folder, each written atomically (a symbolic link planted in its place is replaced,
never followed), and strings from run configs rendered as one-line quoted data."""

from __future__ import annotations

import os
from pathlib import Path


class ReportOutputError(ValueError):
    """The output folder cannot be written safely; the message names the path."""


class Output:
    """A folder the report writes into. ``path(rel)`` checks that every folder on the
    way is a real folder inside it (not a link out of it); ``write_*`` write a file
    under a temporary name and rename it over the target, so a link at the target is
    replaced by a regular file and what it pointed to is left alone."""

    def __init__(self, root):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ReportOutputError(f"output {self.root} exists and is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)

    def sub(self, name: str) -> Output:
        """The subfolder ``name`` (created), refusing a link."""
        p = self.root / name
        if p.is_symlink():
            raise ReportOutputError(f"{p} is a symbolic link; the report writes only real "
                                    f"folders inside {self.root}")
        return Output(p)

    def path(self, rel: str) -> Path:
        parts = Path(rel).parts
        if not parts or Path(rel).is_absolute() or ".." in parts:
            raise ReportOutputError(f"report file {rel!r} is not a plain relative name")
        folder = self.root
        for part in parts[:-1]:
            folder = self.sub(str(folder.relative_to(self.root) / part)).root
        p = self.root / rel
        if p.exists() and not p.is_symlink() and not p.is_file():
            raise ReportOutputError(f"{p} exists and is not a regular file")
        return p

    def write(self, rel: str, writer) -> Path:
        """``writer(tmp_path)`` writes the file's content; it is then renamed into place."""
        p = self.path(rel)
        tmp = p.with_name(f".tmp-{os.getpid()}-{p.name}")  # keeps the extension (savefig)
        try:
            writer(tmp)
            os.replace(tmp, p)  # replaces a link itself, never its target
        finally:
            if tmp.exists() or tmp.is_symlink():
                tmp.unlink()
        return p

    def write_text(self, rel: str, text: str) -> Path:
        return self.write(rel, lambda t: t.write_text(text, encoding="utf-8"))

    def write_csv(self, rel: str, frame, **kwargs) -> Path:
        return self.write(rel, lambda t: frame.to_csv(t, **kwargs))

    def save_figure(self, fig, rel: str, **kwargs) -> Path:
        fmt = Path(rel).suffix.lstrip(".")
        return self.write(rel, lambda t: fig.savefig(t, format=fmt, **kwargs))


def as_output(out) -> Output:
    return out if isinstance(out, Output) else Output(out)


def one_line(value) -> str:
    """``value`` as one line: newlines, tabs and other control characters escaped."""
    s = str(value)
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in s)


def md_cell(value) -> str:
    """Plain text for a Markdown table cell: one line, pipes escaped."""
    return one_line(value).replace("|", "\\|")


def md_code(value) -> str:
    """A config string as inline code in Markdown: one line, quoted so nothing in it is
    read as markup (a backtick in it lengthens the fence), pipes escaped for tables."""
    s = md_cell(value)
    if "`" in s:
        return f"`` {s} ``"
    return f"`{s}`"
