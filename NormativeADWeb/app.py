"""The NormativeAD page: trame + Vuetify widgets over trame-slicer's Slicer slice views.

Thin, like the Slicer panel's widget: every handler hands its work to the WebSession (session.py),
which works through the Slicer module's NormativeADSlicerLib, and then copies what the session says
into the page's state. Views: "Result" shows the scan in three linked Slicer slice views (axial,
coronal, sagittal) with the heatmap as the foreground layer and the segmentation outline; "Compare"
is the Slicer module's own comparison layout (comparison.layout_xml), one linked view per model.

Element ids (na-...) name the controls for people reading the page's HTML and for the browser tests.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from trame.app import TrameApp
from trame.widgets import client, html
from trame_server.utils.asynchronous import create_task
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.app.logic.slice_view_logic import connect_slice_view_slider_to_state
from trame_slicer.app.ui import create_vertical_view_gutter_ui
from trame_slicer.app.ui.slider import Slider
from trame_slicer.rca_view import RemoteViewFactory
from trame_slicer.views import (Layout, LayoutDirection, SliceView, ViewLayoutDefinition, ViewType,
                                slicer_layout_to_vue)
from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout
from trame_vuetify.widgets import vuetify3 as v3

from NormativeADLib.core.errors import InputError, NormativeADError
from NormativeADLib.core.options import DEFAULT_OPACITY, DEVICE

from NormativeADSlicerLib import comparison, scene as scene_logic

from . import access
from .session import DOWNLOADS, WebSession

log = logging.getLogger("normativead.web")

RESULT_LAYOUT = "Result"
RESTORATION_LAYOUT = "Restoration"
COMPARE_LAYOUT = "Compare"
THREE_VIEWS = [ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.coronal_view(),
               ViewLayoutDefinition.sagittal_view()]
RESTORED_VIEW = "Restored"  # beside the axial view: the pseudo-healthy volume, linked to it
SCAN_AND_RESTORATION = [ViewLayoutDefinition.axial_view(),
                        ViewLayoutDefinition.slice_view("Axial", label=RESTORED_VIEW, color="#9E9E9E")]
POLL_S = 0.2  # how often a running job's progress lines are read
VIEWS_HEIGHT = "62vh"
NO_REFERENCE = "none"
# Files go to the session as the body of an HTTP POST, streamed to disk (_receive_upload), never over the
# websocket, where wslink holds a message whole in memory (a 600 MB upload once took 1.7 GB before refusal).
UPLOAD_ROUTE = "/na-upload"  # ?role=scan|reference&name=<the file's name>
UPLOAD_HEADER = "X-NormativeAD-Upload"  # another site's page cannot send it without a CORS preflight we never answer
UPLOAD_CHUNK = 1 << 20
# wslink lets a connected page send one message of up to 4 GB, allocated whole from its first chunk's header;
# this page sends state changes of a few kB (files go by POST), so a larger message closes the connection.
WEBSOCKET_MESSAGE_LIMIT = 8 << 20


class LinkedSliceView(SliceView):
    """trame-slicer's slice view whose slice slider also moves the views linked to it, as Slicer's slice
    controller does: the offset change is wrapped in a slice-offset interaction, which is what Slicer's
    link logic broadcasts to the other views of the view group (a bare offset change is not)."""

    def __init__(self, scene, app_logic, name, *args, **kwargs):
        self._fitted_fov = None  # the field of view of the last fit, while nobody has zoomed since
        super().__init__(scene, app_logic, name, *args, **kwargs)
        self._application_logic = app_logic

    def fit_view_to_content(self) -> None:
        super().fit_view_to_content()
        self.mark_fitted()

    def mark_fitted(self) -> None:
        """What the view shows now is the whole volume: a resize keeps it whole (see _update_slice_size)."""
        self._fitted_fov = tuple(self.get_view_node().GetFieldOfView())

    def _update_slice_size(self, *_) -> None:
        """The browser resized the view. Slicer keeps the pixel size, so a narrower view cropped the brain;
        a view showing the whole volume is fitted again (same slice), one the user zoomed keeps the zoom."""
        node = self.get_view_node()
        fitted = node is not None and self._fitted_fov is not None and all(
            abs(a - b) <= 1e-6 * max(1.0, abs(b)) for a, b in zip(node.GetFieldOfView(), self._fitted_fov))
        before = tuple(node.GetDimensions()) if node is not None else None
        super()._update_slice_size()
        if not fitted or tuple(node.GetDimensions()) == before:
            return
        offset = self._logic.GetSliceOffset()
        self._logic.FitSliceToBackground()
        self._logic.SetSliceOffset(offset)  # the fit centres the volume, the slice shown stays
        self.mark_fitted()

    def set_slice_value(self, value: float) -> None:
        logic = self._application_logic.GetSliceLogic(self.get_view_node())
        logic.StartSliceOffsetInteraction()
        try:
            super().set_slice_value(value)
        finally:
            logic.EndSliceOffsetInteraction()


def slice_view_gutter(server, view_id: str, view) -> None:
    """What each view carries: trame-slicer's reset-camera button and slice slider (without its
    show-in-3D button: the page has no 3D view)."""
    create_vertical_view_gutter_ui(server, view_id, view)
    with html.Div(classes="slice-slider-gutter",
                  style="position: absolute; bottom: 0; left: 0; background-color: transparent; width: 100%;"):
        Slider(classes="slice-slider", typed_state=connect_slice_view_slider_to_state(server, view), theme="dark",
               dense=True)


class NormativeADWebApp(TrameApp):
    """One server, one scene, one page; see the module docstring."""

    def __init__(self, upload_dir: Path, data_dir: Path | None = None, max_upload_bytes: int = 200 << 20,
                 server=None, token: str | None = None):
        super().__init__(server=server)
        _bound_websocket_messages()
        self.ctrl.on_server_bind.add(self._add_upload_route)
        if token is not None:  # the page, its assets and its websocket: refused without it (access.py)
            self.ctrl.on_server_bind.add(lambda wslink_server: wslink_server.app.middlewares.append(
                access.session_middleware(token)))
        self.slicer_app = SlicerApp()
        self.slicer_app.view_manager.register_factory(RemoteViewFactory(
            self.server, LinkedSliceView, ViewType.SLICE_VIEW, populate_view_ui_f=slice_view_gutter))
        self.layouts = LayoutManager(self.slicer_app.scene, self.slicer_app.view_manager, self.server)
        self.layouts.register_layout(RESULT_LAYOUT, Layout(LayoutDirection.Horizontal, list(THREE_VIEWS)))
        self.layouts.register_layout(RESTORATION_LAYOUT, Layout(LayoutDirection.Horizontal, SCAN_AND_RESTORATION))
        self.layouts.set_layout(RESULT_LAYOUT)
        self.session = WebSession(self.slicer_app.scene, upload_dir, data_dir, max_upload_bytes)
        self._sources = {str(i): s for i, s in enumerate(self.session.sources())}
        self._init_state(max_upload_bytes)
        self._bind()
        self._build_ui()

    # ------------------------------------------------------------------------------------------
    # State

    def _init_state(self, max_upload_bytes: int) -> None:
        from NormativeADLib.core.catalogue import DEMO_MODEL

        models = self.session.models()
        self._cards = {c.id: c for c in models}  # the model list is fixed while the page is up
        s = self.state
        s.sources = [{"title": src.label, "value": key} for key, src in self._sources.items()]
        s.reference_sources = [{"title": "none", "value": NO_REFERENCE}] + s.sources
        s.scan_source = None
        s.reference_source = NO_REFERENCE
        s.scan_name = ""
        s.models = [{"title": f"{c.id} ({', '.join(c.trained_contrasts)})", "value": c.id} for c in models]
        s.model = DEMO_MODEL if any(c.id == DEMO_MODEL for c in models) else (models[0].id if models else None)
        s.compare_models = []
        s.card = {}
        s.update(run_parameter_state())
        s.running = False
        s.progress = 0
        s.status = "Open a scan to begin."
        s.error = ""
        s.max_upload_bytes = max_upload_bytes
        s.max_upload_mb = round(max_upload_bytes / 2**20)
        s.results = []
        s.current_result = None
        s.threshold_choices = []
        s.threshold_policy = None
        s.threshold_value = 0.0
        s.threshold_max = 1.0
        s.legend = {"low": "", "high": "", "gradient": _gradient_css(self.slicer_app.scene)}
        s.table_headers = []
        s.table_rows = []
        s.downloads = [{"kind": kind, "label": label} for kind, (label, _) in DOWNLOADS.items()]
        s.layout_name = RESULT_LAYOUT
        s.beside = "restoration"  # what the Restoration layout shows beside the scan (session.BESIDE)
        s.compare_labels = []
        self._show_card(s.model)

    def _bind(self) -> None:
        s = self.state
        s.change("scan_source")(self._on_scan_source)
        s.change("reference_source")(self._on_reference_source)
        s.change("threshold_policy")(self._on_threshold_policy)
        s.change("threshold_value")(self._on_threshold_value)
        s.change("opacity")(self._on_opacity)
        s.change("current_result")(self._on_current_result)
        s.change("layout_name")(lambda layout_name, **_: self._set_layout(layout_name))
        s.change("beside")(lambda beside, **_: self._set_layout(self.state.layout_name))
        s.change("device")(self._on_device)
        s.change("model")(self._on_model)
        s.change("compare_models")(self._on_compare_models)

    # The state is the page's to change, and anyone holding the page can set any key to any value over its
    # websocket (window.trame.state.set): a value the lists never offer is refused here, on the server,
    # and set back before a run can use it (a device outside the list once hung the server, issue 26).

    def _refuse(self, key: str, value, fallback) -> None:
        self.state.error = f"{key} {str(value)[:40]!r} is not one this server offers; set back to {fallback!r}."
        self.state[key] = fallback

    def _on_device(self, device, **_) -> None:
        if device not in DEVICE.choices:
            self._refuse("device", device, DEVICE.default)

    def _on_model(self, model, **_) -> None:
        if model is not None and not (isinstance(model, str) and model in self._cards):
            self._refuse("model", model, next(iter(self._cards), None))
            return
        self._show_card(model)

    def _on_compare_models(self, compare_models, **_) -> None:
        if not isinstance(compare_models, list) or not all(isinstance(m, str) and m in self._cards
                                                            for m in compare_models):
            self._refuse("compare_models", compare_models, [])

    def _show_card(self, model_id) -> None:
        """The chosen model's card: contrast, training data, figures, thresholds."""
        card = self._cards.get(model_id)
        if card is None:
            self.state.card = {}
            return
        training = card.training or {}
        self.state.card = {
            "id": card.id, "version": card.version, "family": card.family,
            "contrast": card.contrast_summary,  # "T1" or "T1, T2, FLAIR (evaluated on T2, FLAIR)"
            "training": "; ".join(str(training[k]) for k in ("data", "licence") if training.get(k)) or "not stated",
            "figures": card.figures_summary() or "none recorded",
            "thresholds": ", ".join(card.offered_thresholds()) or "none",
            "default_threshold": card.default_threshold,
        }

    def _fail(self, err: Exception) -> None:
        """A problem the user can act on, in the page (the command line's wording for bad input)."""
        if not isinstance(err, (NormativeADError, FileNotFoundError, ValueError, OSError)):
            log.exception("unexpected error")
        self.state.error = self.session.public_message(err)

    # ------------------------------------------------------------------------------------------
    # Opening files

    def _on_scan_source(self, scan_source, **_) -> None:
        if scan_source is None or scan_source not in self._sources:
            return
        self._open_scan(self._sources[scan_source].path)

    def _open_scan(self, path: Path, name: str | None = None) -> bool:
        try:
            node = self.session.load_scan(path, name)
        except Exception as err:
            self._fail(err)  # the scan shown and its results stay as they were
            return False
        s = self.state
        s.error = ""
        s.progress = 0  # the last run's bar belongs to the scan that went
        s.scan_name = node.GetName()
        s.status = f"{node.GetName()} opened; choose a model and press Run."
        contrast, model = self.session.suggested_model()
        if model:  # what `normativead restore` would take for this scan without --model
            s.model = model
            s.status = f"{node.GetName()} opened ({contrast}): {model} has the best measured detection on {contrast}."
        s.reference_source = NO_REFERENCE
        self._show_results_state()
        self._set_layout(RESULT_LAYOUT)
        for view in self.slicer_app.view_manager.get_slice_views():
            view.set_background_volume_id(node.GetID())
            view.set_foreground_volume_id(None)
            view.reset_view()
        self._link_views()
        return True

    def _on_reference_source(self, reference_source, **_) -> None:
        if reference_source in (None, NO_REFERENCE):
            self.session.clear_reference()
            return
        if reference_source in self._sources:
            self._open_reference(self._sources[reference_source].path)

    def _open_reference(self, path: Path) -> bool:
        try:
            self.session.load_reference(path)
            self.state.error = ""
            return True
        except Exception as err:
            self._fail(err)
            return False

    def _add_upload_route(self, wslink_server) -> None:
        wslink_server.app.router.add_post(UPLOAD_ROUTE, self._receive_upload)

    async def _receive_upload(self, request):
        """A file chosen in the page (the request's body): streamed into the private upload folder, refused as
        soon as it passes the limit, then opened as scan or reference. The page reads the outcome in its
        state (error, status); the answer's status says it to other clients. The token, when asked for,
        is checked before this (access.session_middleware)."""
        from aiohttp import web

        role = request.query.get("role")
        if role not in ("scan", "reference") or request.headers.get(UPLOAD_HEADER) != "1":
            return web.json_response({"error": "not an upload of this page"}, status=400)
        try:
            path = await self.session.receive_upload(request.query.get("name", ""),
                                                     request.content.iter_chunked(UPLOAD_CHUNK), request.content_length)
        except Exception as err:  # too large, disk full, connection cut: nothing of it stays
            with self.state:
                self._fail(err)
            return web.json_response({"error": self.state.error}, status=413 if isinstance(err, InputError) else 400)
        with self.state:
            opened = self._open_upload(path, role)
        return web.json_response({"opened": opened, "error": self.state.error}, status=200 if opened else 422)

    def _open_upload(self, path: Path, role: str) -> bool:
        opened = self._open_reference(path) if role == "reference" else self._open_scan(path)
        if not opened:
            self.session.discard_upload(path)  # refused: nothing of it stays on the server
        elif role != "reference":
            self.state.scan_source = None  # the scan shown is the upload, no longer the one picked
        return opened

    # ------------------------------------------------------------------------------------------
    # Running

    def run(self, compare: bool = False) -> None:
        s = self.state
        if s.device not in DEVICE.choices:  # refused as it came; checked again where it is used
            s.error = f"device {str(s.device)[:40]!r} is not one of {', '.join(DEVICE.choices)}."
            return
        models = list(s.compare_models) if compare else [s.model]
        if compare:
            models = ([s.model] if s.model and s.model not in models else []) + models
        if compare and len(models) < 2:
            s.error = "tick at least one more model to compare with."
            return
        if compare:
            self._prepare_compare_views(models)
        try:
            self.session.start(models, device=s.device, opacity=s.opacity, on_progress=self._on_progress,
                               on_finished=self._on_finished)
        except Exception as err:
            self._fail(err)
            return
        s.error = ""
        s.running = True
        s.progress = 0
        s.status = f"running {', '.join(models)}..."
        create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            with self.state:
                going = self.session.poll()
            if not going:
                break
            await asyncio.sleep(POLL_S)

    def _on_progress(self, job_state) -> None:
        self.state.progress = round(100 * job_state.fraction)
        self.state.status = job_state.message

    def _on_finished(self, job_state) -> None:
        s = self.state
        s.running = False
        s.status = job_state.message + (f" (device: {job_state.device})" if job_state.device else "")
        if job_state.status == "failed":
            s.error = job_state.message
        if job_state.status != "done":
            return  # the previous results are still in the scene and the page
        s.progress = 100
        compare = len(job_state.results) > 1
        s.compare_labels = [r.model_id for r in job_state.results] if compare else []
        self._set_layout(COMPARE_LAYOUT if compare else RESULT_LAYOUT)
        self._show_results_state()
        self._centre_views()

    def cancel(self) -> None:
        self.session.cancel()

    def _prepare_compare_views(self, models: list[str]) -> None:
        """The comparison views exist before the job ends, as Slicer's layout manager makes them, so that
        the module's show_comparison finds them; they are shown only once the job is done."""
        xml = comparison.layout_xml(models, with_table=False)
        self.layouts.register_layout(COMPARE_LAYOUT, slicer_layout_to_vue(xml))

    # ------------------------------------------------------------------------------------------
    # Results

    def _show_results_state(self) -> None:
        s = self.state
        s.results = [{"title": f"{r.model_id}: {r.name}", "value": r.name} for r in self.session.results]
        s.current_result = self.session.current.name if self.session.current else None
        self._show_threshold_range()
        self._show_threshold()
        self._show_table()

    def _on_current_result(self, current_result, **_) -> None:
        if current_result is None:
            return
        self.session.select(current_result)
        if self.state.layout_name in (RESULT_LAYOUT, RESTORATION_LAYOUT):
            self._set_layout(self.state.layout_name)
        self._show_threshold_range()
        self._show_threshold()

    def _show_threshold_range(self) -> None:
        """The slider's range, set once per result: a range that moved with the value would redraw the
        slider under the user's hand."""
        self.state.threshold_max = round(self.session.threshold_range()[1], 4)

    def _show_threshold(self) -> None:
        s, result = self.state, self.session.current
        if result is None:
            s.threshold_choices, s.threshold_policy, s.threshold_value = [], None, 0.0
            s.legend = {**s.legend, "low": "", "high": ""}
            return
        s.threshold_choices = self.session.threshold_choices()
        s.threshold_policy = result.threshold_source if result.threshold_source in result.thresholds else "manual"
        s.threshold_value = round(result.threshold, 4)
        low, top = scene_logic.heatmap_window(result)
        s.legend = {**s.legend, "low": f"{low:.3g}", "high": f"{top:.3g}"}

    def _on_threshold_policy(self, threshold_policy, **_) -> None:
        result = self.session.current
        if result is None or threshold_policy in (None, "manual") or threshold_policy == result.threshold_source:
            return
        self._apply_threshold(threshold_policy)

    def _on_threshold_value(self, threshold_value, **_) -> None:
        result = self.session.current
        if result is None or threshold_value is None or abs(float(threshold_value) - result.threshold) < 1e-6:
            return  # the page echoing a value the server set
        self._apply_threshold(float(threshold_value))

    def _apply_threshold(self, choice) -> None:
        try:
            self.session.set_threshold(choice)
            self.state.error = ""
        except Exception as err:
            self._fail(err)
        self._show_threshold()
        self._show_table()

    def _on_opacity(self, opacity, **_) -> None:
        self.session.set_opacity(float(opacity))

    def _show_table(self) -> None:
        headers, rows = self.session.table()
        keep = [h for h in headers if any(row.get(h) for row in rows)]  # columns this run filled
        self.state.table_headers = [{"title": h, "key": h} for h in keep]
        self.state.table_rows = rows

    def download(self, kind: str):
        """{name, data}: one file of the current result, as a binary attachment for the browser."""
        try:
            name, data = self.session.export(kind)
        except Exception as err:
            self._fail(err)
            return None
        return {"name": name, "data": self.server.protocol.addAttachment(data)}

    # ------------------------------------------------------------------------------------------
    # Views

    def _set_layout(self, name: str) -> None:
        if name not in (RESULT_LAYOUT, RESTORATION_LAYOUT, COMPARE_LAYOUT):
            name = RESULT_LAYOUT  # a name the page never sends
        if name == COMPARE_LAYOUT and len(self.session.results) < 2 or (
                name == RESTORATION_LAYOUT and self.session.current is None):
            name = RESULT_LAYOUT
        if name in (RESULT_LAYOUT, RESTORATION_LAYOUT):
            self.session.show_current(float(self.state.opacity))
        self.layouts.set_layout(name)
        if name == RESTORATION_LAYOUT:  # the view exists once its layout is shown
            self.session.show_restoration(RESTORED_VIEW, self.state.beside)
            self._link_views()
            self._match_restored_view()
        self.state.layout_name = name

    def _link_views(self) -> None:
        """The three result views move together (Slicer's linked control), as in Slicer's own layouts."""
        scene = self.slicer_app.scene
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            composite.SetLinkedControl(True)

    def _match_restored_view(self) -> None:
        """The restored view shows what the axial view shows: same slice, same zoom."""
        views = {v.get_view_node().GetLayoutName(): v for v in self.slicer_app.view_manager.get_slice_views()}
        axial, restored = views.get(THREE_VIEWS[0].singleton_tag), views.get(RESTORED_VIEW)
        if axial is None or restored is None:
            return
        source, target = axial.get_view_node(), restored.get_view_node()
        target.SetFieldOfView(*source.GetFieldOfView())
        target.GetSliceToRAS().DeepCopy(source.GetSliceToRAS())
        target.UpdateMatrices()
        if axial._fitted_fov is not None:  # both on the scan's grid: a resize fits both alike
            restored.mark_fitted()
        restored.schedule_render()

    def _centre_views(self) -> None:
        """Every view on the largest anomaly (or the scan's centre when nothing was flagged)."""
        ras = self.session.anomaly_centre_ras()
        for view in self.slicer_app.view_manager.get_slice_views():
            view.reset_view()
            if ras is not None:
                view.get_view_node().JumpSliceByOffsetting(*ras)
            view.schedule_render()

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------------------------------
    # The page

    def _build_ui(self) -> None:
        with SinglePageWithDrawerLayout(self.server, width=380) as self.ui:
            client.Style(PAGE_CSS)
            self.ui.title.set_text("NormativeAD")
            self.ui.footer.hide()  # trame's "powered by" bar would cover the page's last row
            with self.ui.toolbar:
                v3.VSpacer()
                html.Span("Research software: not a medical device, not for diagnosis.", classes="text-caption mr-4")
            with self.ui.drawer:
                self._build_inputs()
                self._build_model()
                self._build_run()
                self._build_threshold()
            with self.ui.content:
                with v3.VContainer(fluid=True, classes="pa-2"):
                    v3.VAlert(v_if="error", text=("error",), type="error", density="compact", id="na-error",
                              closable=True, classes="mb-2", **{"click:close": "error = ''"})
                    with html.Div(classes="d-flex", v_if=f"layout_name === '{COMPARE_LAYOUT}'", id="na-compare-labels"):
                        html.Div("{{ label }}", v_for="label in compare_labels", key="label",
                                 classes="text-center text-subtitle-2", style="flex: 1 1 0;")
                    with html.Div(style=f"height: {VIEWS_HEIGHT}; position: relative;", id="na-views"):
                        self.layouts.initialize_layout_grid(self.ui)
                    self._build_legend()
                    self._build_downloads()
                    self._build_table()

    def _build_inputs(self) -> None:
        with v3.VCard(title="Scan", flat=True, classes="pb-0"):
            with v3.VCardText():
                v3.VSelect(label="Open", items=("sources",), v_model=("scan_source",), density="compact",
                           id="na-scan-source", hide_details=True, classes="mb-2")
                v3.VFileInput(label="or upload a scan", density="compact", id="na-scan-upload", hide_details=True,
                              prepend_icon="mdi-upload", change=_upload_js("scan"), classes="mb-2")
                v3.VSelect(label="Reference segmentation (optional)", items=("reference_sources",),
                           v_model=("reference_source",), density="compact", id="na-reference-source",
                           hide_details=True, classes="mb-2", disabled=("!scan_name",))
                v3.VFileInput(label="or upload a reference", density="compact", id="na-reference-upload",
                              hide_details=True, prepend_icon="mdi-upload", change=_upload_js("reference"),
                              disabled=("!scan_name",))
                html.Div("Largest upload: {{ max_upload_mb }} MB", classes="text-caption mt-1")

    def _build_model(self) -> None:
        with v3.VCard(title="Model", flat=True):
            with v3.VCardText():
                v3.VSelect(label="Model", items=("models",), v_model=("model",), density="compact",
                           id="na-model", hide_details=True, classes="mb-2")
                with html.Div(classes="text-caption na-card", id="na-card", v_if="card.id"):
                    html.Div("<b>{{ card.id }}</b> {{ card.version }}: {{ card.family }}, contrasts "
                             "<b>{{ card.contrast }}</b>")
                    html.Div("Trained on: {{ card.training }}")
                    html.Div("Figures: {{ card.figures }}")
                    html.Div("Thresholds: {{ card.thresholds }} (default {{ card.default_threshold }})")
                v3.VSelect(label="Device", items=("devices",), v_model=("device",), density="compact",
                           id="na-device", hide_details=True, classes="mt-2")

    def _build_run(self) -> None:
        with v3.VCard(title="Run", flat=True):
            with v3.VCardText():
                with html.Div(classes="d-flex ga-2"):
                    v3.VBtn("Run", color="primary", id="na-run", click=self.run,
                            disabled=("running || !scan_name || !model",))
                    v3.VBtn("Cancel", color="error", id="na-cancel", click=self.cancel, v_if="running")
                v3.VProgressLinear(model_value=("progress",), height=8, classes="my-2", id="na-progress",
                                   color="primary")
                html.Div("{{ status }}", classes="text-caption", id="na-status")
                v3.VSelect(label="Compare with", items=("models",), v_model=("compare_models",), multiple=True,
                           chips=True, density="compact", id="na-compare-models", hide_details=True, classes="mt-2")
                v3.VBtn("Compare", id="na-compare", click=(self.run, "[true]"), classes="mt-2",
                        disabled=("running || !scan_name || !compare_models.length",))

    def _build_threshold(self) -> None:
        with v3.VCard(title="Threshold and display", flat=True, v_if="current_result"):
            with v3.VCardText():
                v3.VSelect(label="Result", items=("results",), v_model=("current_result",), density="compact",
                           id="na-result", hide_details=True, classes="mb-2")
                v3.VSelect(label="Threshold", items=("threshold_choices",), v_model=("threshold_policy",),
                           density="compact", id="na-threshold-policy", hide_details=True, classes="mb-2")
                v3.VSlider(v_model=("threshold_value",), min=0, max=("threshold_max",), step=0.01,
                           thumb_label=True, density="compact", id="na-threshold", label="Value", hide_details=True)
                html.Div("threshold {{ threshold_value }}", classes="text-caption", id="na-threshold-value")
                v3.VSlider(v_model=("opacity",), min=0, max=1, step=0.05, density="compact", id="na-opacity",
                           label="Opacity", hide_details=True, classes="mt-2")
                with v3.VBtnToggle(v_model=("layout_name",), mandatory=True, density="compact", classes="mt-2",
                                   v_if="results.length > 0"):
                    v3.VBtn("Three views", value=RESULT_LAYOUT, id="na-layout-result")
                    v3.VBtn("Restoration", value=RESTORATION_LAYOUT, id="na-layout-restoration")
                    v3.VBtn("Compare", value=COMPARE_LAYOUT, id="na-layout-compare", v_if="results.length > 1")
                with v3.VBtnToggle(v_model=("beside",), mandatory=True, density="compact", classes="mt-1",
                                   v_if=f"results.length > 0 && layout_name === '{RESTORATION_LAYOUT}'"):
                    v3.VBtn("Pseudo-healthy", value="restoration", id="na-beside-restoration")
                    v3.VBtn("Uncertainty", value="uncertainty", id="na-beside-uncertainty")

    def _build_legend(self) -> None:
        with html.Div(classes="d-flex align-center ga-2 mt-1", v_if="current_result", id="na-legend"):
            html.Span("heatmap {{ legend.low }}", classes="text-caption")
            html.Div(style=("{background: legend.gradient, width: '240px', height: '12px', borderRadius: '2px'}",))
            html.Span("{{ legend.high }}", classes="text-caption")
            html.Span("yellow outline: anomaly segmentation; magenta: reference", classes="text-caption ml-4")

    def _build_table(self) -> None:
        v3.VDataTable(headers=("table_headers",), items=("table_rows",), density="compact", id="na-table",
                      v_if="table_rows.length", items_per_page=-1, hide_default_footer=True, classes="mt-2")

    def _build_downloads(self) -> None:
        with html.Div(classes="d-flex flex-wrap ga-2 mt-2", v_if="current_result", id="na-downloads"):
            v3.VBtn("{{ d.label }}", v_for="d in downloads", key="d.kind", size="small", prepend_icon="mdi-download",
                    id=("`na-download-${d.kind}`",),
                    click=f"trigger('{self.ctrl.trigger_name(self.download)}', [d.kind]).then("
                          "(r) => r && utils.download(r.name, r.data, 'application/octet-stream'))")


