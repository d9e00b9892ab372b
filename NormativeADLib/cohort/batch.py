"""A cohort on a Dask cluster, resumably, into a cohort table (`normativead batch`, whose command line is
cli/batch.py, states it as BatchSettings).

INPUTS: scans, folders of scans, globs, CSV manifests, or one BIDS dataset (inputs). Each
scan is one Dask task (worker.run_scan) running the ordinary single-case pipeline for each
model; the outputs land in OUT/<model>/, or for a BIDS input in OUT as one BIDS-Derivatives
dataset (outputs), and every (case, model) becomes a row of OUT/cohort.csv / cohort.parquet,
with OUT/summary.html (summary).

Run again with the same command and complete cases are skipped, failed and unfinished ones are
redone. One batch at a time per OUT (claimed as `restore` claims its --out). dask, pybids, pyarrow
and matplotlib are imported only when a batch runs (`pip install 'normativead[batch]'`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..core import jsontext, interrupts, locations, writes
from ..core.errors import InputError, OutputError
from ..core.options import DEVICE, FORMAT, SEED
from .outputs import make_public


RUN_FILE = "batch.json"  # the settings complete cases were made with: a rerun must match them
REGISTRATIONS = "registrations"
BIDS_LAYOUT = "bids-derivatives"  # OUT is one BIDS-Derivatives dataset (earlier versions: "bids", a dataset per model)


@dataclass(frozen=True)
class BatchSettings:
    """One batch run, as the command line (cli/batch.py) or a script states it."""

    inputs: list[str]  # scans, folders, globs, CSV manifests or one BIDS dataset (inputs.read_inputs)
    out: Path
    models: list[str] | None = None  # None: the default model
    workers: int | None = None  # local Dask workers (None: one per 2 cores)
    scheduler: str | None = None  # an existing Dask scheduler instead of a local cluster
    threshold: str | None = None  # a threshold every card names, or a number (None: each card's default)
    device: str = DEVICE.default
    format: str = FORMAT.default
    seed: int = SEED.default
    registration_cache: str | None = None  # None: OUT/registrations
    no_registration_cache: bool = False
    overwrite: bool = False
    cancel: object = None  # a threading.Event set on Ctrl-C/SIGTERM (the command line's), or None


@dataclass
class Plan:
    """What a batch run does: the pairs to run, those already complete, those failing before any work."""

    pairs: list[tuple]  # (case, model id) in the cohort table's order
    todo: dict[str, list[str]] = field(default_factory=dict)  # case id -> models to run, in order
    skipped: list[tuple] = field(default_factory=list)
    failed: dict[tuple, str] = field(default_factory=dict)  # (case id, model) -> one-line error
    unmatched: dict[str, int] = field(default_factory=dict)  # contrast -> scans no model fits


def run(batch: BatchSettings, reporter) -> int:
    from .inputs import read_inputs
    from .outputs import Layout

    out = Path(batch.out)
    cohort = read_inputs(batch.inputs, exclude=out)
    layout = Layout(out, batch.format, cohort.bids_root)
    cards = _check_models(batch.models, batch.threshold)
    layout.check_models(cards)
    if batch.workers is not None and batch.workers < 1:
        raise InputError("--workers must be 1 or more.")
    writes.check_writable(out, [], overwrite=True)
    with writes.claim_output_dir(out):  # one batch per OUT: a second refuses (exit 4)
        recorded = _check_run_settings(out, batch, layout)
        layout.clear_staging()  # a killed run's uncommitted leftovers
        plan = make_plan(cohort.cases, cards, layout, batch.overwrite, batch.threshold, batch.seed)
        _say_plan(plan, cards, reporter)

        def started() -> None:  # recorded once the cluster answers: a mistaken command leaves nothing
            _record_run_settings(out, recorded)
            layout.start({m: cards[m] for m in dict.fromkeys(m for _, m in plan.pairs)})  # models with scans only

        cancelled = False
        try:
            if plan.todo:
                cancelled = not _run_on_cluster(plan, cohort.cases, layout, batch, reporter, started)
            else:
                started()
        finally:
            layout.clear_staging()
        if cancelled:
            raise KeyboardInterrupt
        from .summary import write_cohort

        rows = write_cohort(plan.pairs, plan.failed, layout, cards)
    return _report_end(rows, out, reporter)


def _check_models(model_ids: list[str] | None, threshold: str | None) -> dict:
    """Cards by id, each checked (known model, threshold it offers) before any work."""
    from ..core.catalogue import default_model, get_card
    from ..core.options import resolve_threshold

    ids = list(dict.fromkeys(model_ids or [default_model()]))
    cards = {m: get_card(m) for m in ids}
    for card in cards.values():
        resolve_threshold(threshold, card.offered_thresholds(), card.id, card.default_threshold)
    return cards


def _check_run_settings(out: Path, batch: BatchSettings, layout) -> dict:
    """This run's settings; complete cases are kept only if they were made the same way, so a rerun
    that differs from the recorded settings is refused."""
    settings = {"threshold": batch.threshold, "seed": batch.seed, "format": batch.format,
                "layout": BIDS_LAYOUT if layout.bids_root else "cases"}
    record = out / RUN_FILE
    if record.is_file() and not batch.overwrite:
        try:
            previous = json.loads(record.read_text())
        except (OSError, ValueError):
            raise OutputError(f"{record} cannot be read; remove it to continue this batch (its complete cases are "
                              "checked one by one), or pass --overwrite to redo it all.") from None
        changed = [k for k in settings if previous.get(k) != settings[k]]
        if changed:
            was = ", ".join(f"{k} {previous.get(k)!r} (now {settings[k]!r})" for k in changed)
            raise OutputError(f"{out} holds a batch made with {was}: rerun with the same settings to complete it, "
                              "pass --overwrite to redo it all, or choose another --out.")
    return settings


def _record_run_settings(out: Path, settings: dict) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(jsontext.dumps(settings, indent=2) + "\n")
        make_public(tmp)

    writes.write_file_atomic(out / RUN_FILE, write, overwrite=True)


def make_plan(cases, cards: dict, layout, overwrite: bool = False, threshold: str | None = None,
              seed: int = 0) -> Plan:
    """Pair each case with the models of its contrast; skip pairs complete with these settings; fail
    missing files now."""
    plan = Plan(pairs=[])
    for case in cases:
        models = [m for m, card in cards.items() if _fits(case.contrast, card)]
        if not models:
            plan.unmatched[case.contrast] = plan.unmatched.get(case.contrast, 0) + 1
            continue
        missing = _missing_file(case)
        for model_id in models:
            plan.pairs.append((case, model_id))
            if missing:
                plan.failed[(case.id, model_id)] = missing
            elif not overwrite and layout.is_complete(case, model_id) and \
                    _made_with(layout.metrics_path(case, model_id), cards[model_id], threshold, seed, case.contrast):
                plan.skipped.append((case, model_id))
            else:
                plan.todo.setdefault(case.id, []).append(model_id)
    if not plan.pairs:
        contrasts = ", ".join(sorted(plan.unmatched))
        trained = ", ".join(sorted({c for card in cards.values() for c in card.trained_contrasts}))
        raise InputError(f"no scan fits the models' contrasts ({trained}); "
                         f"the scans are {contrasts}: choose models of those contrasts (normativead models).")
    return plan


def _made_with(metrics_path: Path, card, threshold: str | None, seed: int, contrast: str | None = None) -> bool:
    """Whether a complete case was made with this threshold and seed (an interrupted --overwrite run
    with other settings leaves cases of both kinds: those of the other kind are redone)."""
    try:
        made = json.loads(metrics_path.read_text())
        source, value = made["threshold"]["source"], made["threshold"]["value"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if made.get("seed", 0) != seed:
        return False
    wanted = card.default_for(contrast) if threshold is None else threshold
    if wanted in card.offered_thresholds():
        return source == wanted
    return source == "manual" and value is not None and abs(float(wanted) - value) < 1e-12


def _fits(case_contrast: str | None, card) -> bool:
    """A scan of known contrast runs with the models trained for it; one of unknown contrast with every
    model (the pipeline then states the contrast it assumed, and its contrast check decides)."""
    return case_contrast is None or card.accepts(case_contrast)


def _missing_file(case) -> str | None:
    for path, what in ((case.scan, "scan"), (case.mask, "mask"), (case.reference, "reference")):
        if path is not None:
            try:
                locations.check_input_file(path, what)
            except InputError as err:
                return str(err)
    return None


def _say_plan(plan: Plan, cards: dict, reporter) -> None:
    for contrast, n in plan.unmatched.items():
        reporter.note(f"{n} {contrast} scan{'s fit' if n > 1 else ' fits'} none of the models "
                        f"({', '.join(cards)}): not run; add a {contrast} model with --model (normativead models)")
    n_todo = sum(len(m) for m in plan.todo.values())
    reporter.note(f"{len(plan.pairs)} case run{'s' * (len(plan.pairs) != 1)}: {len(plan.skipped)} already complete, "
                    f"{n_todo} to run, {len(plan.failed)} with missing files")


# ----------------------------------------------------------------------------------------------
# The cluster

def _run_on_cluster(plan: Plan, cases, layout, batch: BatchSettings, reporter, started) -> bool:
    """Run plan.todo; commit each finished case; record failures in plan.failed. False if cancelled.
    started() is called once the cluster answers, before the first task."""
    try:
        from distributed import Event, as_completed
    except ImportError:
        raise InputError("normativead batch needs Dask: pip install 'normativead[batch]'.") from None
    from .worker import ScanTask, run_scan

    registration_cache = None if batch.no_registration_cache else \
        str(Path(batch.registration_cache or layout.out / REGISTRATIONS).resolve())
    by_id = {c.id: c for c in cases}
    progress = reporter.count(sum(len(m) for m in plan.todo.values()), "case", "batch")
    with dask_client(batch.scheduler, batch.workers) as (client, threads):
        if client.dashboard_link and _has_dashboard(client):
            reporter.note(f"Dask dashboard: {client.dashboard_link}")
        started()
        cancel = Event(f"normativead-cancel-{uuid.uuid4().hex}", client=client)
        futures = {}
        for case_id, models in plan.todo.items():
            task = ScanTask(by_id[case_id], tuple(models), str(layout.staging_root.resolve()), batch.threshold,
                            batch.device, batch.seed, batch.format, registration_cache, threads, cancel.name)
            futures[client.submit(run_scan, task, pure=False, key=f"normativead-{case_id}-{uuid.uuid4().hex[:8]}")] \
                = (by_id[case_id], models)
        try:
            for future in as_completed(futures):
                case, models = futures[future]
                for outcome in _outcomes(future, models):
                    _settle(outcome, case, layout, plan)
                    progress.step(case.id, outcome["status"] != "done", case=case.id, **_event_fields(outcome))
                if batch.cancel is not None and batch.cancel.is_set():
                    raise KeyboardInterrupt  # the signal came while a case was put in place: it waited for that
        except KeyboardInterrupt:
            with interrupts.interrupts_held(reraise=False):
                progress.close()
                reporter.note("cancelling: finished cases stay in place; rerun the same command to continue")
                _quietly(cancel.set)
                _quietly(lambda: client.cancel(list(futures)))
            return False
    progress.close()
    return True


def _event_fields(outcome: dict) -> dict:
    """What a machine reading --progress json learns of one finished case run."""
    return {"model": outcome["model"], "status": outcome["status"], "error": outcome["error"],
            **{k: outcome.get(k) for k in ("seconds", "worker", "worker_peak_mb", "model_loads")}}


def _outcomes(future, models: list[str]) -> list[dict]:
    """The worker's outcomes, or one failure per model when the task itself died (a killed worker)."""
    from .worker import one_line

    try:
        return future.result()
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # KilledWorker (out of memory?), a cancelled future, a lost connection
        message = f"the worker running this scan failed: {one_line(err)}"
        return [{"model": m, "status": "failed", "error": message, "staging": None} for m in models]


