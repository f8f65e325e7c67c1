"""`claude-loadtest SCENARIO [locust options]`: a run of the packaged locustfile from any folder.

SCENARIO is a file, or the name of a scenario the package ships (`demo`, `latency-levers`,
...: `claude-loadtest --list`). It is taken out of the command line before the rest goes to
Locust, which reads positional arguments as user classes. `claude-loadtest --help` lists the
harness's options with Locust's (`locust -f ... --help` prints before the locustfile loads).
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["main"]

PACKAGE = Path(__file__).resolve().parent
LOCUSTFILE = PACKAGE / "locustfiles" / "locustfile.py"
SCENARIOS = PACKAGE / "scenarios"
USAGE = "usage: claude-loadtest SCENARIO [locust options]   (claude-loadtest --list: the packaged scenarios)"


def packaged() -> list[str]:
    """The names of the scenarios the package ships."""
    return sorted(path.stem for path in SCENARIOS.glob("*.yaml"))


def scenario_path(given: str) -> Path | None:
    """A scenario file: the path given, else the packaged scenario of that name (None: neither)."""
    path = Path(given)
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    shipped = SCENARIOS / f"{name}.yaml"
    return shipped if shipped.is_file() else None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        from harness.options import main as list_options

        list_options()
        return 0
    if args[0] == "--list":
        print("\n".join(packaged()))
        return 0
    if args[0].startswith("-"):
        print(f"claude-loadtest: the scenario comes first\n{USAGE}", file=sys.stderr)
        return 2
    path = scenario_path(args[0])
    if path is None:
        print(f"claude-loadtest: {args[0]}: no such file, and no packaged scenario of that name ({', '.join(packaged())})", file=sys.stderr)
        return 2
    sys.argv = ["claude-loadtest", "-f", str(LOCUSTFILE), "--scenario", str(path), *args[1:]]
    from locust.main import main as locust_main

    return locust_main()  # (it exits with the run's code)


if __name__ == "__main__":
    sys.exit(main())
