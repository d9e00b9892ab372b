"""The NormativeAD logic: run one or several models on a volume and put the results in the scene.

A Job runs its models one after another in child processes (process.py); nothing is added to the
scene until every model has finished, so cancelling or a failure leaves the scene as it was.
Drive a job with poll() from a GUI timer, or with wait() to block (scripts, tests, self-test).

Usable in Slicer (scene = slicer.mrmlScene) and on slicer-core (any vtkMRMLScene).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import comparison, export, scene as scene_logic
from NormativeADLib.core.options import DEVICE, DEVICES, RestoreOptions, guess_contrast

from .process import ProcessProtocol, ProcessRunner, RunOutcome, new_work_dir


@dataclass
class RunSettings:
    """What the panel chooses; models holds one id for a run, several for a comparison."""

    models: list[str]
    device: str = DEVICE.default
    threshold: str | None = None  # None: each model's default
    opacity: float = scene_logic.DEFAULT_OPACITY
    keep_files: bool = False


CANCEL_TIMEOUT_S = 15.0  # a killed process has closed its output well before this


def study_volumes(input_node, other_nodes, models) -> list[tuple]:
    """(node, contrast) for each other volume of the study, checked before anything is written: a study
    model for every model, the contrast in each node's name, one volume per contrast."""
    if not other_nodes:
        return []
    from NormativeADLib.core.catalogue import get_card
    from NormativeADLib.core.errors import InputError
    from NormativeADLib.core.options import study_contrasts

    unnamed = [node.GetName() for node in [input_node, *other_nodes] if guess_contrast(node.GetName() or "") is None]
    if unnamed:
        raise ValueError(f"rename '{unnamed[0]}' to say its contrast (T1, T1c, T2 or FLAIR, e.g. 'patient FLAIR'): "
                         "the volumes of a study are read by contrast.")
    pairs = [(node.GetName(), None) for node in other_nodes]
    first = guess_contrast(input_node.GetName())
    for model in models:
        try:
            contrasts = study_contrasts(get_card(model), first, pairs)
        except InputError as err:
            raise ValueError(str(err).replace(" (--with)", "")) from None
    return list(zip(other_nodes, contrasts))


@dataclass
class JobState:
    status: str = "running"  # running, done, failed, cancelled
    fraction: float = 0.0
    message: str = ""
    device: str = ""
    results: list = field(default_factory=list)


