"""``results.json`` and the generated ``RESULTS.md`` (every number in the Markdown is read from the JSON)."""
import os
from collections import OrderedDict
from typing import Dict, List

import numpy as np

from gsr.utils.checkpoint import atomic_write_text
from gsr.utils.plotting import pyplot, save_figure

VERDICT_RULE = ('**Verdicts.** Each comparison is paired: the same seeds (same initialisation and data order) and '
                'the same test images. A comparison *holds* when its mean difference has the claimed sign, the mean '
                'difference of every seed has it too, and a two-sided one-sample t-test of the per-seed means '
                '(seeds - 1 degrees of freedom) gives p < 0.05; it *does not hold* when all of that is true of the '
                'opposite sign; otherwise it is *inconclusive*. The unit is the training run: the images one network '
                'is tested on share its training, so the t-test and the sign test over all seeds x images (shown '
                'beside it) count one training\'s luck many times. A claim made of several comparisons holds when '
                'all do, partly holds when some do.')


def fmt(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return 'n/a'
    return f'{value:+.{digits}f}' if digits else str(value)


def p_value(p: float) -> str:
    return f'{p:.2g}' if p >= 1e-4 else '<1e-4'


def comparison_table(comparisons: List[Dict]) -> str:
    lines = ['| comparison | claimed | mean difference | per seed | std over seeds | seed t-test p | n | t-test p '
             '(seeds x images) | sign test p (+/-) | verdict |', '|---|---|---|---|---|---|---|---|---|---|']
    for c in comparisons:
        unit = f' {c["unit"]}' if c['unit'] else ''
        seeds = ', '.join(fmt(v) for v in c['seed_means'])
        lines.append(f'| {c["label"]} | {"> 0" if c["claimed_sign"] > 0 else "< 0"} | {fmt(c["mean"], 4)}{unit} | '
                     f'{seeds} | {c["seed_std"]:.3f} | {p_value(c["seed_t_p"])} | {c["n"]} | {p_value(c["t_p"])} | '
                     f'{p_value(c["sign_p"])} ({c["positive"]}/{c["negative"]}) | {c["verdict"]} |')
    return '\n'.join(lines)


def variant_table(results: Dict) -> str:
    settings = results['settings']
    lines = ['| variant | ' + ' | '.join(settings) + ' | mean |', '|---' * (len(settings) + 2) + '|']
    floor = results.get('bicubic_by_setting')
    if floor:
        lines.append('| bicubic | ' + ' | '.join(f'{floor[s]:.2f}' for s in settings + ['mean']) + ' |')
    for variant, per_setting in results['psnr_by_setting'].items():
        cells = [f'{per_setting[s]["mean"]:.2f} ± {per_setting[s]["std"]:.2f}' for s in settings + ['mean']]
        lines.append(f'| {variant} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def floor_table(results: Dict) -> str:
    """Each variant's PSNR minus bicubic's on the same images in the same run (mean over seeds)."""
    settings, floor = results['settings'], results['bicubic_by_setting']
    lines = ['| variant | ' + ' | '.join(settings) + ' | mean |', '|---' * (len(settings) + 2) + '|']
    for variant, per_setting in results['psnr_by_setting'].items():
        gains = [per_setting[s]['mean'] - floor[s] for s in settings + ['mean']]
        lines.append(f'| {variant} | ' + ' | '.join(f'{g:+.2f}' for g in gains) + ' |')
    return '\n'.join(lines)


def curve_table(curves: Dict) -> str:
    """Per variant and validated iteration: training minutes and pooled PSNR minus bicubic per curve setting."""
    settings = list(curves['bicubic'])
    lines = ['| variant | iteration | training minutes | ' + ' | '.join(f'{s} (vs bicubic)' for s in settings) + ' |',
             '|---|---|---|' + '---|' * len(settings)]
    for variant, curve in curves['variants'].items():
        for i, it in enumerate(curve['iterations']):
            minutes = curve['minutes'][i]
            cells = [f'{curve["psnr"][s][i]:.2f} ({curve["psnr"][s][i] - curves["bicubic"][s]:+.2f})'
                     for s in settings]
            lines.append(f'| {variant} | {it} | {"n/a" if minutes is None else f"{minutes:.0f}"} | '
                         + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def curve_plots(curves: Dict, folder: str) -> Dict[str, str]:
    """learning_curves_iterations.png and learning_curves_minutes.png: pooled validation PSNR per curve setting
    against iterations / training minutes, one line per variant, the bicubic level dashed."""
    settings, paths = list(curves['bicubic']), {}
    for axis, label in (('iterations', 'iteration'), ('minutes', 'training minutes (2 CPU cores)')):
        fig, axes = pyplot().subplots(1, len(settings), figsize=(4 * len(settings), 3.4), squeeze=False)
        for ax, setting in zip(axes[0], settings):
            for variant, curve in curves['variants'].items():
                points = [(x, y) for x, y in zip(curve[axis], curve['psnr'][setting]) if x is not None]
                ax.plot([p[0] for p in points], [p[1] for p in points], marker='o', ms=3, label=variant)
            ax.axhline(curves['bicubic'][setting], color='k', ls='--', lw=0.8, label='bicubic')
            ax.set_title(setting, fontsize=9)
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel('PSNR (dB)', fontsize=8)
        axes[0][0].legend(fontsize=6)
        paths[f'curves_{axis}'] = os.path.join(folder, f'learning_curves_{axis}.png')
        save_figure(fig, paths[f'curves_{axis}'])
    return paths


INERT = 0.01  # a gradient ratio below this: the term barely moves the features next to the L1 loss


def gradient_table(results: Dict) -> str:
    """Per regularizer (first seed): its value, its gradient ratio at the tap and whether it acts, and what else it
    logged (``bacc``: a detector's balanced accuracy on the step's rows, 0.5 at chance)."""
    lines = ['| variant | term | loss value (late median) | gradient at the tap / L1\'s (late median) | acts? | '
             'also logged (late median) |', '|---|---|---|---|---|---|']
    for variant, terms in results['regularizer_activity'].items():
        for term, stats in terms.items():
            inert = 'inert (< 1 % of the L1\'s gradient)'
            if np.isnan(stats['ratio']) or stats['ratio'] == 0:  # 0 exactly: the term does not reach the tap
                acts = 'n/a (acts before the tap)' if stats['ratio'] == 0 else 'n/a'
            else:
                acts = inert if stats['ratio'] < INERT else 'acts'
            logged = ', '.join(f'{k} {v:.3g}' for k, v in (stats.get('metrics') or {}).items()) or '-'
            lines.append(f'| {variant} | {term} | {stats["value"]:.3g} | {stats["ratio"]:.3g} | {acts} | {logged} |')
    return '\n'.join(lines)


DIVERGED = 3.0  # a run whose late pixel loss exceeds the baseline's (same seed) by this factor: not a result
GREW = 2.0  # a run whose total loss in the last quarter exceeds its first half's by this factor: not a result


def stability_table(results: Dict) -> str:
    """Per run, the late-median pixel loss against the baseline's at the same seed, the largest logged, and the
    total loss's growth over training (``runner.growth``)."""
    runs = results.get('pixel_loss') or {}
    lines = ['| run | l_pix, late median | / baseline\'s (same seed) | largest logged | l_total, last quarter / '
             'first half | stable? |', '|---|---|---|---|---|---|']
    for key, loss in runs.items():
        reference = runs.get(f'baseline/seed{key.rsplit("/seed", 1)[1]}', {}).get('late_median', float('nan'))
        ratio = loss['late_median'] / reference if reference else float('nan')
        grew = loss.get('total_growth', float('nan'))
        stable = ('n/a' if np.isnan(ratio) else
                  f'**diverged** (> {DIVERGED:g}x)' if not np.isfinite(loss['late_median']) or ratio > DIVERGED
                  else f'**grew** (> {GREW:g}x)' if grew > GREW
                  else 'yes')
        lines.append(f'| {key} | {loss["late_median"]:.4f} | {ratio:.2f} | {loss["max"]:.3g} | {grew:.2f} | '
                     f'{stable} |')
    return '\n'.join(lines)


def protocol_table(results: Dict) -> str:
    checks = results.get('protocol_checks') or {}
    if not checks:
        return 'Not run (benchmark.protocol_checks: false).'
    lines = ['| variant | check | mean PSNR (dB) as benchmarked | under the check | difference |',
             '|---|---|---|---|---|']
    for variant, items in checks.items():
        for check, v in items.items():
            lines.append(f'| {variant} | {check} | {v["reference"]:.3f} | {v["checked"]:.3f} | '
                         f'{v["checked"] - v["reference"]:+.3f} |')
    return '\n'.join(lines)


def plots(results: Dict, folder: str) -> Dict[str, str]:
    """gains.png (PSNR gain over the baseline per setting, mean ± std over seeds), bands.png (MAPE per radial band
    per variant), gradient_ratios.png (each regularizer's gradient ratio over training, first seed)."""
    os.makedirs(folder, exist_ok=True)
    paths = {}
    gains = results['gains_by_setting']
    if gains:
        settings = results['settings']
        fig, ax = pyplot().subplots(figsize=(8, 3.8))
        width = 0.8 / len(gains)
        for i, (variant, per_setting) in enumerate(gains.items()):
            x = np.arange(len(settings)) + (i - (len(gains) - 1) / 2) * width
            ax.bar(x, [per_setting[s]['mean'] for s in settings], width,
                   yerr=[per_setting[s]['std'] for s in settings], capsize=2, label=variant)
        ax.axhline(0, color='k', lw=0.6)
        ax.set_xticks(np.arange(len(settings)), settings, fontsize=8)
        ax.set_ylabel('PSNR gain over baseline (dB)')
        ax.legend(fontsize=6, ncol=3)
        save_figure(fig, os.path.join(folder, 'gains.png'))
        paths['gains'] = os.path.join(folder, 'gains.png')
    if results['band_mape']:
        fig, ax = pyplot().subplots(figsize=(5.5, 3.5))
        for variant, curve in results['band_mape'].items():
            ax.plot(np.arange(1, len(curve) + 1), curve, marker='o', ms=3, label=variant)
        ax.set_xlabel('radial frequency band (low -> high)')
        ax.set_ylabel('MAPE of FFT amplitude (%)')
        ax.legend(fontsize=6)
        save_figure(fig, os.path.join(folder, 'bands.png'))
        paths['bands'] = os.path.join(folder, 'bands.png')
    if (results.get('learning_curves') or {}).get('variants'):
        paths.update(curve_plots(results['learning_curves'], folder))
    curves = results['gradient_curves']
    if curves:
        fig, ax = pyplot().subplots(figsize=(5.5, 3.5))
        for label, curve in curves.items():
            ax.semilogy([c[0] for c in curve], [max(c[1], 1e-30) for c in curve], label=label)
        ax.set_xlabel('iteration')
        ax.set_ylabel('|grad at tap| / |grad of L1|')
        ax.legend(fontsize=6)
        save_figure(fig, os.path.join(folder, 'gradient_ratios.png'))
        paths['gradient_ratios'] = os.path.join(folder, 'gradient_ratios.png')
    return paths


def markdown(results: Dict, report_path: str) -> str:
    """RESULTS.md from ``results`` alone."""
    folder = os.path.splitext(report_path)[0] + '_plots'
    images = {k: os.path.relpath(v, os.path.dirname(report_path)) for k, v in plots(results, folder).items()}
    meta = results['meta']
    head = [
        f'# Reproduction study: {results["study"]}', '',
        f'Generated by `{meta["command"]}`: do not edit by hand. Machine: {meta["machine"]}; '
        f'{meta["versions"]}. Training the {len(results["runs"])} runs took {meta["training_seconds"] / 60:.0f} min '
        f'summed over the runs (each run\'s own processes; `--jobs` runs several at once); this invocation took '
        f'{meta["wall_seconds"] / 60:.0f} min of wall time (runs, benchmark rows and analyses already done are read, '
        'not redone).', '',
        '## Protocol', '',
        f'- Training: `{results["base"]}` ({results["scale_note"]}) on `{results["hr"]}`, seeds '
        f'{", ".join(map(str, results["seeds"]))}{fewer_seeds(results)}; every variant differs from the base only by '
        'the overrides listed.',
        f'- Benchmark: {", ".join(results["datasets"])}, settings {", ".join(results["settings"])}; noise sigma '
        f'{results["protocol"]["noise_sigma"]:g}; {results["protocol"]["weights"]} weights; RGB metrics with a '
        f'{results["protocol"]["crop_border"]}-pixel border; LPIPS: {results["protocol"]["lpips"]}.', '',
        '| variant | overrides of the base |', '|---|---|',
    ]
    head += [f'| {v} | `{o}` |' for v, o in results['variant_overrides'].items()]
    if results.get('variants_not_run'):
        head += ['', f'Variants of the study file not run in this invocation (`--variants`): '
                 f'{", ".join(results["variants_not_run"])}; the claims that need them say "not run", or name them '
                 'among the comparisons not made.']
    if results.get('seeds_not_run'):
        head += ['', f'Seeds of the study file not run in this invocation (`--seeds`): '
                 f'{", ".join(map(str, results["seeds_not_run"]))}. {seed_consequence(len(results["seeds"]))}']
    body = ['', '## Verdicts', '', VERDICT_RULE, '', '| claim | source | verdict |', '|---|---|---|']
    body += [f'| {c["claim"]}. {c["title"]} | {c["source"]} | **{c["verdict"]}** |' for c in results['claims']]
    for c in results['claims']:
        body += ['', f'### Claim {c["claim"]}: {c["title"]}', '', f'Source: {c["source"]}. Verdict: '
                 f'**{c["verdict"]}**.', '']
        body += [comparison_table(c['comparisons']) if c['comparisons'] else 'Not run: the study has none of the '
                 'variants this claim compares.']
        if c.get('context'):
            body += ['', 'Shown for context, not counted in the verdict: these comparisons differ in training data '
                     'as well as in method (the TFD variants skip noise half the time, alignment never does).', '',
                     comparison_table(c['context'])]
    body += ['', '## PSNR per variant and setting (dB, mean ± std over seeds; the images of every dataset pooled)', '',
             variant_table(results)]
    if results.get('bicubic_by_setting'):
        body += ['', '### Against bicubic', '', 'Each variant\'s PSNR minus bicubic upscaling\'s (MATLAB bicubic, '
                 'the same images and degradations, the same run), mean over seeds:', '', floor_table(results)]
    if 'gains' in images:
        body += ['', f'![PSNR gain over the baseline per setting]({images["gains"]})']
    if 'curves_iterations' in images:
        body += ['', '## Learning curves', '', 'Validation PSNR during training (first seed; the benchmark\'s '
                 'datasets, images pooled; the weights the benchmark scores) against iterations and against '
                 'training minutes (validation time left out), with the bicubic level of the same images dashed.',
                 '', f'![learning curves against iterations]({images["curves_iterations"]})', '',
                 f'![learning curves against training minutes]({images["curves_minutes"]})', '',
                 curve_table(results['learning_curves'])]
    if 'bands' in images:
        body += ['', '## Frequency-band error', '', 'MAPE of the FFT amplitude per radial band, averaged over '
                 'seeds, images and settings.', '', f'![band MAPE per variant]({images["bands"]})']
    body += ['', '## Does the regularizer act?', '',
             'Each regularizer\'s value and the norm of its gradient at the feature tap relative to the L1 loss\'s, '
             'logged during training (`train.gradient_ratio_freq`), and what else it logged (`bacc`: a noise '
             'detector\'s balanced accuracy on the step\'s noisy and noise-free rows, 0.5 at chance), median over '
             'the second half of training, first seed.', '', gradient_table(results)]
    for key, factor in results['weight_factors'].items():
        body += ['', f'`{key}`: the regularizer weights were multiplied by {factor:.4g}, chosen once from the '
                 'gradient ratio logged by its source run (training logs only; never from test results).']
    if 'gradient_ratios' in images:
        body += ['', f'![gradient ratio over training]({images["gradient_ratios"]})']
    if results.get('pixel_loss'):
        body += ['', '## Training stability', '', 'The pixel loss each run logged (`logger.print_freq`), median over '
                 'the second half of training, against the baseline\'s at the same seed, and the total loss '
                 '(pixel loss plus regularizers) over the last quarter of training against the first half of the '
                 'same run: a run whose loss ran away or rose while it trained is reported here rather than read '
                 'as a benchmark result.', '', stability_table(results)]
    body += ['', '## Protocol knobs', '', 'Two choices decide whether a reproduction matches a published table: the '
             'noise sigma of the noise settings (20; folders published before 2024-07 used 40) and whether EMA or '
             'raw weights are evaluated. Their effect, once, on the first seed (mean PSNR over the datasets):', '',
             protocol_table(results), '']
    return '\n'.join(head + body)


def write(results: Dict, report_path: str, json_path: str) -> None:
    import json
    atomic_write_text(json_path, json.dumps(results, indent=1))
    os.makedirs(os.path.dirname(report_path) or '.', exist_ok=True)
    atomic_write_text(report_path, markdown(results, report_path))


def seed_consequence(seeds_run: int) -> str:
    """What running fewer seeds than the study file lists does to the verdicts."""
    if seeds_run == 1:
        return 'With one seed no comparison can hold or fail: the spread between trainings is not measured.'
    return (f'Every variant was trained {seeds_run} times: a comparison holds only when each of these trainings '
            'agrees in sign, and the spread between trainings rests on that few values.')


def fewer_seeds(results: Dict) -> str:
    """The variants trained at fewer seeds than the study's (``variants.X.seeds``): their comparisons pair the
    seeds both sides have, so a one-seed comparison rests on that seed's training noise alone."""
    fewer = results.get('variant_seeds') or {}
    if not fewer:
        return ''
    return (' (' + '; '.join(f'{v}: seed{"s" if len(s) > 1 else ""} {", ".join(map(str, s))} only'
                             for v, s in fewer.items()) + ', the study file\'s budget choice: their comparisons pair '
            'the seeds both sides have)')


def summarize_by_setting(values: Dict[str, Dict[str, np.ndarray]], settings: List[str]) -> Dict:
    """``values[variant][setting]``: (seeds, images) -> mean over images, then mean and std over seeds."""
    out = OrderedDict()
    for variant, per_setting in values.items():
        entry = {}
        for s in settings + ['mean']:
            seed_means = per_setting[s].mean(axis=1)
            entry[s] = {'mean': float(seed_means.mean()),
                        'std': float(seed_means.std(ddof=1)) if len(seed_means) > 1 else 0.0}
        out[variant] = entry
    return out
