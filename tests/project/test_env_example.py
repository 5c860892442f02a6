"""settings.py, .env.example and the configuration table of docs/configuration.md name the same variables.

The variables are read off the source with ``ast`` (every ``env_*("NAME", default)``
call in settings.py and app_settings.py, and ``RUN_VARIABLES`` in scripts/run.py) and off the bus's
table of settings (eventbus/conf.py, which settings.py reads), so adding a
setting without documenting it, or documenting one that does not exist, fails here.
"""

from __future__ import annotations

import ast
import contextlib
import re
from pathlib import Path

import pytest

from eventbus import conf as eventbus_conf

REPO = Path(__file__).resolve().parents[2]
ENV_READERS = {"env_str", "env_bool", "env_int", "env_float", "env_list"}
SETTINGS_MODULES = (REPO / "project" / "settings.py", REPO / "project" / "app_settings.py")
"""The modules that read settings from the environment: settings.py, and the apps' own that it imports."""
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def setting_calls() -> dict[str, ast.expr | None]:
    """Each variable the settings read, with the expression of its default; the bus's through its table."""
    found: dict[str, ast.expr | None] = {
        setting.env: ast.parse(repr(setting.default), mode="eval").body
        for setting in eventbus_conf.SETTINGS
        if setting.env
    }
    nodes = (node for module in SETTINGS_MODULES for node in ast.walk(ast.parse(module.read_text())))
    for node in nodes:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ENV_READERS:
            name = node.args[0]
            assert isinstance(name, ast.Constant), f"line {node.lineno}: the variable name must be a literal"
            found[str(name.value)] = node.args[1] if len(node.args) > 1 else None
    return found


def run_variables() -> set[str]:
    """The keys of RUN_VARIABLES in scripts/run.py: variables only the run command reads."""
    tree = ast.parse((REPO / "scripts" / "run.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "RUN_VARIABLES":
            assert isinstance(node.value, ast.Dict)
            return {str(ast.literal_eval(key)) for key in node.value.keys if key is not None}
    raise AssertionError("scripts/run.py defines no RUN_VARIABLES")


def env_example() -> dict[str, str]:
    """``NAME=value`` lines of .env.example, commented out (``# NAME=value``) or not."""
    pattern = re.compile(r"^#?\s?([A-Z][A-Z0-9_]*)=(.*)$")
    values: dict[str, str] = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        match = pattern.match(line)
        if match:
            assert match.group(1) not in values, f"{match.group(1)} is listed twice in .env.example"
            values[match.group(1)] = match.group(2)
    return values


def configuration_table() -> set[str]:
    """Names in the first column of the table in docs/configuration.md."""
    page = (REPO / "docs" / "configuration.md").read_text()
    return set(re.findall(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|", page, flags=re.MULTILINE))


def literal(node: ast.expr) -> object:
    """The value of a default made of literals and arithmetic (``3 * 24 * 3600``); raises otherwise."""
    allowed = (ast.Constant, ast.List, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop, ast.Load)
    if not all(isinstance(n, allowed) for n in ast.walk(node)):
        raise ValueError("not a literal")
    return eval(compile(ast.Expression(node), "<default>", "eval"), {"__builtins__": {}})


def all_variables() -> set[str]:
    return set(setting_calls()) | run_variables()


def test_settings_read_variables() -> None:
    # given the parser works at all (an empty set would make every test below pass)
    assert {"DJANGO_DEBUG", "REDIS_URL", "DATABASE_URL", "WEB_PORT"} <= set(setting_calls())
    assert {"CELERY_VISIBILITY_TIMEOUT", "EVENTBUS_TIME_LIMIT"} <= set(setting_calls())
    # and settings.py does read the bus's table from the environment (else listing it here would be a lie)
    assert "env_setting(s.env" in (REPO / "project" / "settings.py").read_text()
    assert "FLOWER_BASIC_AUTH" in run_variables()


def test_every_variable_is_in_env_example() -> None:
    missing = all_variables() - set(env_example())
    assert not missing, f"add these to .env.example (with default and comment): {sorted(missing)}"


def test_every_variable_is_in_the_configuration_table() -> None:
    missing = all_variables() - configuration_table()
    assert not missing, f"add these to the table of docs/configuration.md: {sorted(missing)}"


def test_env_example_and_configuration_table_list_nothing_unknown() -> None:
    known = all_variables()
    assert not set(env_example()) - known, "variables in .env.example that nothing reads"
    assert not configuration_table() - known, "variables in the table of docs/configuration.md that nothing reads"


def test_every_variable_has_a_comment_above_it() -> None:
    lines = (REPO / ".env.example").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^#?\s?[A-Z][A-Z0-9_]*=", line):
            above = lines[number - 1]
            assert above.startswith("# ") and not re.match(r"^#\s?[A-Z][A-Z0-9_]*=", above), line


def literal_defaults() -> dict[str, object]:
    """The settings whose default is a literal; computed ones (``f"...{VAR_DIR}"``) are described in words."""
    values: dict[str, object] = {}
    for name, node in setting_calls().items():
        with contextlib.suppress(ValueError):
            values[name] = literal(node) if node is not None else None
    return values


@pytest.mark.parametrize(("name", "value"), sorted(literal_defaults().items()))
def test_literal_defaults_match_settings(name: str, value: object) -> None:
    written = env_example().get(name)
    assert written is not None, f"{name} is missing from .env.example"
    if isinstance(value, bool):
        assert written.lower() in (_TRUE if value else _FALSE), f"{name}: .env.example says {written!r}"
    elif isinstance(value, int | float):
        assert float(written) == value, f"{name}: .env.example says {written!r}, settings {value!r}"
    elif isinstance(value, list):
        assert written == ",".join(value), f"{name}: .env.example says {written!r}, settings {value!r}"
    else:
        assert written == value, f"{name}: .env.example says {written!r}, settings {value!r}"


def test_env_example_sets_nothing_when_copied() -> None:
    # A copy of .env.example as .env changes no default: every assignment is commented out.
    # (An active EMAIL_HOST, for one, would stop `make run` from starting its SMTP sink.)
    active = [line for line in (REPO / ".env.example").read_text().splitlines() if re.match(r"^[A-Z]", line)]
    assert active == []
