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
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np
from torch import nn

from gsr.analysis.representation import DdrClustering, ImageSet, cossim_curves, ddr_clustering, teacher_priors
from gsr.analysis.savl import (LEAKAGE_NOISE, FamilyVariance, leakage_probes, leakage_samples, spatial_samples,
                               variance_statistics)
from gsr.analysis.spectral import degradation_spectra, dominant_band_statistics, frequency_band_errors, spectral_spread
from gsr.archs.attached_arch import backbone_of
from gsr.archs.feature_tap import FeatureTap
from gsr.archs.lightbsr_arch import LightBSR
from gsr.archs.network_checkpoint import load_network
from gsr.data.blind_protocol import PROTOCOLS
from gsr.data.eval_protocol import settings_list
from gsr.models.option_check import load_option_file
from gsr.utils.checkpoint import atomic_write_text
from gsr.utils.errors import GsrError, check_at_least
from gsr.utils.execution import default_device
from gsr.utils.image_io import list_images
from gsr.utils.plotting import pyplot, save_figure
from gsr.utils.staging import claim_output_folder


def markdown(header: List[str], rows: List[List], digits: int = 4) -> str:
    def cell(v) -> str:
        return f'{v:.{digits}f}' if isinstance(v, float) else str(v)

    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    return '\n'.join(lines + ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]) + '\n'


def band_plot(curves: Dict[str, np.ndarray], xlabel: str, ylabel: str, path: str) -> None:
    fig, ax = pyplot().subplots(figsize=(5.5, 3.5))
    for name, curve in curves.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, marker='o', label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def write_table(args: argparse.Namespace, name: str, table: str) -> str:
    atomic_write_text(os.path.join(args.output, f'{name}.md'), table)
    return table


def image_set(args: argparse.Namespace, protocol: Optional[str] = None) -> ImageSet:
    """The images and settings the command line names (``--protocol`` unless ``protocol`` is given)."""
    return ImageSet(args.hr, args.scale, args.noise_sigma, args.seed, getattr(args, 'settings', ()),
                    protocol or getattr(args, 'protocol', 'eight'))


def networks(args: argparse.Namespace) -> Iterator[nn.Module]:
    """The networks of ``--checkpoints``, loaded one at a time."""
    opt = load_option_file(args.opt)
    for checkpoint in args.checkpoints:
        yield load_network(opt, checkpoint, args.param_key, default_device())


# ------------------------------------------------------------------------------------------------ the analyses
# Each analysis is a measurement (the library, run before the output folder exists: a mistake that shows only
# when images flow leaves nothing behind) and its writing (the table and the PNG).
def measure_ddr(args: argparse.Namespace, net: nn.Module) -> DdrClustering:
    idr = isinstance(backbone_of(net), LightBSR)  # LightBSR: its channel IDR, a teacher's with each setting's prior
    priors = None
    if idr and backbone_of(net).prior_channels:
        known = teacher_priors(load_option_file(args.opt), args.protocol)
        priors = {k: v.to(default_device()) for k, v in known.items()}
    return ddr_clustering(net, None if idr else FeatureTap(net, args.layer), image_set(args), args.crop,
                          args.crops_per_image, priors)


def write_ddr(args: argparse.Namespace, result: DdrClustering) -> str:
    fig, ax = pyplot().subplots(figsize=(5, 4.5))
    for setting in OrderedDict.fromkeys(result.labels):
        pts = result.embedded[np.array(result.labels) == setting]
        ax.scatter(pts[:, 0], pts[:, 1], s=12, label=setting)
    ax.set_title(f'DDR t-SNE, CHI = {result.chi:.2f} (features), {result.chi_embedded:.2f} (t-SNE)')
    ax.legend(fontsize=7, markerscale=1.5)
    save_figure(fig, os.path.join(args.output, 'ddr_tsne.png'))
    return write_table(args, 'ddr', markdown(
        ['samples', 'settings', 'feature dim', 'Calinski-Harabasz index (pooled features)',
         'Calinski-Harabasz index (2-D t-SNE)'],
        [[len(result.features), len(set(result.labels)), result.features.shape[1], result.chi, result.chi_embedded]]))


