"""``ditscale eval SAMPLES --ref REF``: the quality metrics of a sample batch against a reference batch.

SAMPLES and REF are ADM-format ``.npz`` batches (``arr_0`` uint8 (N, H, W, 3); a reference may carry
only its Inception statistics ``mu, sigma, mu_s, sigma_s``) or folders of images. Two evaluators:

- ``shapes`` (default): the shipped shapes evaluator (no download): Fréchet distance, precision/recall
  and the accuracy of class labels or captions stored with the samples (``labels``/``label_names``/``captions``):
  overall and, for captions, per attribute (shape, colour, size, count, position, background; JSON keys
  ``accuracy_<attribute>``, as a study's quality.csv names them);
- ``inception`` (chosen by ``--inception FILE``): ADM's FID, sFID, Inception Score and precision/recall
  with pytorch-fid's FID-Inception weights (``pt_inception-2015-12-05-6726825d.pth``, never downloaded).

Each score is printed beside its frame (:mod:`ditscale.metrics.frame`): the real-vs-real value of two
halves of the reference at the samples' count (FD, precision, recall), and for an accuracy its chance
level (real images, shuffled labels) and the real images' own accuracy; ``--json`` adds them as
``chance``, ``ceiling``, ``floor``, ``floor_images`` and ``frame_notes``.

Examples::

    ditscale eval samples.npz --ref reference.npz --json
    ditscale eval samples.npz --ref VIRTUAL_imagenet256_labeled.npz --inception pt_inception-2015-12-05-6726825d.pth
    ditscale eval samples.npz --ref real_images/ --inception pt_inception.pth --save-ref-stats ref_stats.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from types import MappingProxyType
from typing import Any

from ditscale.cli.args import add_threads_argument, count, device, examples
from ditscale.errors import WARNING, ConfigError
from ditscale.io import check_apart, check_output_file
from ditscale.train.threads import set_threads

EVALUATORS = ("shapes", "inception")
MODES = ("adm", "pytorch-fid")
DEFAULT_BATCH_SIZE = MappingProxyType({"inception": 50, "shapes": 256})
# JSON key -> the table's row name
ROW_NAMES = MappingProxyType(
    {
        "fid": "FID",
        "sfid": "sFID",
        "inception_score": "Inception Score",
        "fd": "FD (shapes features)",
        "accuracy": "accuracy",
        "precision": "precision",
        "recall": "recall",
        "num_samples": "samples",
    }
)
# the named accuracies that equal "accuracy" (all of a caption's attributes right; a label's class)
OVERALL_ALIASES = ("accuracy_all", "accuracy_class")


def row_name(key: str) -> str:
    """The table's name of JSON key ``key``: ROW_NAMES', or "  shape" for a named accuracy ("accuracy_shape")."""
    return ROW_NAMES.get(key) or ("  " + key.removeprefix("accuracy_") if key.startswith("accuracy_") else key)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval",
        help="FID/sFID/IS/precision/recall or the shapes evaluator's scores of a sample batch",
        description="Evaluate a sample batch (.npz with arr_0, or a folder of images) against a reference batch "
        "with ADM's Inception metrics (--inception FILE) or the shipped shapes evaluator (default).",
        epilog=examples(
            "ditscale eval samples.npz --ref ref.npz --json   # shapes evaluator: FD, P/R, accuracy, with floor and chance",
            "ditscale eval samples.npz --ref VIRTUAL_imagenet256_labeled.npz --inception pt_inception-2015-12-05-6726825d.pth",
            "ditscale eval samples.npz --ref real_images/ --inception pt_inception.pth --save-ref-stats ref_stats.npz",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("samples", metavar="SAMPLES", help="sample batch: .npz (arr_0 uint8 NHWC) or a folder of images")
    p.add_argument(
        "--ref",
        required=True,
        metavar="REF",
        help="reference batch: .npz (images and/or mu, sigma, mu_s, sigma_s) or a folder of images",
    )
    p.add_argument(
        "--evaluator",
        choices=EVALUATORS,
        default=None,
        help="inception (ADM's FID suite) or shapes (default, unless --inception is given)",
    )
    p.add_argument(
        "--inception",
        default=None,
        metavar="FILE",
        help="pytorch-fid's FID-Inception weights (pt_inception-2015-12-05-6726825d.pth); "
        "selects the inception evaluator",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="Inception preprocessing: adm (TF1 resize, as ADM's evaluator; default) or pytorch-fid",
    )
    p.add_argument(
        "--batch-size",
        type=count(1, 1 << 20),
        default=None,
        help="images per forward pass (default: 50 inception, 256 shapes)",
    )
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    add_threads_argument(
        p,
        "torch threads (default: torch's, one per core: the evaluator networks' convolutions are big "
        "enough to use them, unlike a small DiT's matrix products)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bars or notes")
    p.add_argument(
        "--save-ref-stats",
        default=None,
        metavar="FILE",
        help="also write the reference's Inception statistics (mu, sigma, mu_s, sigma_s) to this .npz, "
        "to pass as --ref later (inception evaluator)",
    )
    return p


def choose_evaluator(args: argparse.Namespace) -> str:
    """ "inception" or "shapes", after checking that the options fit the evaluator."""
    evaluator = args.evaluator or ("inception" if args.inception else "shapes")
    if evaluator == "inception" and not args.inception:
        raise ConfigError(
            "the inception evaluator needs the FID-Inception weights: pass --inception FILE "
            "(pytorch-fid's pt_inception-2015-12-05-6726825d.pth)"
        )
    if evaluator == "shapes":
        given = [
            opt
            for opt, value in (
                ("--inception", args.inception),
                ("--mode", args.mode),
                ("--save-ref-stats", args.save_ref_stats),
            )
            if value
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} belong to the inception evaluator; drop them or pass --evaluator inception"
            )
    return evaluator


def format_table(scores: dict[str, Any], frame=None) -> str:
    """The scores as aligned rows, each beside its frame (a :class:`~ditscale.metrics.frame.QualityFrame`),
    then the frame's notes; None shows as "n/a"."""
    keys = []  # each named accuracy under the overall one; its aliases ("accuracy_all") are that row
    for key in scores:
        if not key.startswith("accuracy_"):
            keys.append(key)
        if key == "accuracy":
            keys += [k for k in scores if k.startswith("accuracy_") and k not in OVERALL_ALIASES]
    lines = []
    for key in keys:
        value = scores[key]
        text = "n/a" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:.4f}"
        beside = frame.beside(key) if frame is not None and value is not None else ""
        lines.append(f"{row_name(key):<22} {text:<10} {beside}".rstrip())
    notes = frame.notes if frame is not None else ()
    return "\n".join(lines + [f"note: {note}" for note in notes])


