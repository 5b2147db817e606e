"""``gsr evaluate CONFIG.yml``: every model x dataset x degradation setting -> PSNR / SSIM / LPIPS.

Writes to the output folder: ``per_image.jsonl`` (the cache: an interrupted run resumes from it),
``results.csv`` and ``results.json`` (one row per model, dataset and setting), ``table.md`` (the papers'
layout: a row per model, an "Improvement" row under each model against the reference, columns
dataset x setting, one table per metric) and ``gains.png`` (PSNR gain over the reference per setting,
averaged over datasets). PSNR/SSIM are BasicSR's, on RGB with ``crop_border`` = scale by default.
See ``options/evaluate_alignment.yml`` for the config keys.
"""
import argparse
from typing import List, Optional

from gsr.analysis.evaluation import evaluate, load_config, write_reports
from gsr.tools.arguments import add_execution_arguments
from gsr.utils.execution import EXECUTION_KEYS
from gsr.utils.staging import claim_output_folder


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='gsr evaluate', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='evaluation YAML (see options/evaluate_alignment.yml)')
    add_execution_arguments(parser)
    parser.set_defaults(precision=None, channels_last=None, compile=None)  # unset flags keep the config's keys
    args = parser.parse_args(argv)
    cfg = load_config(args.config, {k: getattr(args, k) for k in EXECUTION_KEYS if getattr(args, k) is not None})
    models = [m for m in cfg['models'].values() if isinstance(m, dict)]
    claim_output_folder(cfg['output'], list(cfg['datasets'].values()) + [args.config] +
                        [m[k] for m in models for k in ('option_file', 'checkpoint')])
    paths = write_reports(cfg, evaluate(cfg))
    print(open(paths['md']).read())
    for path in paths.values():
        print(f'wrote {path}')
    return 0
