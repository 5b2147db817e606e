"""``gsr analyze {ddr,freq,dct,cossim,variance,leakage,spectrum}``: the analyses of the generalizable-SR
literature, each a table and a PNG.

* ``ddr`` — deep degradation representation (Liu et al., arXiv 2108.00406; used by Kong et al. and Wang et
  al.): the features entering the last conv, global-average-pooled per image (or per ``--crop`` LR patch),
  for images under the degradation settings (the same crops under every setting, so only the degradation
  differs); the Calinski-Harabasz index with the settings as labels
  (lower: features cluster less by degradation) and a 2-D t-SNE plot coloured by setting. For a ``LightBSR``
  network the representation is its channel IDR ``ca`` instead (the discriminability claim of LightBSR, ICCV 2025),
  and ``--protocol blind-iso`` / ``blind-aniso`` degrades with that line's known kernels instead of the eight
  settings; a teacher's encoder receives each setting's prior (kernel PCA code, noise), as in its training.
* ``freq`` — frequency-band error (Wang et al., CVPR 2024, Fig. 2): FFT amplitude of SR and GT, mean absolute
  percentage error per radial frequency band.
* ``dct`` — channel frequency entropy (Wang et al., CVPR 2024, Fig. 3): each feature channel's dominant DCT
  band, and the entropy of the dominant bands across channels.

* ``cossim`` — which degradation the features overfit to (TFD, Wang et al., arXiv 2509.14841, Sec. 3 as
  summarised): for each single degradation (blur, noise, jpeg), the cosine similarity between the tapped features
  of the clean LR and of the degraded LR of the same image, averaged over images, for each of ``--checkpoints`` (in
  training order) -> one curve per degradation.
* ``variance`` — SAVL (ICLR 2026, our reading): does the inferred per-pixel variance follow the true local
  degradation? Correlation with the true noise and blur maps of the spatial protocol, per map family, a linear
  read-out of the posterior mean, and PNGs (LR | true noise map | inferred variance).
* ``leakage`` — SAVL (ICLR 2026, our reading): how much of the image content the degradation representation
  carries, and how much of the degradation. For each of ``--checkpoints``: the posterior mean, global-average-pooled
  over LR crops of every ``--hr`` image under five noise levels; a linear probe (logistic regression) of the scene
  (which image; tested on crop positions it was not trained on: content leakage, lower is better) and of the noise
  level (tested on images it was not trained on: higher is better), as SAVL's Scene-ID and noise-level accuracies.
* ``spectrum`` — why noise differs (same paper): the radially averaged power spectrum of (degraded LR − clean LR)
  for each single degradation: flat for i.i.d. noise, band-limited for blur and JPEG. Needs no network.

The choices where the papers are silent (pooling, band edges, crop sampling, the layer and the clean reference of
``cossim``: the input of ``conv_last`` and the bicubic-only LR) are our reading, not theirs.
"""
import argparse
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from gsr.analysis.measures import (band_mape, calinski_harabasz, correlation, dominant_dct_bands, entropy_bits,
                                   probe_accuracy, radial_power, tsne_embedding)
from gsr.analysis.representation import (SINGLE, ImageSet, cossim_images, cossim_per_image, ddr_features, device,
                                         tapped_features, teacher_priors)
from gsr.archs.attached_arch import backbone_of
from gsr.archs.feature_tap import FeatureTap
from gsr.archs.lightbsr_arch import LightBSR
from gsr.archs.network_checkpoint import load_network
from gsr.data.blind_protocol import PROTOCOLS
from gsr.data.eval_protocol import degrade_file, settings_list
from gsr.models.option_check import load_option_file
from gsr.utils.checkpoint import atomic_write_text
from gsr.utils.errors import GsrError, check_at_least
from gsr.utils.image_io import list_images, read_image_uint8_rgb
from gsr.utils.inference import super_resolve, to_tensor
from gsr.utils.plotting import pyplot, save_figure
from gsr.utils.staging import claim_output_folder


def markdown(header: List[str], rows: List[List], digits: int = 4) -> str:
    cell = lambda v: f'{v:.{digits}f}' if isinstance(v, float) else str(v)  # noqa: E731
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
    return '\n'.join(lines) + '\n'


