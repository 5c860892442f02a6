"""The patterns lab: ``manage.py demo <name>`` shows one pattern of the event bus happening, live.

Each demo runs in a process of its own against a Redis, an SMTP sink, worker
subprocesses and a SQLite database that it starts itself (lab/launcher.py,
lab/stage.py), so it never touches the data of ``make run``'s system; the
guide is docs/patterns.md.
"""
