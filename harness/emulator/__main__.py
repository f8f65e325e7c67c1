"""`python -m harness.emulator`: run the stand-in Claude API server."""

from harness.emulator.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