def measure_freq(args: argparse.Namespace, net: nn.Module) -> Dict[str, np.ndarray]:
    return frequency_band_errors(net, image_set(args, 'eight'), args.bands, args.tile)


def write_freq(args: argparse.Namespace, means: Dict[str, np.ndarray]) -> str:
    band_plot(means, 'radial frequency band (low -> high)', 'MAPE of FFT amplitude (%)',
              os.path.join(args.output, 'freq_mape.png'))
    return write_table(args, 'freq', markdown(['setting'] + [f'band {b + 1}' for b in range(args.bands)],
                                              [[s] + [float(v) for v in curve] for s, curve in means.items()]))


def measure_dct(args: argparse.Namespace, net: nn.Module) -> Tuple[Dict[str, float], Dict[str, np.ndarray]]:
    return dominant_band_statistics(net, FeatureTap(net, args.layer), image_set(args, 'eight'), args.bands)


def write_dct(args: argparse.Namespace, result: Tuple[Dict[str, float], Dict[str, np.ndarray]]) -> str:
    entropy, shares = result
    band_plot(shares, 'dominant DCT band (low -> high)', 'fraction of channels',
              os.path.join(args.output, 'dct_bands.png'))
    return write_table(args, 'dct', markdown(['setting', 'entropy of dominant DCT band (bits)'],
                                             [[s, value] for s, value in entropy.items()]))


def measure_cossim(args: argparse.Namespace, net: None) -> Dict[str, List[float]]:
    return cossim_curves(networks(args), args.layer, image_set(args))


def write_cossim(args: argparse.Namespace, curves: Dict[str, List[float]]) -> str:
    fig, ax = pyplot().subplots(figsize=(5.5, 3.5))
    for setting, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), values, marker='o', label=setting)
    ax.set_xticks(np.arange(1, len(args.checkpoints) + 1), [os.path.basename(c) for c in args.checkpoints],
                  rotation=30, fontsize=7)
    ax.set_ylabel('cosine(features of clean LR, degraded LR)')
    ax.legend(fontsize=7)
    save_figure(fig, os.path.join(args.output, 'cossim.png'))
    return write_table(args, 'cossim', markdown(
        ['checkpoint'] + list(curves),
        [[os.path.basename(c)] + [values[i] for values in curves.values()] for i, c in enumerate(args.checkpoints)],
        digits=6))


def measure_spectrum(args: argparse.Namespace, net: None) -> Dict[str, np.ndarray]:
    return degradation_spectra(image_set(args), args.bands)


def write_spectrum(args: argparse.Namespace, means: Dict[str, np.ndarray]) -> str:
    fig, ax = pyplot().subplots(figsize=(5.5, 3.5))
    for setting, curve in means.items():
        ax.semilogy(np.arange(1, args.bands + 1), curve, marker='o', label=setting)
    ax.set_xlabel('radial frequency band (low -> high)')
    ax.set_ylabel('power of (degraded LR - clean LR)')
    ax.legend(fontsize=7)
    save_figure(fig, os.path.join(args.output, 'spectrum.png'))
    return write_table(args, 'spectrum', markdown(
        ['degradation'] + [f'band {b + 1}' for b in range(args.bands)] + ['std / mean over bands'],
        [[s] + [float(v) for v in curve] + [spectral_spread(curve)] for s, curve in means.items()]))


def measure_variance(args: argparse.Namespace, net: nn.Module) -> Dict[str, FamilyVariance]:
    return variance_statistics(net, spatial_samples(args.hr, args.scale, args.seed, args.sets))


def variance_table(stats: Dict[str, FamilyVariance]) -> str:
    return markdown(['map family', 'images', 'corr(variance, noise map)', 'corr(variance, blur map)',
                     'R^2 of a linear read-out of the mean -> noise map'],
                    [[family, len(r.noise_correlations), float(np.mean(r.noise_correlations)),
                      float(np.mean(r.blur_correlations)), r.readout_r2] for family, r in stats.items()])


