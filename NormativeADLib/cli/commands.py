"""The `normativead` command: restore, demo, models, train, evaluate, report, bench.

Exit codes: 0 success, 1 unexpected failure, 2 bad input, 3 model problem, 4 output problem,
130 cancelled (Ctrl-C or SIGTERM). With --progress json every event is one JSON line on stdout
(what the Slicer module reads); otherwise progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import shlex
import signal
import sys
import threading
from pathlib import Path

from ..core import jsontext, interrupts, locations, writes
from ..core.errors import Cancelled, InputError, NormativeADError, OutputError
from ..core.options import (CONTRASTS, DEVICE, DICOM_FORMAT, MODEL, RESTORE_FORMAT, SEED, THRESHOLD, RunParameter,
                            canonical_contrast)
from .reporter import MODES, Reporter


def _cancel_on_signals() -> threading.Event:
    """SIGINT/SIGTERM cancel the run at any moment, start-up included: they set the returned event
    (the pipeline checks it between steps) and raise KeyboardInterrupt where the run is, which main()
    answers with "cancelled", exit 130. Inside interrupts.interrupts_held() blocks (making the output
    folder, moving finished outputs into place, cleaning up) the signal waits for the block's end, so
    a cancel never leaves a half-written output. Returns the event; event.restore() puts the previous
    handlers back, event.finish() makes later signals no-ops (the run has ended, its answer is given).
    """
    cancel = threading.Event()
    state = {"finished": False}

    def handler(signum, frame):
        cancel.set()
        if state["finished"] or interrupts.hold_interrupt():
            return
        raise KeyboardInterrupt

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, handler)

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)

    cancel.restore = restore
    cancel.finish = lambda: state.update(finished=True)
    return cancel


def check_restore(args) -> Path:
    """Everything about a restore's command line that can be checked before the heavy imports:
    the files, the model, the threshold and the output folder (a mistake answers in well under a second)."""
    from ..core.catalogue import get_card
    from ..core.options import analysis_names, output_names, resolve_threshold
    from ..core.locations import case_name, check_input_file
    from ..core.writes import check_writable

    check_input_file(args.input, "scan", dicom=True)
    series = _dicom_series(args)
    args.others = [_other_volume(spec) for spec in getattr(args, "others", None) or ()]
    for path, _ in args.others:
        check_input_file(path, "study volume (--with)", dicom=True)
    if args.model is None and args.others:  # several contrasts together need a study model
        from ..core.catalogue import default_study_model

        args.model = default_study_model()
    elif args.model is None:  # the best measured model for the scan's contrast (catalogue.default_model)
        from ..core.catalogue import default_model
        from ..core.options import guess_contrast

        named = guess_contrast(Path(args.input).name)
        if not named and series is not None:
            from ..io.dicom import described_contrast

            named = described_contrast(series)
        args.model = default_model(args.contrast or named)
    for flag, what in (("mask", "mask"), ("reference", "reference")):
        if getattr(args, flag):
            check_input_file(getattr(args, flag), what)
    if args.transform and not Path(args.transform).is_file():
        raise FileNotFoundError(f"transform file not found: {args.transform}")
    card = get_card(args.model)
    resolve_threshold(args.threshold, card.offered_thresholds(), card.id, card.default_threshold)
    out = Path(args.out) if args.out else Path(f"normativead_{case_name(args.input)}")
    # the pseudo-healthy image alone compresses to about the scan's file size: a full disk answers now
    others = _named_contrasts(card, args) if args.others else []
    names = (output_names if args.figures else analysis_names)(args.format, others, args.uncertainty)
    if series is not None and out.resolve() == series.folder.resolve():
        raise OutputError(f"--out {out} is the DICOM series' own folder: outputs there would be read as other series "
                          "of it next time; choose another --out.")
    if series is not None:
        from ..io.dicom import series_bytes

        size = series_bytes(series)
    else:
        size = Path(args.input).stat().st_size
    need = size * (1 + 2 * len(others))
    check_writable(out, names, args.overwrite, need_bytes=need)
    return out


def _dicom_series(args):
    """The DICOM series of a restore's scan (None for an image file), checked before the heavy imports; and
    --format dicom refused for a scan that is no DICOM series: its outputs reference the scan's images."""
    from ..core.locations import is_dicom_input

    if not is_dicom_input(args.input):
        if args.format == DICOM_FORMAT:
            raise InputError(f"--format dicom writes a DICOM SEG and Parametric Maps that reference the scan's own "
                             f"DICOM images, and {Path(args.input).name} is no DICOM series: give the series' folder "
                             "as the scan, or choose --format nifti or nrrd.")
        return None
    from ..io.dicom import find_series  # SimpleITK and pydicom, not torch

    return find_series(args.input)