def band_plot(curves: Dict[str, np.ndarray], xlabel: str, ylabel: str, path: str) -> None:
    """One line per setting over the frequency bands."""
    fig, ax = pyplot().subplots(figsize=(5.5, 3.5))
    for setting, curve in curves.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, marker='o', label=setting)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def image_set(args: argparse.Namespace, protocol: Optional[str] = None) -> ImageSet:
    """The images and settings the command line names (``--protocol`` unless ``protocol`` is given)."""
    return ImageSet(args.hr, args.scale, args.noise_sigma, args.seed, args.settings, protocol or args.protocol)


def run_ddr(net, tap, args, out: str) -> str:
    feats, labels = ddr_features(net, tap, image_set(args), args.crop, args.crops_per_image,
                                 getattr(args, 'priors', None))
    chi = calinski_harabasz(feats, labels)
    embedded = tsne_embedding(feats, args.seed)
    fig, ax = pyplot().subplots(figsize=(5, 4.5))
    for setting in OrderedDict.fromkeys(labels):
        pts = embedded[np.array(labels) == setting]
        ax.scatter(pts[:, 0], pts[:, 1], s=12, label=setting)
    chi_tsne = calinski_harabasz(embedded, labels)
    ax.set_title(f'DDR t-SNE, CHI = {chi:.2f} (features), {chi_tsne:.2f} (t-SNE)')
    ax.legend(fontsize=7, markerscale=1.5)
    save_figure(fig, os.path.join(out, 'ddr_tsne.png'))
    table = markdown(['samples', 'settings', 'feature dim', 'Calinski-Harabasz index (pooled features)',
                      'Calinski-Harabasz index (2-D t-SNE)'],
                     [[len(feats), len(set(labels)), feats.shape[1], chi, chi_tsne]])
    atomic_write_text(os.path.join(out, 'ddr.md'), table)
    return table


def run_freq(net, tap, args, out: str) -> str:
    per_setting: Dict[str, List[np.ndarray]] = OrderedDict()
    for _, setting, lr, hr in image_set(args, 'eight').degraded():
        sr = super_resolve(net, lr, args.scale, args.tile)
        per_setting.setdefault(setting, []).append(band_mape(sr, hr, args.bands))
    means = {s: np.mean(v, axis=0) for s, v in per_setting.items()}
    band_plot(means, 'radial frequency band (low -> high)', 'MAPE of FFT amplitude (%)',
              os.path.join(out, 'freq_mape.png'))
    table = markdown(['setting'] + [f'band {b + 1}' for b in range(args.bands)],
                     [[s] + [float(v) for v in curve] for s, curve in means.items()])
    atomic_write_text(os.path.join(out, 'freq.md'), table)
    return table


def run_dct(net, tap, args, out: str) -> str:
    per_setting: Dict[str, List[np.ndarray]] = OrderedDict()
    for _, setting, lr, _ in image_set(args, 'eight').degraded():
        feats = tapped_features(net, tap, lr).cpu().numpy()
        per_setting.setdefault(setting, []).append(dominant_dct_bands(feats, args.bands))
    rows = [[s, float(np.mean([entropy_bits(d, args.bands) for d in v]))] for s, v in per_setting.items()]
    shares = {s: np.bincount(np.concatenate(d), minlength=args.bands) / sum(map(len, d))
              for s, d in per_setting.items()}
    band_plot(shares, 'dominant DCT band (low -> high)', 'fraction of channels', os.path.join(out, 'dct_bands.png'))
    table = markdown(['setting', 'entropy of dominant DCT band (bits)'], rows)
    atomic_write_text(os.path.join(out, 'dct.md'), table)
    return table


def run_cossim(args, out: str) -> str:
    opt = load_option_file(args.opt)
    images = cossim_images(image_set(args))
    curves: Dict[str, List[float]] = OrderedDict((s, []) for s in SINGLE)
    for checkpoint in args.checkpoints:
        net = load_network(opt, checkpoint, args.param_key, device())
        for setting, values in cossim_per_image(net, FeatureTap(net, args.layer), images).items():
            curves[setting].append(float(np.mean(values)))
    fig, ax = pyplot().subplots(figsize=(5.5, 3.5))
    for setting, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), values, marker='o', label=setting)
    ax.set_xticks(np.arange(1, len(args.checkpoints) + 1), [os.path.basename(c) for c in args.checkpoints],
                  rotation=30, fontsize=7)
    ax.set_ylabel('cosine(features of clean LR, degraded LR)')
    ax.legend(fontsize=7)
    save_figure(fig, os.path.join(out, 'cossim.png'))
    table = markdown(['checkpoint'] + list(SINGLE),
                     [[os.path.basename(c)] + [curves[s][i] for s in SINGLE] for i, c in enumerate(args.checkpoints)],
                     digits=6)
    atomic_write_text(os.path.join(out, 'cossim.md'), table)
    return table