def write_variance(args: argparse.Namespace, stats: Dict[str, FamilyVariance]) -> str:
    for family, result in stats.items():
        sample, variance = result.example
        fig, axes = pyplot().subplots(1, 3, figsize=(9, 3))
        panels = (('LR', sample.lr), ('true noise sigma', sample.maps['noise_sigma']), ('inferred variance', variance))
        for ax, (title, img) in zip(axes, panels):
            ax.imshow(img, cmap=None if img.ndim == 3 else 'magma')
            ax.set_title(title, fontsize=8)
            ax.axis('off')
        save_figure(fig, os.path.join(args.output, f'variance_{family}_{sample.name}.png'))
    return write_table(args, 'variance', variance_table(stats))


def measure_leakage(args: argparse.Namespace, net: None) -> List[List]:
    """Per checkpoint: its name, the scene-ID accuracy, the noise-level accuracy and the number of scenes."""
    samples = leakage_samples(args.hr, args.scale, args.noise_sigma, args.seed, args.crop, args.crops_per_image)
    scenes = len({s.scene for s in samples})
    return [[name, *leakage_probes(net, samples), scenes] for name, net in zip(args.checkpoints, networks(args))]


def leakage_table(rows: List[List]) -> str:
    return markdown(['checkpoint', f'scene-ID accuracy (chance {1 / rows[0][3]:.2f}; lower: less content)',
                     f'noise-level accuracy (chance {1 / len(LEAKAGE_NOISE):.2f}; higher)'],
                    [row[:3] for row in rows])


def write_leakage(args: argparse.Namespace, rows: List[List]) -> str:
    return write_table(args, 'leakage', leakage_table(rows))


# ------------------------------------------------------------------------------------------------ the command line
def flags_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--hr', required=True, help='folder of HR images (e.g. datasets/Set14/HR)')
    parser.add_argument('--output', required=True, help='folder for the table and the PNG')
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--noise-sigma', type=float, default=20)
    parser.add_argument('--seed', type=int, default=0)


def flags_network(parser: argparse.ArgumentParser, several: bool = False) -> None:
    parser.add_argument('-opt', required=True, help='option file whose network_g describes the checkpoint')
    if several:
        parser.add_argument('--checkpoints', nargs='+', required=True, help='the checkpoints, in the order shown')
    else:
        parser.add_argument('--checkpoint', required=True)
    parser.add_argument('--param-key', default='params_ema', choices=['params_ema', 'params'])


def flags_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--settings', nargs='+', default=['all'])


