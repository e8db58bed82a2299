"""Entry point: ``python -m tessera.bench <suite> [--quick] [--json PATH]``.

Prints the table and writes the rows as JSON to PATH, by default ``bench-<suite>.json`` in the
current directory; the path written is printed last."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import suites
from .common import device_name, format_table, write_json


def available_suites():
    return sorted(m.name for m in pkgutil.iter_modules(suites.__path__) if not m.name.startswith("_"))


def main(argv=None) -> int:
    names = available_suites()
    ap = argparse.ArgumentParser(prog="python -m tessera.bench", description="Tessera benchmark suites")
    ap.add_argument("suite", choices=names + ["all"], help="which suite to run")
    ap.add_argument("--quick", action="store_true", help="fewer, smaller shapes")
    ap.add_argument("--json", default=None, help="write the rows to this JSON file (default: bench-<suite>.json)")
    args = ap.parse_args(argv)
    rows = []
    for name in names if args.suite == "all" else [args.suite]:
        mod = importlib.import_module(f"{suites.__name__}.{name}")
        print(f"== {name} on {device_name()}", flush=True)
        rows.extend(mod.run(args))
    print(format_table(rows))
    path = args.json or f"bench-{args.suite}.json"
    write_json(rows, path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