def _other_volume(spec: str) -> tuple[str, str | None]:
    """--with [CONTRAST=]FILE -> (file, contrast or None for the file name's)."""
    head, sep, tail = spec.partition("=")
    if sep and head.strip().lower() in {c.lower() for c in CONTRASTS}:
        return tail, head
    return spec, None


def _named_contrasts(card, args) -> list[str]:
    """The contrasts of the study's other volumes, checked against the model (before the heavy imports)."""
    from ..core.options import guess_contrast, study_contrasts

    first = args.contrast or guess_contrast(Path(args.input).name) or card.trained_contrasts[0]
    return study_contrasts(card, first, args.others)


def cmd_restore(args, reporter: Reporter) -> int:
    out = check_restore(args)
    cancel = getattr(args, "cancel", None) or _cancel_on_signals()
    # One run per output folder: a second run to the same --out refuses now (exit 4) rather than
    # silently replacing this one's outputs; the claim lasts until the outputs are in place.
    with writes.claim_output_dir(out):
        from .. import io  # SimpleITK and nibabel, not torch: a bad file answers before the heavy imports

        reporter.progress("read", 0.0, f"checking {Path(args.input).name}")
        io.check_inputs(args.input, args.mask, args.reference, args.transform,
                        dicom_output=args.format == DICOM_FORMAT)
        for path, _ in args.others:
            io.check_inputs(path)
        from ..pipeline import analysis

        result = analysis.analyse(args.input, args.model, args.mask, args.reference, args.threshold, args.device,
                                  seed=args.seed, transform_path=args.transform, progress=reporter.progress,
                                  cancel=cancel, contrast=args.contrast, others=args.others,
                                  uncertainty=args.uncertainty)
        if cancel.is_set():
            raise Cancelled("run cancelled")
        reporter.progress("write", 0.97, f"writing outputs to {out}")
        in_place = []

        def outputs_in_place() -> None:
            in_place.append(out)
            # a front end reading JSON shows the overlay now, while the figures are drawn
            reporter.event("done", out=str(out), metrics=result.metrics)
            if args.figures:
                reporter.progress("figures", 0.98, "drawing report.png and registration.png")

        try:
            with writes.expected_output_size(_output_bytes(result)):
                # a front end reading JSON gets "done" before the figures; a script's run stays all or nothing
                analysis.write_outputs(result, out, args.format, args.overwrite, figures=args.figures,
                                       before_figures=outputs_in_place if reporter.for_machines else None)
        except KeyboardInterrupt:
            if in_place:
                raise Cancelled("cancelled while the figures were drawn (report.png or registration.png is "
                                "missing; the other outputs are complete)", outputs=out) from None
            raise
        if cancel.is_set():  # the signal came while the finished outputs were moved into place
            raise Cancelled("cancelled after the outputs were complete", outputs=out)
    reporter.close()
    if reporter.for_machines:
        if args.figures:
            reporter.event("figures", out=str(out))
    else:
        _print_summary(result.metrics, out, args.json, reporter)
    return 0


def _output_bytes(result) -> int:
    """The most the outputs of a run can take on disk: the images uncompressed, plus the report."""
    from ..pipeline.analysis import result_images

    images = result_images(result).values()
    return sum(im.GetNumberOfPixels() * im.GetNumberOfComponentsPerPixel() * im.GetSizeOfPixelComponent()
               for im in images) + 2_000_000


