"""Device descriptions: profile one artifact on a fleet of boards in one command.

targets.yaml:
    devices:
      - {name: orin-nano, target: "ssh://ubuntu@10.0.0.20?python=/usr/bin/python3", threads: 6}
      - {name: pixel-8, target: "adb://39021FDH2000ZQ?python=/data/local/tmp/py/bin/python3", threads: 4}
      - {name: this-box, target: local, threads: 2}

A fleet file is someone else's file like a recipe: every target is parsed and validated
(target.py) when it is loaded; programs and keys on this machine come from the environment.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from edgevit.errors import EdgevitError, RecipeError, RunnerError
from edgevit.profiling.target import parse_target
from edgevit.profiling.transport import transport_for
from edgevit.schema import StrictModel, first_error
from edgevit.yamlfile import load_yaml


class Device(StrictModel):
    name: str = Field(min_length=1, max_length=64)
    target: str = Field(description="local, ssh://user@host[:port]?..., or adb://SERIAL?...")
    threads: int = Field(2, ge=1, le=1024)
    batch: int = Field(1, ge=1, le=4096)
    runtime: str | None = Field(None, description="documentation only: what the board runs")


class Fleet(StrictModel):
    devices: list[Device] = Field(min_length=1)


def load_fleet(path: Path) -> Fleet:
    try:
        fleet = Fleet.model_validate(load_yaml(path))
    except ValidationError as exc:
        raise RecipeError(f"{path}: {first_error(exc, Fleet)}", "see `edgevit profile --help` for the targets file") from None
    names = [d.name for d in fleet.devices]
    if len(set(names)) != len(names):
        raise RecipeError(f"{path}: device names must be unique", "rename the duplicates")
    for i, d in enumerate(fleet.devices):
        parse_target(d.target, f"{path}: devices[{i}].target")  # fail on a malformed target before any device is touched
    return fleet


def profile_fleet(artifact: Path, fleet: Fleet, runs: int, warmup: int) -> list[dict[str, Any]]:
    """One result per device, side by side; a device that fails gets its error, not a crash."""
    results = []
    for d in fleet.devices:
        try:
            data = transport_for(d.target).run(artifact, runs=runs, warmup=warmup, threads=d.threads, batch=d.batch).data
            results.append({"name": d.name, **data})  # data["device"] is the hardware the runner saw
        except (RunnerError, EdgevitError) as exc:
            results.append({"name": d.name, "where_run": "not run", "error": exc.message})
    return results


def fleet_table(results: list[dict[str, Any]]) -> str:
    lines = ["| name | where run | runtime | threads | batch | p50 ms | p90 ms | CPU ms/inference |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | not run: {r['error']} | - | - | - | - | - | - |")
        else:
            lines.append(f"| {r['name']} | {r['where_run']} on {r['device']} | {r['runtime']} {r['runtime_version']} | {r['threads']} | {r['batch']} "
                         f"| {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['cpu_time_ms']:.2f} |")
    return "\n".join(lines)
