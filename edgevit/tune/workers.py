"""The ask -> run -> tell loop, in this process or with trials on Ray.

A worker asks the study for the next values (the sampler sees every finished trial in the
storage, whichever worker ran it), writes the trial's recipe, runs it (``trial.run_trial``)
and tells the study what was measured. Storage workers on several hosts run this loop each
against one --storage; with Ray, this process is the only one that asks and tells, and
trials run as Ray tasks (K at a time).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from edgevit import progress
from edgevit.tune import budget as budgets
from edgevit.tune import study as studies
from edgevit.tune.space import SearchRange, apply_values, short_name
from edgevit.tune.trial import Gates, TrialContext, TrialSpec, latency_factor, run_trial


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # the strict recipe loader refuses aliases
        return True


def recipe_yaml(raw: dict[str, Any], header: str) -> str:
    return "".join(f"# {line}\n" for line in header.splitlines()) + yaml.dump(raw, Dumper=_NoAliases, sort_keys=False)


@dataclass
class Session:
    """One study being run by this process."""

    study: Any
    name: str
    out: Path
    raw: dict[str, Any]  # the recipe with the study's overrides (model, export, target), search removed
    space: dict[str, SearchRange]
    ctx: TrialContext
    budget: budgets.Budget
    max_drop: float
    recovery_pt: float
    trials: int
    stop_on_budget: bool = False
    deadline: float | None = None  # time.monotonic() after which no trial starts
    started: float = field(default_factory=time.monotonic)
    ran_here: int = 0

    # -- what the study knows ------------------------------------------------------------
    @property
    def baseline(self) -> dict[str, Any]:
        return self.study.user_attrs["baseline"]

    @property
    def limits(self) -> dict[str, float]:
        return self.budget.resolve(self.baseline)

    def objectives(self, record: dict[str, Any]) -> list[float]:
        return [record["top1"], *(record[m] for m in self.budget.metrics)]

    def gates(self, rows: list[dict[str, Any]]) -> Gates:
        factors: dict[str, float] = {}
        for r in rows:
            if r["state"] == "complete" and r["record"].get("latency_ms"):
                key = r["record"]["precisions"]
                factors[key] = min(factors.get(key, math.inf),
                                   latency_factor(r["record"], self.baseline, "latency_ms" in self.budget.ratios))
        return Gates(baseline=self.baseline, limits=self.limits, max_drop=self.max_drop, recovery_pt=self.recovery_pt,
                     latency_factors=factors)

    def best(self, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Best trial meeting the budget: lowest first budget metric, then highest top-1."""
        ok = [r for r in rows if r["state"] == "complete" and r["meets_budget"]]
        metric = self.budget.metrics[0]
        return min(ok, key=lambda r: (r["record"][metric], -r["record"]["top1"])) if ok else None

    def space_size(self) -> float:
        """Distinct value sets the space holds (inf with a continuous range)."""
        size = 1
        for key, rng in self.space.items():
            if rng.choices is None and rng.step is None and not rng.is_int:
                return math.inf
            size *= len(rng.grid(key))
        return size

    def done(self) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            return True
        c = studies.counts(self.study)
        if c["finished"] + c["running"] >= self.trials:
            return True
        rows = studies.rows(self.study)
        distinct = {repr(sorted(r["values"].items())) for r in rows if r["state"] in ("complete", "pruned", "fail")
                    and not r["interrupted"]}
        if len(distinct) >= self.space_size():  # every point of a discrete space measured: more trials repeat one
            return True
        return self.stop_on_budget and self.best(rows) is not None

    # -- one trial -------------------------------------------------------------------------
    def ask(self) -> tuple[Any, TrialSpec]:
        trial = self.study.ask({key: rng.distribution() for key, rng in self.space.items()})
        trial.set_user_attr("owner", studies.owner())
        values = {key: trial.params[key] for key in self.space}
        raw = apply_values(self.raw, values)
        raw["name"] = f"{self.raw['name']}-t{trial.number:04d}"
        text = recipe_yaml(raw, f"edgevit tune: study {self.name}, trial {trial.number}\nvalues: {self.label(values)}")
        trial.set_user_attr("recipe", text)
        trial.set_user_attr("values", values)
        rows = studies.rows(self.study)
        spec = TrialSpec(number=trial.number, values=values, recipe_text=text,
                         folder=str(self.out / "trials" / f"{trial.number:04d}"), gates=self.gates(rows))
        return trial, spec

    def duplicate_of(self, spec: TrialSpec) -> dict[str, Any] | None:
        """A finished trial with the same values: its measurement is reused, never repeated."""
        for r in studies.rows(self.study):
            if r["number"] != spec.number and r["values"] == spec.values and r["state"] in ("complete", "pruned", "fail") \
                    and not r["interrupted"]:
                return r
        return None

    def tell(self, trial: Any, outcome: dict[str, Any]) -> None:
        from optuna.trial import TrialState

        record, state = outcome["record"], outcome["state"]
        trial.set_user_attr("record", record)
        trial.set_user_attr("seconds", round(outcome.get("seconds") or 0.0, 1))
        if outcome.get("same_as") is not None:
            trial.set_user_attr("same_as", outcome["same_as"])
        if outcome["reason"]:
            trial.set_user_attr("reason", outcome["reason"])
        names = ["top1_drop_over_max", *(f"{m}_over_budget" for m in self.budget.metrics)]
        if state == "complete":
            c = budgets.constraints(record, self.limits, self.baseline["top1"], self.max_drop, self.budget.ratios)
            trial.set_user_attr("meets_budget", all(v <= 0 for v in c))
            for name, value in zip(names, c):  # the samplers learn where the feasible region is
                trial.set_constraint(name, value)
            self.study.tell(trial, self.objectives(record))
        elif state == "pruned":
            for name in names:  # samplers read pruned trials' constraints too: a hopeless trial is infeasible
                trial.set_constraint(name, 1.0)
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)
        self.ran_here += 1
        self.show(outcome)

    def run_one(self, trial: Any, spec: TrialSpec) -> dict[str, Any]:
        same = self.duplicate_of(spec)
        if same is not None:
            return {"number": spec.number, "state": same["state"], "reason": same["reason"], "record": same["record"],
                    "same_as": same["number"], "seconds": 0.0}
        return run_trial(spec, self.ctx)

    # -- display ---------------------------------------------------------------------------
    def show(self, outcome: dict[str, Any]) -> None:
        rows = studies.rows(self.study)
        c = studies.counts(self.study)
        head = f"trial {c['finished']}/{self.trials} (#{outcome['number']}) [{self.label(outcome['values'])}]"
        if outcome["state"] == "complete":
            r = outcome["record"]
            met = budgets.meets(r, self.limits, self.baseline["top1"], self.max_drop, self.budget.ratios)
            body = f"{self.describe(r)}: {'meets the budget' if met else 'misses the budget'}"
        else:
            body = f"{outcome['state']}: {outcome['reason']}"
        if outcome.get("same_as") is not None:
            body += f" (same values as #{outcome['same_as']}: reused)"
        best = self.best(rows)
        tail = f"best so far #{best['number']}: {self.describe(best['record'])}" if best else "no trial meets the budget yet"
        progress.say("tune:", "bold cyan", f"{head} -> {body} | {tail}", soft_wrap=True)

    def label(self, values: dict[str, Any]) -> str:
        return ", ".join(f"{short_name(k, self.raw['passes'])}={_fmt(v)}" for k, v in values.items())

    def describe(self, r: dict[str, Any]) -> str:
        drop = budgets.drop_points(r["top1"], self.baseline["top1"])
        ratio = r.get("latency_ms_vs_fp32")
        side_by_side = f" ({ratio:.2f}x fp32 side by side)" if ratio is not None else ""
        return f"top-1 {r['top1']:.4f} ({0.0 - drop:+.2f} pt), {r['latency_ms']:.2f} ms{side_by_side}, {r['size_mb']:.2f} MB"


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def run_here(session: Session) -> None:
    """Trials one after another in this process (a storage worker)."""
    while not session.done():
        trial, spec = session.ask()
        try:
            outcome = session.run_one(trial, spec)
        except BaseException:  # Ctrl-C / SystemExit mid-trial: not finished, measured again later
            studies.fail_and_requeue(session.study, trial, "interrupted in this worker")
            raise
        session.tell(trial, {**outcome, "values": spec.values})


def run_on_ray(session: Session, workers: int) -> None:
    """Up to ``workers`` trials at once as Ray tasks (1 CPU each); this process asks and tells."""
    import ray

    remote = ray.remote(num_cpus=1, max_retries=0)(run_trial)
    pending: dict[Any, tuple[Any, TrialSpec]] = {}
    try:
        while True:
            while len(pending) < workers and not session.done():
                trial, spec = session.ask()
                same = session.duplicate_of(spec)
                if same is not None:
                    session.tell(trial, {**session.run_one(trial, spec), "values": spec.values})
                    continue
                pending[remote.remote(spec, replace(session.ctx))] = (trial, spec)
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            trial, spec = pending.pop(ready[0])
            try:
                outcome = ray.get(ready[0])
            except ray.exceptions.RayError as exc:  # the task's worker died (OOM, node lost): recorded, the study goes on
                outcome = {"number": spec.number, "state": "fail", "record": {},
                           "reason": f"ray: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            session.tell(trial, {**outcome, "values": spec.values})
    except BaseException:
        for ref, (trial, _) in pending.items():
            ray.cancel(ref, force=True)
            studies.fail_and_requeue(session.study, trial, "interrupted: the tune driver stopped")
        raise