def _print_summary(metrics: dict, out: Path, as_json: bool, reporter: Reporter) -> None:
    if as_json:
        print(jsontext.dumps({"out": str(out), "metrics": metrics}, indent=2))
        return
    per_case = metrics["per_case"]
    lines = [
        f"case {metrics['case']} | model {metrics['model']['id']} | device {metrics['device']} | {metrics['seconds']} s",
        f"threshold {metrics['threshold']['source']} = {metrics['threshold']['value']:.4f}",
        f"anomaly volume {per_case['anomaly_volume_ml']:.2f} mL in {per_case['n_components']} components "
        f"(largest {per_case['largest_component_ml']:.2f} mL)",
        f"case score {per_case['case_score']:.4f}, at or above {_percent(per_case['healthy_percentile'])} "
        "of healthy calibration scans",
        f"restoration outside the anomaly: SSIM {per_case['ssim_outside_anomaly']:.3f}, MAE {per_case['mae_outside_anomaly']:.4f}",
        f"inside the anomaly: SSIM {_number(per_case['ssim_inside_anomaly'])}; "
        f"CACI {_number(per_case['caci'])} (1: keeps healthy tissue, changes the anomaly; 0: copies it)",
    ]
    ref = metrics.get("reference")
    if ref:
        lines.insert(0, f"the reference marks {ref['reference_volume_ml']:.1f} mL of lesion in {ref['n_reference_lesions']} "
                        f"lesions; the model flagged {per_case['anomaly_volume_ml']:.1f} mL in {per_case['n_components']} "
                        f"components and found {round(ref['lesion_detection_rate'] * ref['n_reference_lesions'])} of the "
                        f"{ref['n_reference_lesions']} lesions (Dice {ref['dice']:.2f})")
        lines.append(f"vs reference: Dice {ref['dice']:.3f}, AUPRC {ref['auprc']:.3f}, AUROC {ref['auroc']:.3f}, "
                     f"lesions detected {ref['lesion_detection_rate']:.2f}, false-positive components "
                     f"{ref['false_positive_components']}; CACI with the reference {_number(ref['caci_reference'])}")
    contrast = metrics["contrast"]
    lines.insert(1, f"scan contrast {contrast['scan']} ({contrast['source']}); model trained for "
                    f"{', '.join(contrast['model_contrasts'])}")
    lines.append(f"outputs in {out}/")
    print("\n".join(lines))
    for warning in (contrast["warning"], contrast["evidence"]["warning"]):
        if warning:
            print(f"normativead: warning: {warning}", file=sys.stderr)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _percent(value: float | None) -> str:
    return "an unknown share (no calibration scores in the card)" if value is None else f"{value:.0f} %"


def cmd_demo(args, reporter: Reporter) -> int:
    from ..core.catalogue import get_card
    from ..core.locations import SAMPLE_SCANS, sample_case

    card = get_card(args.model)
    # a model of several contrasts (sadm-synth: "any") runs on the first of them the sample ships in
    contrast = next((c for c in card.trained_contrasts if c in SAMPLE_SCANS), card.contrast)
    scan, lesion = sample_case(contrast)
    args.input, args.reference, args.mask, args.transform, args.contrast = str(scan), str(lesion), None, None, None
    args.others = []
    args.threshold = None  # the card's default
    args.out = args.out or "normativead_demo"
    return cmd_restore(args, reporter)


