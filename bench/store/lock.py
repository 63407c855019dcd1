"""One trainer per config: a lock file claimed atomically before a config trains,
kept fresh by a heartbeat, and taken over once its owner has stopped beating.

The lock is ``runs/<config_hash>/.lock``, a small JSON file (host, pid, token,
time). It is created by writing a private temporary file and hard-linking it to
the lock's name: ``link()`` is atomic on local filesystems and on NFS (where its
reply may be lost, so success is decided by the temporary file's link count),
which lets Slurm jobs on several hosts share one store. Where hard links are not
supported, ``O_CREAT | O_EXCL`` is used instead. While the config trains, a
daemon thread touches the lock every ``heartbeat_s`` seconds. A lock whose
mtime is older than ``stale_s`` (its owner crashed, was killed or lost its host),
or whose owner is a process of this host that no longer exists, is stale: it is
renamed aside and claimed anew; a live lock is never broken.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: someone else's process
        return True
    return True


class ConfigLock:
    def __init__(self, path, stale_s: float = 300.0, heartbeat_s: float | None = None):
        self.path = Path(path)
        self.stale_s = float(stale_s)
        self.heartbeat_s = float(heartbeat_s) if heartbeat_s else max(0.05, self.stale_s / 5)
        self.token = uuid.uuid4().hex
        self.info = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token}
        self.held = False
        self.lost = False
        self._stop = threading.Event()
        self._thread = None

    # --- claiming ----------------------------------------------------------------
    def _link(self) -> bool:
        """Try once to create the lock; True if it is ours."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.parent / f".tmp-lock-{self.token}"
        tmp.write_text(json.dumps({**self.info, "time": time.time()}))
        try:
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            except OSError as e:
                if tmp.stat().st_nlink == 2:  # NFS: the link was made, the reply lost
                    return True
                if e.errno in (1, 18, 38, 95):  # EPERM, EXDEV, ENOSYS, EOPNOTSUPP: no links
                    return self._create_excl()
                raise
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _create_excl(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({**self.info, "time": time.time()}))
        return True

    def owner(self) -> dict | None:
        """The current holder's record (with ``age_s`` since its last heartbeat),
        or None if the config is not locked."""
        try:
            age = time.time() - self.path.stat().st_mtime
            rec = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # half-written by a crashed O_EXCL writer
            rec, age = {}, time.time() - self.path.stat().st_mtime
        return {**(rec if isinstance(rec, dict) else {}), "age_s": age}

    def _stale(self, rec: dict) -> bool:
        if rec["age_s"] > self.stale_s:
            return True
        return rec.get("host") == self.info["host"] and isinstance(rec.get("pid"), int) \
            and rec["pid"] != os.getpid() and not _alive(rec["pid"])

    def _break(self, rec: dict) -> None:
        """Move a stale lock aside; if it turns out to have been renewed in between
        (another process took it over first), put it back."""
        aside = self.path.parent / f".tmp-stale-{self.token}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = {}
        if rec.get("token") and moved.get("token") != rec.get("token"):
            try:
                os.link(aside, self.path)  # not the one judged stale: restore it
            except OSError:
                pass
        aside.unlink(missing_ok=True)

    def acquire(self) -> bool:
        """Claim the config: True if this process now holds it, False if a live
        owner does (see ``owner()``)."""
        for _ in range(3):
            if self._link():
                self.held = True
                self._start_heartbeat()
                return True
            rec = self.owner()
            if rec is None:
                continue  # released meanwhile
            if not self._stale(rec):
                return False
            self._break(rec)
        return False

    # --- holding -------------------------------------------------------------------
    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            rec = self.owner()
            if rec is None or rec.get("token") != self.token:
                self.lost = True  # taken over (we were stopped longer than stale_s)
                return
            try:
                os.utime(self.path)
            except OSError:
                pass

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="bench-lock-heartbeat",
                                        daemon=True)
        self._thread.start()

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        rec = self.owner()
        if rec is not None and rec.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
