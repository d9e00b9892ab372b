"""What one browser page does to the MRML scene, with no user interface: the web page's logic.

A WebSession holds the scan shown, its optional reference segmentation, the job running and the
results of the last finished job. Everything that touches results goes through the Slicer module's
NormativeADSlicerLib (Job for runs, scene for display / threshold / table, comparison for the
side-by-side views, export for files), so the page and the Slicer panel share one copy of that code.

Files handed in by the page (uploads) are written into a private folder made by the server and
removed when it stops, or as soon as the session holds them no more (a scan or reference replaced or
dropped, an upload refused); an upload is streamed to disk and refused as soon as it passes the size limit.
A scan is checked with the library's own checks (the command line's messages) before it reaches the
scene. A failed or cancelled job leaves the previous results as they were (the Job adds nothing to
the scene until every model has finished).
"""

from __future__ import annotations

import ctypes
import gc
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

import numpy as np
import slicer

from NormativeADLib.core import catalogue, locations
from NormativeADLib.core.errors import InputError
from NormativeADLib.core.locations import READABLE_SUFFIXES
from NormativeADLib.core.options import DEFAULT_OPACITY, DEVICE

from NormativeADSlicerLib import export, nodes, scene as scene_logic
from NormativeADSlicerLib.logic import Job, JobState, RunSettings
from NormativeADSlicerLib.process import ProcessRunner

REFERENCE_COLOR = (1.0, 0.0, 1.0)  # magenta: no colour of the heatmap's blue-to-red map, nor the anomaly's yellow
DOWNLOADS = {  # kind -> (label, key in export.export_result's answer)
    "segmentation": ("Segmentation (.seg.nrrd)", "segmentation"),
    "labelmap": ("Segmentation (NIfTI)", "labelmap"),
    "heatmap": ("Heatmap (NIfTI)", "heatmap"),
    "pseudo_healthy": ("Pseudo-healthy (NIfTI)", "pseudo_healthy"),
    "uncertainty": ("Uncertainty (NIfTI)", "uncertainty"),
    "metrics": ("Metrics (CSV)", "metrics"),
}
BESIDE = ("restoration", "uncertainty")  # what the view beside the scan shows in the Restoration layout


@dataclass(frozen=True)
class Source:
    """An image file the page can open: the shipped sample case or a file of --data."""

    label: str
    path: Path