def cmd_models(args, reporter: Reporter) -> int:
    from ..core import catalogue

    if args.action == "import":
        if not args.folder:
            raise InputError("normativead models import FOLDER: give the model folder (card.json and weights).")
        card = catalogue.import_model(args.folder, overwrite=args.overwrite)
        print(f"imported {card.id} into {card.folder}")
        return 0
    cards, broken = catalogue.scan_models()
    if args.json:
        print(jsontext.dumps([{**c.to_dict(), "folder": str(c.folder)} for c in cards]
                         + [{"folder": str(b.folder), "broken": b.reason} for b in broken], indent=2))
        return 0
    print(f"{'id':<16} {'family':<9} {'version':<8} {'contrasts':<26} {'default threshold':<18} {'figures':<42} where")
    for c in cards:
        value = c.offered_thresholds().get(c.default_threshold)
        default = f"{c.default_threshold} {'per case' if value is None else f'{value:.4g}'}"
        if c.contrast_thresholds:  # "p95 0.95; T1, FLAIR p50"
            by_policy: dict[str, list[str]] = {}
            for contrast, policy in c.contrast_thresholds.items():
                by_policy.setdefault(policy, []).append(contrast)
            default += "; " + "; ".join(f"{', '.join(cs)} {p}" for p, cs in by_policy.items())
        print(f"{c.id:<16} {c.family:<9} {c.version:<8} {c.contrast_summary:<26} {default:<18} {c.figures_summary():<42} {c.folder}")
    for b in broken:
        print(f"{b.folder.name:<16} broken: {b.reason}")
    return 0


def cmd_train(args, reporter: Reporter) -> int:
    from ..core.locations import home
    from ..training.train import load_config, train

    config = load_config(args.config, args.family)
    out = Path(args.out) if args.out else home() / "models" / config["id"]
    train(config, Path(args.data) if args.data else None, out, Path(args.split) if args.split else None, args.epochs,
          Path(args.cache) if args.cache else None, args.overwrite, args.resume,
          command=_command(args), device=args.device,
          log=lambda m: print(m, file=sys.stderr, flush=True), init_from=args.init_from)
    return 0


def cmd_calibrate(args, reporter: Reporter) -> int:
    if args.site is not None:  # a bad site id fails now, not after the model is loaded
        locations.checked_name(args.site, "site id (--as)")
    from ..training.train import recalibrate

    if args.select_only and args.site is not None:
        raise InputError("--select-only and --as do not go together: a site copy keeps the original's default policy.")
    card = recalibrate(args.model, Path(args.data), Path(args.cache) if args.cache else None, _command(args),
                       log=lambda m: print(m, file=sys.stderr, flush=True), device=args.device, site=args.site,
                       select_only=args.select_only)
    print(f"model {card.id} calibrated (default policy {card.default_threshold}): select it with --model {card.id}")
    return 0


def _command(args) -> str:
    """The command line as run, recorded in the card it changes."""
    return "normativead " + " ".join(shlex.quote(a) for a in args.argv)


