"""Reading another process's thread state from /proc (shared by tests and payloads)."""
import time


def main_asleep(pid: int, settle: float = 0.02, limit: float = 10.0) -> bool:
    """True once the main thread of `pid` has been asleep ('S') in one and the
    same system call (/proc/<pid>/task/<pid>/syscall, when readable) for
    `settle` seconds; False after `limit` seconds.  The settle time tells a
    real blocking wait from a moment spent waiting for the GIL."""
    task = f"/proc/{pid}/task/{pid}/"
    deadline = time.monotonic() + limit
    last = None
    since = 0.0
    while time.monotonic() < deadline:
        try:
            with open(task + "stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            return False
        try:
            with open(task + "syscall", "rb") as f:
                call = f.read().strip()
        except OSError:
            call = b"?"
        now = time.monotonic()
        key = (state, call)
        if state == b"S" and not call.startswith(b"running"):
            if key != last:
                last, since = key, now
            elif now - since >= settle:
                return True
        else:
            last = None
        time.sleep(0.001)
    return False