def _settle(outcome: dict, case, layout, plan: Plan) -> None:
    """Put a finished case in place, or record why it is not."""
    key = (case.id, outcome["model"])
    if outcome["status"] == "done":
        try:
            layout.commit(Path(outcome["staging"]), case, outcome["model"])
            plan.failed.pop(key, None)
            return
        except OSError as err:
            outcome.update(status="failed", error=f"outputs could not be put in place: {err}")
    plan.failed[key] = outcome["error"]


def _quietly(action) -> None:
    try:
        action()
    except Exception:
        pass


def _has_dashboard(client) -> bool:
    """The dashboard needs bokeh where the scheduler runs (here, for a local cluster)."""
    import importlib.util

    try:
        services = _scheduler_info(client).get("services", {})
    except Exception:
        return False
    local = client.cluster is not None
    return "dashboard" in services and (not local or importlib.util.find_spec("bokeh") is not None)


def cores() -> int:
    """The cores this process may use (a container's or a job's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers() -> int:
    """One local worker per 2 cores: each scan's registration and restoration use 2 threads well."""
    return max(1, cores() // 2)


@contextmanager
def dask_client(scheduler: str | None, workers: int | None):
    """(client, library threads per worker address): a local cluster, or the given scheduler's."""
    from distributed import Client, LocalCluster

    if scheduler:
        if workers is not None:
            raise InputError("--workers sizes a local cluster; with --scheduler the cluster's own workers run.")
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as err:  # ValueError: not an address
            raise InputError(f"no Dask scheduler answered at {scheduler} ({err}); check the address, or leave "
                             "out --scheduler to run on this machine.") from None
        try:
            yield client, remote_threads(client)
        finally:
            with interrupts.interrupts_held():
                client.close()
        return
    import dask
    import importlib.util
    import logging

    n = workers or default_workers()
    threads = max(1, cores() // n)
    environ = {f"distributed.nanny.pre-spawn-environ.{v}": threads
               for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    dashboard = ":0" if importlib.util.find_spec("bokeh") else None
    with dask.config.set(environ), _workers_ignore_ctrl_c():
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=dashboard,
                               silence_logs=logging.ERROR)
    try:
        client = Client(cluster)
        try:
            yield client, {"*": threads}
        finally:
            with interrupts.interrupts_held():
                client.close()
    finally:
        with interrupts.interrupts_held():
            cluster.close()


@contextmanager
def _workers_ignore_ctrl_c():
    """Worker processes inherit SIGINT ignored, so a Ctrl-C at the terminal reaches only this process,
    which cancels the batch and stops its workers itself (else each worker prints a traceback).
    Only an ignored signal survives the workers' exec, so for the second or two it takes to spawn them
    a Ctrl-C is ignored here too (SIGTERM still cancels)."""
    if sys.platform == "win32":
        yield
        return
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def remote_threads(client) -> dict[str, int]:
    """Library threads per worker of an existing cluster: its host's cores shared by the tasks that
    host runs at once (the cluster's workers x their threads)."""
    cores = client.run(os.cpu_count)
    workers = _scheduler_info(client)["workers"]
    busy: dict[str, int] = {}
    for info in workers.values():
        busy[info["host"]] = busy.get(info["host"], 0) + info["nthreads"]
    return {address: max(1, (cores.get(address) or 1) // max(1, busy[info["host"]]))
            for address, info in workers.items()}


def _scheduler_info(client) -> dict:
    """Every worker's information (newer Dask lists only a few unless asked for all)."""
    try:
        return client.scheduler_info(n_workers=-1)
    except TypeError:  # Dask before 2025: no n_workers, always all
        return client.scheduler_info()


def _report_end(rows: list[dict], out: Path, reporter) -> int:
    failed = [r for r in rows if r["status"] != "done"]
    if reporter.for_machines:
        reporter.event("done", out=str(out), cases=len(rows), failed=len(failed))
    else:
        print(f"{len(rows) - len(failed)} of {len(rows)} case runs complete; cohort table {out / 'cohort.csv'} "
              f"(and .parquet), summary {out / 'summary.html'}")
    if failed:
        first = failed[0]
        print(f"normativead: {len(failed)} case run{'s' * (len(failed) > 1)} failed (first: {first['case']} with "
              f"{first['model']}: {first['error']}); see the error column of {out / 'cohort.csv'} and rerun the same "
              "command to retry them.", file=sys.stderr)
        return 1
    return 0

