"""The study in Optuna storage: opening it, its identity, resuming it, reading it back.

Storage: a SQLite file in --out by default (nothing to start), or any SQLAlchemy URL that
several workers share (postgresql://, mysql://, sqlite:///shared/path.db). The study's
name is the recipe name + a hash of everything that makes two studies comparable (recipe
bytes, model, target, budget, max drop, validation split, export, sampler), so two studies
never mix: `--out/study.json` records the name, and an --out made for another study is
refused.

Each trial records its owner (host, pid, process start time). A trial left RUNNING by a
worker that died (kill -9, power cut) is failed with that reason on the next start on the
same host and its values are queued again, so no finished trial is lost or repeated and
the interrupted configuration is still measured once.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from edgevit.errors import EdgevitError

STUDY_FILE = "study.json"
_CREATION_RACE = ("UNIQUE constraint", "already exists", "database is locked", "Duplicate entry")
FINISHED = ("COMPLETE", "PRUNED", "FAIL")


def mask_url(url: str) -> str:
    """A storage URL with its password hidden (it goes into messages and study.json)."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def open_storage(url: str) -> Any:
    """RDB storage, connected now: an unreachable database fails here, before any trial."""
    import optuna

    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        # several worker processes write one file: wait for the file lock instead of failing
        kwargs["connect_args"] = {"timeout": 120}
    error: Exception | None = None
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_compatibility_check=False)
        except Exception as exc:  # sqlalchemy / driver errors: any of them means "cannot use this storage"
            error = exc
            # workers starting together race to create the schema: the loser retries and finds it made
            if not any(s in str(exc) for s in _CREATION_RACE):
                break
            time.sleep(0.5 + attempt)
    reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    raise EdgevitError(f"--storage {mask_url(url)}: cannot open the study storage: {reason}",
                       "give a reachable SQLAlchemy URL (sqlite:///path/study.db, postgresql://user:pw@host/db) "
                       "with its driver installed, or leave --storage out for a SQLite file in --out")


def study_identity(fields: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{fields['recipe_name']}-{digest}"


def claim_out(out: Path, name: str, fields: dict[str, Any], resume: bool, shared_storage: bool) -> None:
    """--out belongs to one study: refuse another one's folder, and a finished or running
    study's folder without --resume (a shared --storage joins without it)."""
    record = out / STUDY_FILE
    if record.is_file():
        try:
            existing = json.loads(record.read_text())["study_name"]
        except (ValueError, KeyError, TypeError):
            raise EdgevitError(f"--out {out}: {STUDY_FILE} is unreadable", "choose another --out") from None
        if existing != name:
            raise EdgevitError(f"--out {out}: holds study {existing}, not this one ({name}: the recipe, model, target, "
                               "budget or split differ)", "choose another --out; two studies never share one")
        if not resume and not shared_storage:
            raise EdgevitError(f"--out {out}: already holds this study", "pass --resume to continue it, or choose another --out")
        return
    if resume and not shared_storage:
        raise EdgevitError(f"--out {out}: no study to resume ({STUDY_FILE} not found)", "drop --resume to start one")
    out.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps({"study_name": name, **fields}, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, record)


def owner() -> dict[str, Any]:
    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def _owner_alive(who: dict[str, Any] | None) -> bool | None:
    """True / False for an owner on this host; None when it is another host's (unknown)."""
    import psutil

    if not who or who.get("host") != socket.gethostname():
        return None
    try:
        return abs(psutil.Process(who["pid"]).create_time() - who["started"]) < 1e-3
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError):
        return False


def reap_interrupted(study: Any, single_host: bool) -> list[int]:
    """Fail the RUNNING trials whose worker on this host is dead (with the reason) and queue
    their values again; returns their numbers. A trial with no owner yet (killed between
    ask and the owner record) counts as dead when the storage is this --out's own file."""
    from optuna.trial import TrialState

    reaped = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        alive = _owner_alive(t.user_attrs.get("owner"))
        if alive is None and not (single_host and "owner" not in t.user_attrs):
            continue
        if alive:
            continue
        who = t.user_attrs.get("owner") or {}
        fail_and_requeue(study, t, f"interrupted: worker {who.get('host', '?')}:{who.get('pid', '?')} died")
        reaped.append(t.number)
    return reaped


def fail_and_requeue(study: Any, trial: Any, reason: str) -> None:
    """An unfinished trial (its worker died or was interrupted): FAIL with the reason, not
    counted as finished, and its values queued so they are measured once after all."""
    from optuna.trial import TrialState

    storage = study._storage
    storage.set_trial_user_attr(trial._trial_id, "reason", reason)
    storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    if trial.params:
        study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number}, skip_if_exists=False)


def counts(study: Any) -> dict[str, int]:
    """Finished trials (interrupted ones excluded: their values run again), running, waiting."""
    out = {"finished": 0, "running": 0, "waiting": 0, "complete": 0, "pruned": 0, "fail": 0}
    for t in study.get_trials(deepcopy=False):
        state = t.state.name
        if state in FINISHED and not t.user_attrs.get("interrupted"):
            out["finished"] += 1
            out[state.lower()] += 1
        elif state == "RUNNING":
            out["running"] += 1
        elif state == "WAITING":
            out["waiting"] += 1
    return out


def rows(study: Any) -> list[dict[str, Any]]:
    """Every trial as plain data: number, state, values, reason, record, recipe."""
    out = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        out.append({"number": t.number, "state": t.state.name.lower(), "values": a.get("values", t.params),
                    "reason": a.get("reason"), "record": a.get("record") or {}, "recipe": a.get("recipe"),
                    "interrupted": bool(a.get("interrupted")), "same_as": a.get("same_as"),
                    "requeued_from": a.get("requeued_from"), "meets_budget": a.get("meets_budget"),
                    "seconds": a.get("seconds")})
    return out
