"""Print the README's "Every config field" table from config.Config (field, flag, default, help line).

    python tools/config_table.py > /tmp/table.md
"""
import os
import sys
from dataclasses import fields

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config import Config  # noqa: E402


def table() -> str:
    rows = ["| field / flag | default | meaning |", "|---|---|---|"]
    for f in fields(Config):
        rows.append(f"| `{f.name}` / `--{f.name.replace('_', '-')}` | `{f.default!r}` | {f.metadata['help']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