def run(args: argparse.Namespace) -> int:
    import torch  # lazy: torch

    from ditscale.metrics.batch import load_batch, size_mismatch  # lazy: numpy (start-up time of --help)
    from ditscale.metrics.evaluate import evaluate_inception, evaluate_shapes  # lazy: torch

    if args.save_ref_stats:
        check_output_file(args.save_ref_stats, "--save-ref-stats")
        inputs = {"SAMPLES": args.samples, "--ref": args.ref, "--inception": args.inception}
        check_apart({"--save-ref-stats": args.save_ref_stats}, inputs)
    evaluator = choose_evaluator(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    batch_size = args.batch_size or DEFAULT_BATCH_SIZE[evaluator]
    samples, ref = load_batch(args.samples), load_batch(args.ref)
    set_threads(args.threads)
    mismatch = size_mismatch(samples, ref)
    if mismatch:
        print(f"{WARNING} {mismatch}", file=sys.stderr)
    if evaluator == "inception":
        from ditscale.metrics.inception import load_fid_inception  # lazy: torch

        model = load_fid_inception(args.inception, device=device)
        metrics = evaluate_inception(
            samples,
            ref,
            model,
            batch_size=batch_size,
            mode=args.mode or "adm",
            device=device,
            progress=not args.quiet,
            save_ref_stats=args.save_ref_stats,
            frame=True,
        )
        if args.save_ref_stats and not args.quiet:
            print(f"ditscale eval: wrote the reference statistics to {args.save_ref_stats}", file=sys.stderr)
    else:
        metrics = evaluate_shapes(
            samples, ref, batch_size=batch_size, device=device, progress=not args.quiet, frame=True
        )
    print(json.dumps(metrics.to_dict()) if args.json else format_table(metrics.scores(), metrics.frame))
    return 0