class Job:
    """Runs settings.models on one input; see the module docstring."""

    def __init__(self, scene, input_node, settings: RunSettings, mask_node=None, reference_node=None,
                 on_progress: Callable[[JobState], None] | None = None,
                 on_finished: Callable[[JobState], None] | None = None,
                 process_factory: Callable[..., ProcessProtocol] = ProcessRunner, other_nodes=()):
        if input_node is None:
            raise ValueError("choose an input volume")
        if not settings.models:
            raise ValueError("choose at least one model")
        if len(set(settings.models)) != len(settings.models):
            raise ValueError("choose each model once: a comparison shows one view per model")
        if settings.device not in DEVICES:
            raise ValueError(f"device {str(settings.device)[:40]!r} is not one of {', '.join(DEVICES)}")
        other_nodes = [n for n in other_nodes if n is not None]
        others = study_volumes(input_node, other_nodes, settings.models)
        self.scene = scene
        self.input_node = input_node
        self.settings = settings
        self.on_progress = on_progress or (lambda state: None)
        self.on_finished = on_finished or (lambda state: None)
        self.process_factory = process_factory
        self.state = JobState()
        self.reference_node = reference_node
        self.work_dir = new_work_dir()
        self.inputs = export.write_run_inputs(self.work_dir / "inputs", input_node, mask_node, reference_node)
        self.others = tuple((export.write_volume(node, self.work_dir / "inputs" / f"other-{i}.nrrd"), contrast)
                            for i, (node, contrast) in enumerate(others))
        self.outputs: list[tuple[str, Path]] = []
        self._index = -1
        self._runner: ProcessProtocol | None = None
        self._finished = False

    # -- running

    def start(self) -> "Job":
        try:
            self._next()
        except Exception:  # the caller reports it; the inputs written for the run go
            shutil.rmtree(self.work_dir, ignore_errors=True)
            raise
        return self

    def _next(self) -> None:
        self._index += 1
        model = self.settings.models[self._index]
        request = RestoreOptions(
            input_path=self.inputs["input"], out_dir=self.work_dir / f"out-{self._index}", model=model,
            device=self.settings.device, mask_path=self.inputs.get("mask"),
            reference_path=self.inputs.get("reference"), threshold=self.settings.threshold, format="nrrd",
            # compared models share the first run's registration: same alignment, no repeated work
            transform_path=self.outputs[0][1] / "transform.tfm" if self.outputs else None,
            # the exported file is input.nrrd: the node's name (often the file's) says the contrast
            contrast=guess_contrast(self.input_node.GetName() or ""),
            figures=self.settings.keep_files, others=self.others)  # the figures of files that are removed would be drawn for nobody
        self._runner = self.process_factory(request, on_event=self._event)
        self._runner.start()

    def _event(self, event: dict) -> None:
        if event.get("event") != "progress":
            return
        n = len(self.settings.models)
        model = self.settings.models[self._index]
        self.state.fraction = (self._index + float(event.get("fraction", 0.0))) / n
        prefix = f"{model} ({self._index + 1}/{n}): " if n > 1 else ""
        self.state.message = prefix + str(event.get("message") or event.get("stage", ""))
        self.on_progress(self.state)

    def poll(self) -> bool:
        """Advance the job; True while it goes on. Call from the thread that owns the scene."""
        if self._finished:
            return False
        if self._runner.poll():
            return True
        outcome: RunOutcome = self._runner.outcome
        if outcome.status != "done":
            self._end(outcome.status, outcome.message)
            return False
        self.outputs.append((self.settings.models[self._index], outcome.out_dir))
        if self._index + 1 < len(self.settings.models):
            try:
                self._next()
            except Exception as err:  # ends the job: raised from a GUI timer, it would come back every tick
                self._end("failed", f"{self.settings.models[self._index]} could not start: {err}")
                return False
            return True
        try:
            self._load()
        except Exception as err:  # a bad output folder: report it, the scene keeps what it had
            self._end("failed", f"the results could not be loaded: {err}")
            return False
        self._end("done", "finished")
        return False

    def _load(self) -> None:
        runs = [(model, scene_logic.read_run(self.input_node, out_dir)) for model, out_dir in self.outputs]
        results = []  # every folder was read and checked above: a bad one fails before the scene changes
        for model, run in runs:
            results.append(scene_logic.load_result(self.scene, self.input_node, run, model,
                                                   opacity=self.settings.opacity, show=len(self.outputs) == 1,
                                                   reference=self.reference_node))
            devices = results[-1].metrics.get("device")
            if devices:
                self.state.device = str(devices)
        if len(results) > 1:
            comparison.show_comparison(self.scene, results, opacity=self.settings.opacity)
        self.state.results = results

    def _end(self, status: str, message: str) -> None:
        self._finished = True
        # The runner's on_event is this Job's method: letting the ended runner go breaks that cycle, so the
        # Job and its results are freed with its last reference, not at a rare pass of the cycle collector.
        # poll() and cancel() look at _finished first and never reach the runner again.
        self._runner = None
        self.state.status = status
        self.state.message = message
        if status == "done":
            self.state.fraction = 1.0
        if not self.settings.keep_files:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self.on_finished(self.state)

    def cancel(self, timeout_s: float = CANCEL_TIMEOUT_S) -> None:
        """Kill the running model's process and end the job; bounded in time, whatever the process does."""
        if self._finished or self._runner is None:
            return
        self._runner.cancel()
        deadline = time.monotonic() + timeout_s
        while self._runner.poll() and time.monotonic() < deadline:  # its tree was killed: only its pipe may lag
            time.sleep(0.01)
        self._end("cancelled", "cancelled: the scene was left as it was")

    def wait(self, timeout: float | None = None) -> JobState:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                break
            time.sleep(0.05)
        return self.state
