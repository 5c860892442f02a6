#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys
from pathlib import Path


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    # A second terminal finds the system `make run` started: its Redis, ports and sink (project/runfile.py).
    from project import runfile

    var_dir = runfile.default_var_dir(Path(__file__).resolve().parent, os.environ)
    runfile.apply(os.environ, var_dir, lambda line: print(line, file=sys.stderr))
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