def flags_bands(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--bands', type=int, default=8, help='number of frequency bands')


def flags_layer(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--layer', default='conv_last', help='the tapped layer (its input is analysed)')


def flags_crops(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--crop', type=int, default=48, help='LR crop size per sample (0: whole image)')
    parser.add_argument('--crops-per-image', type=int, default=4, help='crops per image and setting')


def flags_ddr(parser: argparse.ArgumentParser) -> None:
    flags_network(parser), flags_settings(parser), flags_layer(parser), flags_crops(parser)
    parser.add_argument('--protocol', default='eight', choices=['eight', *PROTOCOLS],
                        help='the eight settings or a blind protocol\'s known kernels')


def flags_freq(parser: argparse.ArgumentParser) -> None:
    flags_network(parser), flags_settings(parser), flags_bands(parser)
    parser.add_argument('--tile', type=int, default=0)


def flags_dct(parser: argparse.ArgumentParser) -> None:
    flags_network(parser), flags_settings(parser), flags_bands(parser), flags_layer(parser)


def flags_cossim(parser: argparse.ArgumentParser) -> None:
    flags_network(parser, several=True), flags_layer(parser)


def flags_variance(parser: argparse.ArgumentParser) -> None:
    flags_network(parser)
    parser.add_argument('--sets', help='a `gsr degrade --protocol spatial` folder (default: generated from --hr)')


def flags_leakage(parser: argparse.ArgumentParser) -> None:
    flags_network(parser, several=True), flags_crops(parser)


class Analysis(NamedTuple):
    help: str
    flags: Callable[[argparse.ArgumentParser], None]
    measure: Callable[[argparse.Namespace, Optional[nn.Module]], Any]  # the network of --checkpoint, if it has one
    write: Callable[[argparse.Namespace, Any], str]  # the table and the PNG; returns the table


ANALYSES: Dict[str, Analysis] = OrderedDict([
    ('ddr', Analysis('deep degradation representation: clustering by setting, t-SNE', flags_ddr, measure_ddr,
                     write_ddr)),
    ('freq', Analysis('FFT-amplitude error of SR per radial band and setting', flags_freq, measure_freq,
                      write_freq)),
    ('dct', Analysis('entropy of the tapped channels\' dominant DCT bands per setting', flags_dct, measure_dct,
                     write_dct)),
    ('cossim', Analysis('clean/degraded feature cosine per single degradation over checkpoints', flags_cossim,
                        measure_cossim, write_cossim)),
    ('variance', Analysis('SAVL: inferred variance against the true local degradation', flags_variance,
                          measure_variance, write_variance)),
    ('leakage', Analysis('SAVL: scene-ID and noise-level probes of the representation', flags_leakage,
                         measure_leakage, write_leakage)),
    ('spectrum', Analysis('power spectrum of each single degradation\'s residual (no network)', flags_bands,
                          measure_spectrum, write_spectrum)),
])


def parser() -> argparse.ArgumentParser:
    command = argparse.ArgumentParser(prog='gsr analyze', description=__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    analyses = command.add_subparsers(dest='analysis', required=True, metavar='{' + ','.join(ANALYSES) + '}')
    for name, analysis in ANALYSES.items():
        sub = analyses.add_parser(name, help=analysis.help, description=analysis.help)
        flags_common(sub)
        analysis.flags(sub)
    return command


def check(args: argparse.Namespace) -> Tuple[List[str], Optional[nn.Module]]:
    """Every value and input file; returns the inputs and the network of ``--checkpoint`` where there is one."""
    if hasattr(args, 'settings'):
        args.settings = settings_list(args.settings)
    for flag, minimum in (('--bands', 1), ('--scale', 1), ('--noise-sigma', 0), ('--crop', 0),
                          ('--crops-per-image', 1), ('--tile', 0)):
        name = flag[2:].replace('-', '_')
        if hasattr(args, name):
            check_at_least(flag, getattr(args, name), minimum)
    if args.analysis == 'ddr' and args.protocol == 'eight' and len(args.settings) < 2:
        raise GsrError('gsr analyze ddr clusters features by setting: give at least two --settings')
    list_images(args.hr)
    checkpoints = [args.checkpoint] if hasattr(args, 'checkpoint') else list(getattr(args, 'checkpoints', []))
    for checkpoint in checkpoints:
        if not os.path.isfile(checkpoint):
            raise GsrError(f'checkpoint not found: {checkpoint}')
    if not hasattr(args, 'checkpoint'):
        return ([args.opt] if hasattr(args, 'opt') else []) + checkpoints, None
    net = load_network(load_option_file(args.opt), args.checkpoint, args.param_key, default_device(), lr_alone=False)
    if isinstance(backbone_of(net), LightBSR) and args.analysis != 'ddr':
        raise GsrError(f'gsr analyze {args.analysis}: not defined for LightBSR networks (ddr analyses their IDR)')
    return [args.opt] + checkpoints, net


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    inputs, net = check(args)
    analysis = ANALYSES[args.analysis]
    result = analysis.measure(args, net)  # before the output folder exists (review case V3)
    claim_output_folder(args.output, [args.hr] + inputs)
    print(analysis.write(args, result))
    print(f'wrote {args.output}')
    return 0