def _contrast(text: str) -> str:
    try:
        return canonical_contrast(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_parameter(parser, parameter: RunParameter, **changes) -> None:
    """A run parameter as its declaration (core/options.py) states it; changes: what this command adds."""
    flag, keywords = parameter.argument(**changes)
    parser.add_argument(flag, **keywords)


def parser() -> argparse.ArgumentParser:
    from ..core.catalogue import DEMO_MODEL

    p = argparse.ArgumentParser(prog="normativead", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def run_options(sp, need_input: bool):
        if need_input:
            sp.add_argument("input", help="brain MRI: .nii, .nii.gz, .nrrd, .mha, or a DICOM series (its folder, "
                                           "or one of its files)")
            sp.add_argument("--mask", help="brain mask on the scan's grid (else found automatically)")
            sp.add_argument("--reference", help="reference lesion mask on the scan's grid: adds Dice/AUPRC/AUROC")
            add_parameter(sp, THRESHOLD)
            sp.add_argument("--transform", help="transform.tfm of an earlier run on this scan: skip registration")
            sp.add_argument("--contrast", type=_contrast, metavar="|".join(CONTRASTS),
                            help="the scan's contrast (default: from its file name, e.g. sub-1_T2w, flair.nii.gz)")
            sp.add_argument("--with", dest="others", nargs="+", metavar="[CONTRAST=]FILE",
                            help="other volumes of the same subject's study (t2.nii.gz FLAIR=scan3.nii.gz): each is "
                                 "registered to the scan and read with it by a study model; the contrast comes from "
                                 "the file name unless named")
        # demo's scan is the sample case, and its model the one shown with it
        demo_model = {"help": f"{MODEL.help.split(';')[0]}; default: {DEMO_MODEL}"}
        add_parameter(sp, MODEL, **({} if need_input else demo_model))
        add_parameter(sp, DEVICE)
        sp.add_argument("--out", help="output folder")
        add_parameter(sp, RESTORE_FORMAT)
        sp.add_argument("--overwrite", action="store_true", help="replace existing outputs")
        sp.add_argument("--no-figures", dest="figures", action="store_false",
                        help="skip report.png and registration.png (about 2 s; for front ends that show the results)")
        sp.add_argument("--no-uncertainty", dest="uncertainty", action="store_false",
                        help="skip the uncertainty map (a second pass on the scan mirrored left-right)")
        add_parameter(sp, SEED)
        sp.add_argument("--json", action="store_true", help="print the result as JSON")
        sp.add_argument("--progress", default="bar", choices=MODES)

    run_options(sub.add_parser("restore", help="analyse one scan"), True)
    run_options(sub.add_parser("demo", help="analyse the shipped sample case with the shipped model"), False)
    models = sub.add_parser("models", help="list models, or import a model folder (offline sites)")
    models.add_argument("action", nargs="?", default="list", choices=["list", "import"])
    models.add_argument("folder", nargs="?", help="folder with card.json and weights (for import)")
    models.add_argument("--overwrite", action="store_true")
    models.add_argument("--json", action="store_true")
    tr = sub.add_parser("train", help="train and calibrate a model on healthy scans")
    tr.add_argument("--family", help="model family (ae, vae, dae, ddpm, pddpm, cddpm, autoddpm, sadm, intensity): "
                                     "with it --config "
                                     "may name a shipped size (small, published)")
    tr.add_argument("--config", required=True, help="config JSON, or the name of a shipped one (ae_small)")
    tr.add_argument("--data", help="folder of healthy scans (IXI T1); not needed by the intensity baseline")
    tr.add_argument("--split", help="subject split JSON; its data and licence keys go into the card "
                                    "(default: Resources/Splits/ixi_t1.json)")
    tr.add_argument("--out", help="model folder to write (default: the user model cache)")
    tr.add_argument("--epochs", type=int, help="override the config's epochs")
    tr.add_argument("--cache", help="cache of preprocessed scans (default: NORMATIVEAD_HOME/prepared)")
    tr.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    tr.add_argument("--init-from", metavar="MODEL", help="start from the weights of an installed model with the same "
                                                          "family and network (a segmenter's restorer may differ; "
                                                          "recorded in the card)")
    tr.add_argument("--overwrite", action="store_true")
    add_parameter(tr, DEVICE)
    cal = sub.add_parser("calibrate", help="calibrate a trained model's thresholds again (weights untouched)")
    cal.add_argument("--model", required=True, help="model id (see `normativead models`)")
    cal.add_argument("--data", required=True, help="folder of healthy scans: the card's calibration subjects, or "
                                                    "with --as a site's own healthy scans")
    cal.add_argument("--cache", help="cache of preprocessed scans (default: NORMATIVEAD_HOME/prepared)")
    add_parameter(cal, DEVICE)
    cal.add_argument("--select-only", action="store_true",
                     help="thresholds untouched: only choose the default policy again on healthy validation scans "
                          "with synthetic anomalies")
    cal.add_argument("--as", dest="site", metavar="SITE_ID",
                     help="calibrate on every healthy scan in --data (your scanner's) into a new model ID@SITE_ID; "
                          "the original stays as it is")
    ev = sub.add_parser("evaluate", help="Dice/AUPRC/AUROC of a model over labelled cases")
    ev.add_argument("--model", default=None)
    ev.add_argument("--cases", required=True, help="manifest JSON (see Resources/Cases/shared_dev.json)")
    ev.add_argument("--root", help="folder the manifest's paths are relative to (default: its own folder)")
    ev.add_argument("--out", required=True)
    add_parameter(ev, DEVICE)
    ev.add_argument("--overwrite", action="store_true")
    ev.add_argument("--record", action="store_true", help="also write the fpr5 figures into the model's card")
    rep = sub.add_parser("report", help="cohort report: RQI, AHI, CACI and detection figures per model")
    rep.add_argument("--models", nargs="+", required=True, help="model ids to compare")
    rep.add_argument("--healthy", required=True, help="folder of healthy scans (e.g. IXI T1)")
    rep.add_argument("--pathology", required=True,
                     help="manifest JSON of labelled cases, or a folder holding cases.json")
    rep.add_argument("--root", help="folder the manifest's paths are relative to (default: its own folder)")
    rep.add_argument("--out", required=True)
    rep.add_argument("--weights", help="folder holding the LPIPS/FID weight files (default: NORMATIVEAD_WEIGHTS, "
                                       "then the torch hub cache)")
    rep.add_argument("--max-unseen", type=int, default=10, help="unseen healthy scans to restore per model")
    rep.add_argument("--max-reference", type=int, default=20, help="healthy reference scans (FID's N)")
    add_parameter(rep, DEVICE)
    rep.add_argument("--overwrite", action="store_true")
    bench = sub.add_parser("bench", help="speed: seconds per volume against a slice-by-slice fp32 baseline")
    bench.add_argument("input", nargs="?", help="scan to time (default: the shipped sample case)")
    which = bench.add_mutually_exclusive_group()
    which.add_argument("--model", default=None)
    which.add_argument("--config", help="time a config's network untrained (e.g. cddpm_published): speed only")
    add_parameter(bench, DEVICE)
    bench.add_argument("--runs", type=int, default=3)
    for name, module in extension_commands().items():
        command = importlib.import_module(module)
        command.add_arguments(sub.add_parser(name, help=command.HELP))
    return p


def cmd_evaluate(args, reporter: Reporter) -> int:
    from ..evaluation.evaluate import evaluate, read_manifest, record_in_card, write_evaluation
    from ..core.writes import check_writable

    out = Path(args.out)
    check_writable(out, ["evaluation.json"], args.overwrite)
    cases = read_manifest(Path(args.cases), Path(args.root) if args.root else None)
    report = evaluate(args.model, cases, args.device, log=lambda m: print(m, file=sys.stderr, flush=True))
    write_evaluation(report, out, args.overwrite)
    if args.record:
        card_path = record_in_card(report, _command(args))
        print(f"figures at the default threshold recorded in {card_path}", file=sys.stderr)
    for source, s in report["summary"].items():
        mean = s["per_volume_mean"]
        value = s["threshold"] if isinstance(s["threshold"], str) else f"{s['threshold']:.4f}"  # "per case": adaptive
        print(f"{source:<30} t={value:<8}  Dice {mean['dice']:.3f} (pooled {s['pooled_dice']:.3f})  "
              f"AUPRC {mean['auprc']:.3f}  AUROC {mean['auroc']:.3f}")
    print(f"pooled over voxels: AUPRC {report['pooled']['auprc']:.3f}, AUROC {report['pooled']['auroc']:.3f}; "
          f"written to {out}/")
    return 0


def cmd_report(args, reporter: Reporter) -> int:
    from ..evaluation.report import cohort_report, table_rows, write_cohort_report
    from ..evaluation.evaluate import read_manifest
    from ..core.writes import check_writable

    out = Path(args.out)
    check_writable(out, ["report.json", "report.html"], args.overwrite)
    cases = read_manifest(Path(args.pathology), Path(args.root) if args.root else None)
    report, examples = cohort_report(args.models, args.healthy, cases, args.device, args.max_unseen,
                                     args.max_reference, args.weights,
                                     log=lambda m: print(m, file=sys.stderr, flush=True))
    write_cohort_report(report, examples, out, args.overwrite)
    rows = table_rows(report)
    headers = list(rows[0])
    print("  ".join(f"{h:>12}" for h in headers))
    for row in rows:
        print("  ".join(f"{row[h]:>12}" if isinstance(row[h], str) else
                        f"{'n/a' if row[h] is None else f'{row[h]:.3f}':>12}" for h in headers))
    print(f"written to {out}/report.html")
    return 0


def cmd_bench(args, reporter: Reporter) -> int:
    from ..core.locations import sample_case
    from ..evaluation.bench import run, untrained
    from ..models.registry import load_model

    scan_path = Path(args.input) if args.input else sample_case()[0]
    if args.config:
        result = run(scan_path, untrained(args.config), args.device, args.runs, whole_case=False)
    else:
        result = run(scan_path, load_model(args.model), args.device, args.runs)
    print(jsontext.dumps(result, indent=2))
    return 0


# Commands that live in their own module: it defines HELP, add_arguments(parser) and run(args, reporter) and
# keeps its heavy imports (dask, trame) inside run(), so that `normativead --help` stays fast and light.
LIBRARY_COMMANDS = {"batch": "NormativeADLib.cli.batch", "anomalies": "NormativeADLib.cli.anomalies"}
# Front ends built on the library (the web viewer) add theirs as entry points of this group, each naming
# such a module: the library never names them.
FRONT_END_GROUP = "normativead.commands"


def extension_commands() -> dict[str, str]:
    """{command: module} of the library's own extension commands and the installed front ends'."""
    from importlib.metadata import entry_points

    front_ends = {ep.name: ep.value for ep in entry_points(group=FRONT_END_GROUP)}
    return {**front_ends, **LIBRARY_COMMANDS}


def _extension(module: str):
    return lambda args, reporter: importlib.import_module(module).run(args, reporter)


COMMANDS = {"restore": cmd_restore, "demo": cmd_demo, "models": cmd_models, "train": cmd_train,
            "calibrate": cmd_calibrate, "evaluate": cmd_evaluate, "report": cmd_report, "bench": cmd_bench}


def _exit(reporter: Reporter, message: str, code: int, prefix: str = "error: ") -> int:
    """How every failed or cancelled run ends: the progress closed, the message as a JSON event (for
    --progress json) and on stderr, and the exit code returned."""
    reporter.close()
    if reporter.for_machines:
        reporter.event("error", message=message, exit_code=code)
    print(f"normativead: {prefix}{message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    # First of all: from here on a Ctrl-C or SIGTERM answers "cancelled", exit 130, never a traceback.
    cancel = _cancel_on_signals()
    as_program = argv is None
    reporter = Reporter("none")
    command = None
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = parser().parse_args(argv)
        command = args.command
        args.argv = argv
        args.cancel = cancel
        if getattr(args, "model", "x") is None and args.command != "restore":  # restore: by the scan's contrast
            from ..core.catalogue import DEMO_MODEL, default_model

            args.model = DEMO_MODEL if args.command == "demo" else default_model()
        reporter = Reporter(getattr(args, "progress", "none"))
        command_fn = COMMANDS.get(args.command) or _extension(extension_commands()[args.command])
        return command_fn(args, reporter)
    except (Cancelled, KeyboardInterrupt) as err:
        outputs = getattr(err, "outputs", None)
        if outputs:
            message = f"{err}; the outputs are in {outputs}/"
        elif command in (None, "restore", "demo", "evaluate", "report"):  # they write all or nothing
            message = "cancelled; nothing was written."
        else:
            message = "cancelled."
        return _exit(reporter, message, Cancelled.exit_code, prefix="")
    except (NormativeADError, FileNotFoundError, FileExistsError) as err:
        return _exit(reporter, str(err), getattr(err, "exit_code", 2))
    except OSError as err:
        if err.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise
        where = f" writing {err.filename}" if err.filename else ""
        return _exit(reporter, f"no space left on the device{where}; free space there or choose another --out.", 4)
    finally:
        cancel.finish()  # the answer is given: a late signal changes nothing
        if not as_program:  # called from Python (tests, scripts): give the caller its handlers back
            cancel.restore()

