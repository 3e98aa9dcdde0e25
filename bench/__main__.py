"""The whole benchmark suite: ``python -m bench [--quick]`` (``make bench``, ``make bench-quick``).

Runs the five measurements one after the other, prints each one's detail table as it
finishes, then one combined table of every target with PASS or MISS, and writes, next to this
file:

* ``results.json``: every figure, the raw rounds, and the machine;
* ``results.md``: the combined table, the detail tables and the machine, in Markdown, then
  the ``## Earlier runs`` section the file ended with, if any (written by hand);
* ``chart.png``: one panel per measurement.

Benchmarks, not tests: the exit status is 0 whether targets pass or miss (it is non-zero only
if a measurement could not be made). The quick run uses smaller files and fewer rounds, and
says so in its output.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from . import deferred, inprocess, memory, sendfile, throughput
from .common import (
    OtherLoad,
    Section,
    machine,
    markdown_table,
    section_text,
    targets_table,
)

HERE = Path(__file__).resolve().parent
MODULES = [sendfile, inprocess, memory, throughput, deferred]


def write_chart(sections: list[Section], title: str, path: Path) -> None:
    """One panel per measurement, drawn by the module's ``plot``."""
    fig, axes = plt.subplots(2, 3, figsize=(19, 9))
    for module, section, ax in zip(MODULES, sections, axes.flat):  # noqa: B905 - py39
        module.plot(ax, section.data)
    for ax in axes.flat[len(MODULES) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown_report(sections: list[Section], info: dict[str, str], header: str) -> str:
    """results.md: the combined table, the machine, then every detail table."""
    parts = [
        "# Benchmark results",
        "",
        header,
        "",
        targets_table(sections),
        "",
        "Machine:",
        "",
        markdown_table(["machine", "value"], [[k, v] for k, v in info.items()]),
        "",
        "![benchmark chart](chart.png)",
    ]
    for section in sections:
        parts += ["", section_text(section)]
    return "\n".join(parts) + "\n"


#: The heading of results.md's history of runs, written by hand and kept by every run.
EARLIER_RUNS = "## Earlier runs"


def earlier_runs(path: Path) -> str:
    """The history section of the results.md at ``path`` (from :data:`EARLIER_RUNS` on), if any."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    start = text.find(f"\n{EARLIER_RUNS}\n")
    return "" if start < 0 else text[start:]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="about a minute: 256 MiB files, fewer rounds"
    )
    quick = parser.parse_args().quick
    info = machine()
    started = time.monotonic()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick run (256 MiB files, fewer rounds)" if quick else "full run"
    header = (
        f"{mode}, {stamp}, {info['nproc']} x {info['cpu']}, Python {info['python']}, "
        f"gunicorn {info['gunicorn']}, Flask {info['flask']}, Werkzeug {info['werkzeug']}"
    )
    print(f"bench: {header}", flush=True)
    sections = []
    noise: dict[str, float] = {}
    for module in MODULES:
        load = OtherLoad()
        load.start()
        section = module.run(quick)
        noise[section.key] = load.stop()
        sections.append(section)
        print()
        print(section_text(section))
        print(flush=True)
    elapsed = time.monotonic() - started
    noise_text = (
        "CPU used by other processes while each bench ran (share of all cores; 0% on a quiet "
        "machine, and the more, the noisier the figures): "
        + ", ".join(f"{key} {share:.0%}" for key, share in noise.items())
    )
    print(f"## Targets ({mode}, {elapsed:.0f} s)")
    print()
    print(targets_table(sections))
    print()
    print(noise_text)
    results: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "date": stamp,
        "seconds": round(elapsed, 1),
        "machine": info,
        "other_load": noise,
        "targets": {
            s.key: [{**t.__dict__, "result": "PASS" if t.passed else "MISS"} for t in s.targets]
            for s in sections
        },
        "sections": {s.key: s.data for s in sections},
    }
    (HERE / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    report = markdown_report(sections, info, f"{header}\n\n{noise_text}")
    (HERE / "results.md").write_text(report + earlier_runs(HERE / "results.md"))
    write_chart(sections, header, HERE / "chart.png")
    print()
    print(f"wrote {', '.join(str(HERE / n) for n in ('results.json', 'results.md', 'chart.png'))}")


if __name__ == "__main__":
    main()
