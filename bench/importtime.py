"""What ``import cleanup_middleware`` costs: ``python -m bench.importtime [--runs N]``.

Up to 0.1.0 the package imported its CLI and config machinery (argparse, difflib, inspect,
tomllib) with itself; now they load on first use. This runs, alternately in fresh interpreters,
``import cleanup_middleware`` and the same followed by ``import cleanup_middleware.cli`` (what
0.1.0 loaded), and prints the median time of each and their ratio, as ``python -X importtime``
reports it: the package's modules and everything they import, not the interpreter's start-up,
from bytecode (a first run writes it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

VARIANTS = {
    "import cleanup_middleware": "import cleanup_middleware",
    "the same, then its CLI and config (what 0.1.0 imported)": (
        "import cleanup_middleware; import cleanup_middleware.cli"
    ),
}


def import_ms(code: str) -> float:
    """Milliseconds that ``code`` spends importing cleanup_middleware's modules."""
    # Bytecode written and read, as an installed package has it: with PYTHONDONTWRITEBYTECODE
    # every run would compile the package's sources again.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CLEANUP_MIDDLEWARE_CONFIG", "PYTHONDONTWRITEBYTECODE")
    }
    stderr = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    # "import time: self [us] | cumulative | name", nested imports indented under the name:
    # the top-level lines of the package's modules hold everything imported on their behalf.
    total_us = 0
    for line in stderr.splitlines():
        _, _, fields = line.partition("import time:")
        _, cumulative, name = fields.split("|") if fields.count("|") == 2 else ("", "", "")
        if name.startswith(" cleanup_middleware"):
            total_us += int(cumulative)
    return total_us / 1000


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.importtime", description=__doc__)
    parser.add_argument("--runs", type=int, default=21, help="interpreters per variant")
    runs = parser.parse_args().runs
    for code in VARIANTS.values():
        import_ms(code)  # writes the bytecode, if it is missing
    times: dict[str, list[float]] = {label: [] for label in VARIANTS}
    for _ in range(runs):
        for label, code in VARIANTS.items():
            times[label].append(import_ms(code))
    medians = {label: statistics.median(values) for label, values in times.items()}
    print(f"Python {sys.version.split()[0]}, median of {runs} runs each, alternating")
    for label, median in medians.items():
        print(f"{median:8.1f} ms  {label}  (range {min(times[label]):.1f}-{max(times[label]):.1f})")
    lazy, eager = medians.values()
    print(f"ratio now / 0.1.0's import: {lazy / eager:.2f}")


if __name__ == "__main__":
    main()