def run_spectrum(args, out: str) -> str:
    spectra: Dict[str, List[np.ndarray]] = OrderedDict((s, []) for s in SINGLE)
    for path in list_images(args.hr):
        _, lrs = degrade_file(path, ['clean'] + list(SINGLE), args.scale, args.noise_sigma, args.seed)
        for setting in SINGLE:
            spectra[setting].append(radial_power(lrs[setting].astype(np.float64) - lrs['clean'], args.bands))
    means = {s: np.mean(v, axis=0) for s, v in spectra.items()}
    fig, ax = pyplot().subplots(figsize=(5.5, 3.5))
    for setting, curve in means.items():
        ax.semilogy(np.arange(1, args.bands + 1), curve, marker='o', label=setting)
    ax.set_xlabel('radial frequency band (low -> high)')
    ax.set_ylabel('power of (degraded LR - clean LR)')
    ax.legend(fontsize=7)
    save_figure(fig, os.path.join(out, 'spectrum.png'))
    spread = {s: float(curve.std() / curve.mean()) for s, curve in means.items()}  # 0 for a flat spectrum
    table = markdown(['degradation'] + [f'band {b + 1}' for b in range(args.bands)] + ['std / mean over bands'],
                     [[s] + [float(v) for v in curve] + [spread[s]] for s, curve in means.items()])
    atomic_write_text(os.path.join(out, 'spectrum.md'), table)
    return table


def spatial_samples(args):
    """(family, image name, LR uint8, true maps) of the spatial protocol: read from ``--sets`` (a ``gsr degrade
    --protocol spatial`` folder, its maps checked against its images) or generated from ``--hr``."""
    from gsr.data import spatial_protocol
    for family in spatial_protocol.FAMILIES:
        if args.sets:
            folder = os.path.join(args.sets, 'LR_spatial', family)
            lrs = {os.path.splitext(os.path.basename(p))[0]: read_image_uint8_rgb(p) for p in list_images(folder)}
            maps = spatial_protocol.load_true_maps(os.path.join(args.sets, 'maps_spatial', family), list(lrs),
                                                   {n: lr.shape[:2] for n, lr in lrs.items()})
            for name, lr in lrs.items():
                yield family, name, lr, maps[name]
        else:
            for path in list_images(args.hr):
                _, lr, maps = spatial_protocol.degrade_spatial_file(path, family, args.scale, args.seed)
                yield family, os.path.splitext(os.path.basename(path))[0], lr, maps


def savl_estimator(net, analysis: str) -> torch.nn.Module:
    if not hasattr(backbone_of(net), 'estimator'):
        raise GsrError(f'gsr analyze {analysis} needs a network with a SAVL estimator (network_g type SAVLNet)')
    return backbone_of(net).estimator