def release_freed_memory() -> None:
    """Free what the previous run left and give the memory back to the system, after each run.

    A Job and its process runner referred to each other (the runner's event callback is a method of the Job),
    so the previous run's Job, with its results' volume nodes, waited for Python's cycle collector, whose
    full passes are rare in a server that makes few Python objects: a session kept about 27 MB more per run
    (issue 26). An ended Job now lets its runner go and is freed with its last reference; the collection
    (about 0.1 s) stays for any other cycle a run leaves. glibc keeps freed memory otherwise (malloc_trim;
    nothing to do elsewhere)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def upload_file_name(name: str) -> str:
    """An upload's file name as a safe path component: its base name, with what checked_name refuses made '_'
    (the name still says the contrast and the format, which the page reads from it)."""
    base = re.sub(r"[^A-Za-z0-9._@+-]", "_", str(name).replace("\\", "/").rsplit("/", 1)[-1])
    base = re.sub(r"\.{2,}", ".", base)[-128:].lstrip("._@+-")
    return base or "upload"


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(READABLE_SUFFIXES))


class WebSession:
    """The scene state behind one page; see the module docstring."""

    def __init__(self, scene, upload_dir: Path, data_dir: Path | None = None, max_upload_bytes: int = 200 << 20,
                 process_factory: Callable = ProcessRunner):
        self.scene = scene
        self.upload_dir = Path(upload_dir)
        self.data_dir = Path(data_dir) if data_dir else None
        self.max_upload_bytes = int(max_upload_bytes)
        self.process_factory = process_factory
        self.scan = None
        self.reference = None
        self.reference_file: Path | None = None  # the file the reference was read from (an upload is discarded with it)
        self.job: Job | None = None
        self.results: list[scene_logic.Result] = []
        self.current: scene_logic.Result | None = None
        nodes.ensure_segmentation_support()

    # -- what can be opened

    def sources(self) -> list[Source]:
        found = []
        for contrast in locations.SAMPLE_SCANS:
            scan, lesion = locations.sample_case(contrast)
            found.append(Source(f"sample: MSLUB patient 26 {contrast}", scan))
        found.append(Source("sample: MSLUB patient 26 lesion (reference)", lesion))
        if self.data_dir is not None and self.data_dir.is_dir():
            found += [Source(str(p.relative_to(self.data_dir)), p) for p in image_files(self.data_dir)]
        return found

    def models(self) -> list:
        return catalogue.list_models()

    async def receive_upload(self, name: str, chunks: AsyncIterator[bytes], declared_size: int | None = None) -> Path:
        """An uploaded file streamed to disk under the private upload folder, chunk by chunk (never whole in
        memory). Refused before a byte is read when its declared size passes the limit, else as soon as the
        bytes received pass it; a refused or broken upload leaves nothing behind."""
        if declared_size is not None and declared_size > self.max_upload_bytes:
            raise self._too_large(name, declared_size)
        folder = Path(tempfile.mkdtemp(prefix="upload-", dir=self.upload_dir))
        received = 0
        try:
            target = locations.child_path(folder, upload_file_name(name), "uploaded file name")
            with target.open("wb") as handle:
                async for chunk in chunks:
                    received += len(chunk)
                    if received > self.max_upload_bytes:
                        raise self._too_large(name, received)
                    handle.write(chunk)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return target

    def _too_large(self, name: str, size: int) -> InputError:
        return InputError(f"{upload_file_name(name)} is {size / 2**20:.0f} MB or more; the limit of this server is "
                          f"{self.max_upload_bytes / 2**20:.0f} MB (normativead web --max-upload-mb).")

    def discard_upload(self, path: str | Path | None) -> None:
        """Remove an upload this session holds no more (refused, or replaced by another scan); files
        outside the private upload folder (the sample, --data) are never touched."""
        if path is None:
            return
        folder = Path(path).resolve().parent
        if folder.parent == self.upload_dir.resolve() and folder.name.startswith("upload-"):
            shutil.rmtree(folder, ignore_errors=True)

    # -- the scan and its reference

    def load_scan(self, path: str | Path, name: str | None = None):
        """Check the file as the command line does, then show it; the previous scan and its results go."""
        from NormativeADLib import io

        path = locations.check_input_file(path, "scan")
        io.check_inputs(path)
        self.cancel()
        self._forget_scan()
        self.scan = _read_volume(self.scene, path, name or locations.case_name(path))
        return self.scan

    def suggested_model(self) -> tuple[str | None, str | None]:
        """(contrast, model id): the scan's contrast as its file name says it (BIDS-style suffixes, t1, flair...)
        and the installed model with the best measured detection on that contrast (catalogue.default_model,
        what `normativead restore` takes without --model); (None, None) when the name says nothing."""
        from NormativeADLib.core.options import guess_contrast

        if self.scan is None:
            return None, None
        contrast = guess_contrast(Path(self.scan.GetStorageNode().GetFileName()).name)
        return (contrast, catalogue.default_model(contrast)) if contrast else (None, None)

    def load_reference(self, path: str | Path):
        """A reference lesion mask on the scan's grid, shown as a magenta outline; the run scores against it."""
        from NormativeADLib import io

        if self.scan is None:
            raise InputError("open a scan first, then its reference segmentation.")
        path = locations.check_input_file(path, "reference")
        io.check_inputs(self.scan.GetStorageNode().GetFileName(), reference_path=path)
        if self.reference_file is not None and self.reference_file.resolve() == Path(path).resolve():
            self.reference_file = None  # the same file again: read anew, not discarded
        self.clear_reference()
        self.reference = _read_reference(self.scene, path, self.scan)
        self.reference_file = Path(path)
        return self.reference

    def clear_reference(self) -> None:
        """The reference goes from the scene, and its file with it when it was an upload (discard_upload): a
        reference replaced or dropped is never read again (a run reads the copy its Job wrote)."""
        if self.reference is not None:
            self.scene.RemoveNode(self.reference)
            self.reference = None
        self.discard_upload(self.reference_file)
        self.reference_file = None

    def _forget_scan(self) -> None:
        for result in scene_logic.results_in_scene(self.scene):
            scene_logic.remove_result(self.scene, result)
        self.clear_reference()
        if self.scan is not None:
            storage = self.scan.GetStorageNode()
            self.discard_upload(storage.GetFileName() if storage else None)
            self.scene.RemoveNode(self.scan)
        self.scan, self.results, self.current = None, [], None

    # -- running

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.state.status == "running"

    def start(self, models: list[str], device: str = DEVICE.default, opacity: float = DEFAULT_OPACITY,
              on_progress: Callable[[JobState], None] | None = None,
              on_finished: Callable[[JobState], None] | None = None) -> Job:
        if self.scan is None:
            raise InputError("open a scan first.")
        if self.running:
            raise InputError("a run is going on; wait for it or cancel it.")
        for model in models:
            catalogue.get_card(model)  # an unknown model answers as the command line does
        settings = RunSettings(models=list(models), device=device, opacity=opacity)
        self.job = Job(self.scene, self.scan, settings, reference_node=self.reference, on_progress=on_progress,
                       on_finished=self._finished(on_finished), process_factory=self.process_factory)
        return self.job.start()

    def _finished(self, then: Callable[[JobState], None] | None) -> Callable[[JobState], None]:
        def finished(state: JobState) -> None:
            if state.status == "done":
                self.results = list(state.results)
                self.current = self.results[0] if self.results else None
            (then or (lambda s: None))(state)
            release_freed_memory()
        return finished

    def poll(self) -> bool:
        """Advance the job; True while it runs (call from the thread that owns the scene)."""
        return self.job is not None and self.job.poll()

    def cancel(self) -> None:
        if self.running:
            self.job.cancel()

    # -- results

    def select(self, result_name: str) -> scene_logic.Result | None:
        for result in self.results:
            if result.name == result_name:
                self.current = result
        return self.current

    def threshold_choices(self, result: scene_logic.Result | None = None) -> list[str]:
        result = result or self.current
        return [] if result is None else [*result.thresholds, "manual"]

    def threshold_range(self, result: scene_logic.Result | None = None) -> tuple[float, float]:
        result = result or self.current
        if result is None:
            return 0.0, 1.0
        _, high = scene_logic.heatmap_window(result)
        named = [float(v) for v in result.thresholds.values() if v is not None]
        return 0.0, max([high, 2.0 * result.threshold] + [1.5 * v for v in named])

    def set_threshold(self, choice: str | float) -> None:
        """Re-segment the current result from its heatmap (a policy name or a number), at once."""
        if self.current is None:
            raise InputError("run a model first.")
        scene_logic.set_threshold(self.scene, self.current, choice)

    def show_current(self, opacity: float) -> None:
        """The current result over its scan in the main (non-comparison) views."""
        if self.current is not None:
            scene_logic.show_heatmap(self.scene, self.current, opacity=opacity, show=True)

    def show_restoration(self, view_name: str, beside: str = "restoration") -> None:
        """In the named slice view (beside the scan), with the segmentation's outline: the current result's
        pseudo-healthy volume alone, so the eye can go from a finding to what the model put there; or,
        beside="uncertainty", its uncertainty map over the scan (where the heatmap is not to be trusted)."""
        if self.current is None:
            return
        uncertainty = self.current.uncertainty if beside == "uncertainty" else None
        if uncertainty is not None:
            scene_logic.show_uncertainty(self.scene, self.current)
        for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = self.scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            if composite.GetLayoutName() == view_name:
                background = self.current.input if uncertainty is not None else self.current.pseudo_healthy
                composite.SetBackgroundVolumeID(background.GetID())
                composite.SetForegroundVolumeID(uncertainty.GetID() if uncertainty is not None else None)
                composite.SetForegroundOpacity(0.7)
                composite.SetLabelVolumeID(None)

    def set_opacity(self, opacity: float) -> None:
        scene_logic.set_opacity(self.scene, opacity)

    def table(self) -> tuple[list[str], list[dict[str, str]]]:
        table = scene_logic.table_node(self.scene, create=False)
        if table is None:
            return [], []
        names = {r.name for r in self.results}
        rows = [row for row in scene_logic.table_as_rows(table) if row.get("Result") in names]
        return [header for header, _, _ in scene_logic.TABLE_COLUMNS], rows

    def anomaly_centre_ras(self, result: scene_logic.Result | None = None) -> tuple[float, float, float] | None:
        """RAS centre of the segmentation's largest connected part (where the views open), or None."""
        from scipy import ndimage

        result = result or self.current
        if result is None:
            return None
        mask = nodes.segment_array(result.segmentation, scene_logic.SEGMENT_ID, result.input) > 0
        labels, count = ndimage.label(mask)
        if count == 0:
            return None
        largest = 1 + int(np.argmax(ndimage.sum(mask, labels, range(1, count + 1))))
        k, j, i = np.argwhere(labels == largest).mean(axis=0)
        ras = nodes.ijk_to_ras(result.input) @ np.array([i, j, k, 1.0])
        return tuple(float(v) for v in ras[:3])

    def export(self, kind: str) -> tuple[str, bytes]:
        """(file name, bytes) of one download of the current result, on the input's grid.

        Written by the Slicer module's export (the same files its Export button writes) into a
        folder under the private upload folder, read back, and the folder removed.
        """
        if self.current is None:
            raise InputError("run a model first.")
        if kind not in DOWNLOADS:
            raise InputError(f"unknown download {kind!r} ({', '.join(DOWNLOADS)}).")
        folder = Path(tempfile.mkdtemp(prefix="export-", dir=self.upload_dir))
        try:
            path = export.export_result(self.scene, self.current, folder, "nifti")[DOWNLOADS[kind][1]]
            return path.name, path.read_bytes()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def public_message(self, err: Exception) -> str:
        """An error's message for the page: the command line's words, without this server's private folders."""
        return re.sub(re.escape(str(self.upload_dir)) + r"/(upload|export)-[^/\s\"']+/", "", str(err))

    def close(self) -> None:
        self.cancel()


def _read_volume(scene, path: Path, name: str):
    """A volume node read by a storage node (as Slicer's loadVolume does), with its display."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        raise InputError(f"{path.name} could not be read as an image.")
    scene.AddNode(storage)
    node.SetAndObserveStorageNodeID(storage.GetID())
    node.CreateDefaultDisplayNodes()
    return node


def _read_reference(scene, path: Path, scan):
    """A reference mask as a segmentation node on the scan's grid, drawn as a magenta outline."""
    try:
        mask = nodes.read_volume_array(path)[0] > 0  # read without adding a node to the scene
    except OSError:
        raise InputError(f"{path.name} could not be read as an image.") from None
    segmentation = scene_logic.outlined_segmentation(scene, f"{scan.GetName()} reference", scan)
    segmentation.GetSegmentation().AddEmptySegment("reference", "reference", list(REFERENCE_COLOR))
    nodes.set_segment_array(segmentation, "reference", mask.astype(np.uint8), scan)
    return segmentation