def run_parameter_state() -> dict:
    """The run's settings as the page starts, from their declaration (core/options.py)."""
    return {"devices": list(DEVICE.choices), "device": DEVICE.default, "opacity": DEFAULT_OPACITY}


def _upload_js(role: str) -> str:
    """Client side of an upload: refuse a file over the limit before sending it, else post it to UPLOAD_ROUTE
    (the server answers in the page's state; a failure of the connection itself is said here)."""
    return ("(f = $event.target.files) && f.length && (f[0].size > max_upload_bytes "
            f"? (error = `${{f[0].name}} is ${{Math.round(f[0].size / 1048576)}} MB; the limit of this server is "
            f"${{max_upload_mb}} MB (normativead web --max-upload-mb).`) "
            f": window.fetch(`{UPLOAD_ROUTE.lstrip('/')}?role={role}&name=${{encodeURIComponent(f[0].name)}}`, "
            f"{{method: 'POST', body: f[0], headers: {{'{UPLOAD_HEADER}': '1'}}}})"
            ".catch((e) => (error = `${f[0].name} could not be sent to the server (${e.message}).`)))")


def _bound_websocket_messages() -> None:
    """Cap what one websocket message may allocate (WEBSOCKET_MESSAGE_LIMIT): wslink's un-chunker takes the
    limit of an authenticated page as 4 GB and allocates a message's whole size from its first header."""
    from wslink import chunking, protocol

    class BoundedUnChunker(chunking.UnChunker):
        def set_max_message_size(self, size: int) -> None:
            super().set_max_message_size(min(size, WEBSOCKET_MESSAGE_LIMIT))

    if protocol.UnChunker is chunking.UnChunker:  # the one this process's handlers make per connection
        protocol.UnChunker = BoundedUnChunker


def _gradient_css(scene) -> str:
    """The heatmap colour table as a CSS gradient, for the colour bar beside the views."""
    colours = scene_logic.heatmap_color_node(scene)
    count = colours.GetNumberOfColors()
    stops = []
    for i in range(0, count, max(1, count // 16)):
        rgba = [0.0] * 4
        colours.GetColor(i, rgba)
        stops.append(f"rgb({round(255 * rgba[0])},{round(255 * rgba[1])},{round(255 * rgba[2])})")
    return f"linear-gradient(to right, {', '.join(stops)})"


PAGE_CSS = """
html { overflow-y: auto; }
.na-card div { margin-top: 2px; }
"""
