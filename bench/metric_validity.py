"""Do the evaluation's figures see realism? The degradation ladder, FID against detectability over
generators of known quality, and the no-inversion check, on real data.

    python bench/metric_validity.py --data ../shared/acdc \
        --checkpoint dcgan-1600=outputs/dcgan/checkpoints/best.pt --checkpoint vae=... [-n 500] [--out DIR]

1. Ladder: the validation patients of every group, clean and under each degradation of
   `hcmbench.evaluation.degradations.LADDER` at increasing strength, scored against the test patients of
   every group (FID, KID in the feature space the evaluation uses). Each kind must grow strictly.
2. Generators: `hcmbench evaluate`'s table for the given checkpoints together (their data settings, their
   held-out test patients as reference, with the calibration rows), detectability included; Spearman
   correlation between FID and detectability over every row but the training split's.
3. No inversion: no row at least 0.95 detectable may have a lower FID than the real validation patients.

Prints the tables and writes them as Markdown to `--out` (default bench-results/metric_validity/).
Exit code 1 when a check fails. The feature space is trained on first use and cached, as in `evaluate`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from hcmbench.checkpoints import data_config_of, read_checkpoint
from hcmbench.data.acdc import open_dataset
from hcmbench.data.slices import load_slices
from hcmbench.evaluation.features import load_feature_extractor
from hcmbench.evaluation.report import EvaluationConfig, evaluate_checkpoints, markdown_document
from hcmbench.evaluation.validity import degradation_ladder, inversions, non_monotone, rank_agreement


def rich_table(title: str, columns: list[str], cells: list[list[str]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    for row in cells:
        table.add_row(*row)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="ACDC-layout root (the real training set)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                        help="a generator to score, repeatable (its data settings are used for the ladder too)")
    parser.add_argument("-n", type=int, default=500, help="images per generator")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-results/metric_validity"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    if not checkpoints:
        parser.error("give at least one --checkpoint NAME=PATH")
    data_config = data_config_of(read_checkpoint(next(iter(checkpoints.values()))))

    started = time.perf_counter()
    extractor = load_feature_extractor(args.data, data_config)
    console.print(f"feature space {extractor.key} ({'cached' if extractor.from_cache else 'trained'}, "
                  f"{time.perf_counter() - started:.0f} s): {extractor.summary}", highlight=False)

    every_group = dataclasses.replace(data_config, groups=open_dataset(args.data).groups_present)
    slices = load_slices(args.data, every_group)
    held_out, reference = (torch.from_numpy(slices.of_split(s).images) for s in ("val", "test"))
    started = time.perf_counter()
    steps = degradation_ladder(extractor, held_out, reference)
    ladder_columns = ["kind", "parameter", "FID", "KID×10³"]
    ladder_cells = [[s.kind, f"{s.parameter:g}", f"{s.fid:.3f}", f"{s.kid * 1e3:.2f}"] for s in steps]
    console.print(rich_table(f"Degradation ladder: {len(held_out)} validation slices (every group) against "
                             f"{len(reference)} test slices ({time.perf_counter() - started:.0f} s)",
                             ladder_columns, ladder_cells))
    broken = non_monotone(steps)
    console.print("ladder: every kind grows strictly" if not broken else f"ladder NOT monotone: {broken}")

    started = time.perf_counter()
    table = evaluate_checkpoints(checkpoints, args.data, config=EvaluationConfig(n=args.n),
                                 sample_options={"sampler": "ddim", "steps": 50})
    seconds = time.perf_counter() - started
    generator_columns = ["set", "detectability", "FID", "KID×10³", "precision", "recall", "diversity"]
    generator_cells = [[r.name, f"{r.detectability:.3f} ± {r.detectability_std:.3f}", f"{r.fid:.3f}",
                        f"{r.kid * 1e3:.2f}", f"{r.precision:.2f}", f"{r.recall:.2f}", f"{r.diversity:.3f}"]
                       for r in table.rows]
    console.print(rich_table(f"Generators and calibration sets, n = {args.n} ({seconds:.0f} s)", generator_columns,
                             generator_cells))
    rho = rank_agreement(table)
    generators_and_noise = {r.name for r in table.rows if r.kind == "model"} | {"uniform noise"}
    rho_generators = rank_agreement(table, generators_and_noise)
    inverted = inversions(table)
    console.print(f"Spearman(FID, detectability) = {rho:.3f} over {len(table.rows) - 1} sets, "
                  f"{rho_generators:.3f} over the generators and noise (target ≥ 0.8)")
    console.print("no inversion" if not inverted else f"INVERSIONS: {inverted}")

    args.out.mkdir(parents=True, exist_ok=True)
    summary = [f"Spearman(FID, detectability) = {rho:.3f} over every set, {rho_generators:.3f} over the generators "
               f"and noise; inversions: {inverted or 'none'}; ladder: {broken or 'monotone'}"]
    text = (markdown_document("Degradation ladder", [], ladder_columns, ladder_cells) + "\n"
            + markdown_document(f"Generators and calibration sets, n = {args.n}", summary, generator_columns,
                                generator_cells))
    (args.out / "metric_validity.md").write_text(text)
    console.print(f"Wrote {args.out / 'metric_validity.md'}")
    return 0 if not broken and not inverted and min(rho, rho_generators) >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
