"""Medians, ratios to websockets, the tables and the JSON file of a run."""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .scenarios import SCENARIOS

BASELINE = "websockets"


@dataclass
class Record:
    """One measurement, as stored in the JSON file."""

    round: int
    scenario: str
    server: str
    value: float
    problems: list[str]
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "scenario": self.scenario,
            "server": self.server,
            "value": None if math.isnan(self.value) else self.value,
            "ok": not self.problems,
            "problems": self.problems,
            **self.details,
        }


def jsonable(value: Any) -> Any:
    """``value`` with NaN (a failed measurement) as null, which JSON can hold."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def median(values: list[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def summarize(records: list[Record]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per scenario and server: median value, per-round ratios to websockets, their median."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    by_key = {(r.round, r.scenario, r.server): r for r in records}
    for scenario in dict.fromkeys(r.scenario for r in records):
        out[scenario] = {}
        for server in dict.fromkeys(r.server for r in records if r.scenario == scenario):
            mine = [r for r in records if r.scenario == scenario and r.server == server]
            ratios = []
            for r in mine:
                base = by_key.get((r.round, scenario, BASELINE))
                usable = base is not None and base.value and not math.isnan(base.value)
                if base is not None and usable and not math.isnan(r.value):
                    ratios.append(r.value / base.value)
            entry: dict[str, Any] = {
                "median": median([r.value for r in mine]),
                "values": [r.value for r in mine],
                "ratios": ratios,
                "median_ratio": median(ratios),
                "problems": sorted({p for r in mine for p in r.problems}),
            }
            refused: dict[str, int] = {}
            for r in mine:
                for key, count in r.details.get("refused", {}).items():
                    refused[key] = max(refused.get(key, 0), count)
            if refused:
                entry["refused"] = refused
            for key in ("p50_us", "p99_us", "server_cpu", "loadgen_cpu"):
                found = [float(r.details[key]) for r in mine if r.details.get(key) is not None]
                if found:
                    entry[key] = median(found)
            out[scenario][server] = entry
    return out


def human(value: float, unit: str) -> str:
    if math.isnan(value):
        return "failed"
    if unit == "KiB":
        return f"{value:.1f} KiB"
    if value >= 10_000:
        return f"{value / 1000:.1f}k{unit}"
    return f"{value:.0f}{unit}"


def ratio_text(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def detail_table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = [
        "| scenario | server | median | p50 / p99 (us) | ratio to websockets (median) "
        "| ratios per round | CPU server / loadgen | problems, refusals |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario, servers in summary.items():
        unit = SCENARIOS[scenario].unit
        for server, e in servers.items():
            lat = f"{e['p50_us']:.0f} / {e['p99_us']:.0f}" if "p50_us" in e else ""
            per_round = " ".join(f"{r:.2f}" for r in e["ratios"])
            cpu = ""
            if "server_cpu" in e and "loadgen_cpu" in e:
                cpu = f"{e['server_cpu']:.2f} / {e['loadgen_cpu']:.2f}"
            notes = [*e["problems"]]
            if "refused" in e:
                notes.append("refused: " + ", ".join(f"{k}={v}" for k, v in e["refused"].items()))
            problems = "; ".join(notes)
            lines.append(
                f"| {scenario} | {server} | {human(e['median'], unit)} | {lat} "
                f"| {ratio_text(e['median_ratio'])} | {per_round} | {cpu} | {problems} |"
            )
    return "\n".join(lines)


def ratio_table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The issue's shape: servers as rows, ratio (absolute value) per scenario."""
    scenarios = list(summary)
    servers = list(dict.fromkeys(s for sc in summary.values() for s in sc))
    head = "| server | " + " | ".join(SCENARIOS[s].label for s in scenarios) + " |"
    lines = [head, "|---" * (len(scenarios) + 1) + "|"]
    for server in servers:
        cells = []
        for scenario in scenarios:
            e = summary[scenario].get(server)
            if e is None:
                cells.append("")
                continue
            absolute = human(e["median"], SCENARIOS[scenario].unit)
            cells.append(f"{ratio_text(e['median_ratio'])} ({absolute})")
        lines.append(f"| {server} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _command(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def machine(wshub_src: Path) -> dict[str, Any]:
    """What the figures depend on: CPU, kernel, Python, library versions, commit."""
    lscpu = _command(["lscpu"])
    model = re.search(r"^Model name:\s*(.+)$", lscpu, re.MULTILINE)
    from websockets.version import version as websockets_version

    commit = _command(["git", "-C", str(wshub_src), "rev-parse", "--short", "HEAD"])
    dirty = _command(["git", "-C", str(wshub_src), "status", "--porcelain", "--untracked-files=no"])
    return {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "websockets": websockets_version,
        "wshub_commit": commit + ("-dirty" if dirty else ""),
        "gcc": _command(["gcc", "-dumpfullversion"]),
    }
