"""What the figures were measured on: cores, CPU, memory and the versions that matter."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from importlib import metadata
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError):
        pass
    return "unknown"


def describe(redis_server_version: str, postgres_version: str = "") -> dict[str, str]:
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": _cpu_model(),
        "memory": _memory(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "django": metadata.version("Django"),
        "celery": metadata.version("celery"),
        "kombu": metadata.version("kombu"),
        "redis_py": metadata.version("redis"),
        "redis_server": redis_server_version,
        "sqlite": sqlite3.sqlite_version,
        "postgres": postgres_version,
    }


def source(repo: Path) -> dict[str, object]:
    """The commit measured, and the files that differed from it (other than the benchmark's own)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=all").splitlines()]
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "changed_files": []}
    own = ("bench/", "docs/benchmarks.md", "docs/benchmarks-levers.md")
    return {"commit": commit, "changed_files": [path for path in changed if not path.startswith(own)]}