@torch.no_grad()
def run_variance(net, tap, args, out: str) -> str:
    """SAVL: per-pixel Pearson correlation of the inferred variance (sigma^2 averaged over the latent dims) with
    the true noise and blur maps of the spatial protocol, per map family (mean over images), and of a linear read-out
    of the posterior mean (least squares over all pixels of the family, in-sample R^2 with the noise map)."""
    estimator = savl_estimator(net, 'variance')
    rows, shown = [], set()
    by_family: Dict[str, Dict[str, list]] = OrderedDict()
    for family, name, lr, maps in spatial_samples(args):
        mean, log_var = estimator(to_tensor(lr, next(net.parameters()).device))
        variance = log_var.exp().mean(1)[0].cpu().numpy()
        stats = by_family.setdefault(family, {'noise': [], 'blur': [], 'mean': [], 'target': []})
        stats['noise'].append(correlation(variance, maps['noise_sigma']))
        stats['blur'].append(correlation(variance, maps['blur_sigma']))
        stats['mean'].append(mean[0].flatten(1).t().cpu().numpy())
        stats['target'].append(maps['noise_sigma'].ravel())
        if family not in shown:
            shown.add(family)
            fig, axes = pyplot().subplots(1, 3, figsize=(9, 3))
            panels = (('LR', lr), ('true noise sigma', maps['noise_sigma']), ('inferred variance', variance))
            for ax, (title, img) in zip(axes, panels):
                ax.imshow(img, cmap=None if img.ndim == 3 else 'magma')
                ax.set_title(title, fontsize=8)
                ax.axis('off')
            save_figure(fig, os.path.join(out, f'variance_{family}_{name}.png'))
    for family, stats in by_family.items():
        features = np.concatenate(stats['mean'])
        target = np.concatenate(stats['target'])
        design = np.concatenate([features, np.ones((len(features), 1))], 1)
        fit = design @ np.linalg.lstsq(design, target, rcond=None)[0]
        r2 = 1 - ((target - fit)**2).sum() / max(((target - target.mean())**2).sum(), 1e-12)
        rows.append([family, len(stats['noise']), float(np.mean(stats['noise'])), float(np.mean(stats['blur'])),
                     float(r2)])
    table = markdown(['map family', 'images', 'corr(variance, noise map)', 'corr(variance, blur map)',
                      'R^2 of a linear read-out of the mean -> noise map'], rows)
    atomic_write_text(os.path.join(out, 'variance.md'), table)
    return table


LEAKAGE_NOISE = (0, 10, 20, 30, 40)  # the noise-level classes of ``leakage``, sigma in 0-255 units


def leakage_samples(args) -> List[Tuple[int, int, int, np.ndarray]]:
    """(scene, noise class, crop position, LR crop uint8): ``--crops-per-image`` positions per image, the same
    positions under every level of ``LEAKAGE_NOISE`` added to the bicubic LR (seeded)."""
    rng = np.random.default_rng(args.seed)
    samples = []
    for scene, path in enumerate(list_images(args.hr)):
        clean = degrade_file(path, ['clean'], args.scale, args.noise_sigma, args.seed)[1]['clean'].astype(np.float32)
        h, w = clean.shape[:2]
        crop = min(args.crop, h, w) if args.crop > 0 else min(h, w)
        corners = list(zip(rng.integers(0, h - crop + 1, args.crops_per_image),
                           rng.integers(0, w - crop + 1, args.crops_per_image)))
        for level, sigma in enumerate(LEAKAGE_NOISE):
            noisy = np.clip(np.round(clean + rng.normal(0, sigma, clean.shape)), 0, 255).astype(np.uint8)
            samples += [(scene, level, i, noisy[y:y + crop, x:x + crop]) for i, (y, x) in enumerate(corners)]
    return samples


@torch.no_grad()
def run_leakage(args, out: str) -> str:
    """SAVL's content-leakage and noise-level probes on the pooled posterior mean (module docstring)."""
    opt = load_option_file(args.opt)
    samples = leakage_samples(args)
    scenes, levels, positions = (np.array([s[i] for s in samples]) for i in range(3))
    if len(np.unique(scenes)) < 2 or len(np.unique(positions)) < 2:
        raise GsrError('gsr analyze leakage needs at least 2 images in --hr and --crops-per-image >= 2')
    rows = []
    for checkpoint in args.checkpoints:
        estimator = savl_estimator(load_network(opt, checkpoint, args.param_key, device()), 'leakage')
        pooled = [estimator(to_tensor(s[3], device()))[0].mean((2, 3))[0] for s in samples]
        features = torch.stack(pooled).cpu().numpy()
        rows.append([checkpoint, probe_accuracy(features, scenes, positions),
                     probe_accuracy(features, levels, scenes)])
    table = markdown(['checkpoint', f'scene-ID accuracy (chance {1 / len(np.unique(scenes)):.2f}; lower: less '
                      'content)', f'noise-level accuracy (chance {1 / len(LEAKAGE_NOISE):.2f}; higher)'], rows)
    atomic_write_text(os.path.join(out, 'leakage.md'), table)
    return table


ANALYSES = {'ddr': run_ddr, 'freq': run_freq, 'dct': run_dct, 'variance': run_variance}
# their own network loading (several checkpoints), or none
STANDALONE = {'cossim': run_cossim, 'leakage': run_leakage, 'spectrum': run_spectrum}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='gsr analyze', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('analysis', choices=list(ANALYSES) + list(STANDALONE))
    parser.add_argument('-opt', help='option file whose network_g describes the checkpoint (not for spectrum)')
    parser.add_argument('--checkpoint', help='ddr, freq, dct: the checkpoint')
    parser.add_argument('--checkpoints', nargs='+', help='cossim: checkpoints in training order; leakage: the '
                        'checkpoints to compare (e.g. with and without MI suppression)')
    parser.add_argument('--param-key', default='params_ema')
    parser.add_argument('--hr', required=True, help='folder of HR images (e.g. datasets/Set14/HR)')
    parser.add_argument('--output', required=True, help='folder for the table and the PNG')
    parser.add_argument('--settings', nargs='+', default=['all'])
    parser.add_argument('--sets', help='variance: a `gsr degrade --protocol spatial` folder (default: from --hr)')
    parser.add_argument('--protocol', default='eight', choices=['eight', *PROTOCOLS],
                        help='ddr: the eight settings or a blind protocol\'s known kernels')
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--noise-sigma', type=float, default=20)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--layer', default='conv_last', help='the tapped layer (its input is analysed)')
    parser.add_argument('--crop', type=int, default=48, help='ddr, leakage: LR crop size per sample (0: whole image)')
    parser.add_argument('--crops-per-image', type=int, default=4, help='ddr, leakage: crops per image and setting')
    parser.add_argument('--bands', type=int, default=8, help='freq/dct: number of frequency bands')
    parser.add_argument('--tile', type=int, default=0)
    args = parser.parse_args(argv)
    args.settings = settings_list(args.settings)
    for flag, minimum in (('--bands', 1), ('--scale', 1), ('--noise-sigma', 0), ('--crop', 0),
                          ('--crops-per-image', 1), ('--tile', 0)):
        check_at_least(flag, getattr(args, flag[2:].replace('-', '_')), minimum)
    if args.param_key not in ('params_ema', 'params'):
        raise GsrError(f'--param-key must be params_ema or params, got {args.param_key!r}')
    if args.analysis == 'ddr' and args.protocol == 'eight' and len(args.settings) < 2:
        raise GsrError('gsr analyze ddr clusters features by setting: give at least two --settings')
    needs = {'cossim': ('opt', 'checkpoints'), 'leakage': ('opt', 'checkpoints'),
             'spectrum': ()}.get(args.analysis, ('opt', 'checkpoint'))
    missing = [f'--{n}' if n != 'opt' else '-opt' for n in needs if not getattr(args, n)]
    if missing:
        raise GsrError(f'gsr analyze {args.analysis} needs {" and ".join(missing)}')
    list_images(args.hr)
    inputs = [p for p in [args.opt, args.checkpoint] + list(args.checkpoints or []) if p]
    for checkpoint in inputs[1:]:  # every input is checked before the output folder exists (review case V3)
        if not os.path.isfile(checkpoint):
            raise GsrError(f'checkpoint not found: {checkpoint}')
    opt = load_option_file(args.opt) if args.opt else None
    if args.analysis in STANDALONE:
        claim_output_folder(args.output, [args.hr] + inputs)
        print(STANDALONE[args.analysis](args, args.output))
        print(f'wrote {args.output}')
        return 0
    net = load_network(opt, args.checkpoint, args.param_key, device(), lr_alone=False)
    idr = isinstance(backbone_of(net), LightBSR)
    if idr and args.analysis != 'ddr':
        raise GsrError(f'gsr analyze {args.analysis}: not defined for LightBSR networks (ddr analyses their IDR)')
    if idr and backbone_of(net).prior_channels:
        args.priors = {k: v.to(device()) for k, v in teacher_priors(opt, args.protocol).items()}
    tap = None if idr or args.analysis == 'variance' else FeatureTap(net, args.layer)
    claim_output_folder(args.output, [args.hr] + inputs)
    print(ANALYSES[args.analysis](net, tap, args, args.output))
    print(f'wrote {args.output}')
    return 0
