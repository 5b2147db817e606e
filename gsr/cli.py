"""The ``gsr`` / ``basicsr`` command: ``gsr <subcommand> ...``; bad input ends with one ``gsr: error:`` line."""
import importlib
import sys
from typing import List, Optional

from gsr.utils.errors import GsrError
from gsr.utils.stop_request import STOPPED_EXIT_CODE, TrainingStopped

SUBCOMMANDS = {
    'train': ('gsr.train', 'train with BasicSR\'s train_pipeline (all BasicSR flags: -opt, --launcher, ...)'),
    'test': ('gsr.test', 'evaluate with BasicSR\'s test_pipeline'),
    'demo': ('gsr.tools.demo', 'train a small SRResNet with alignment on the embedded images and report'),
    'degrade': ('gsr.tools.degrade', 'write the eight benchmark degradation sets with a manifest'),
    'prepare': ('gsr.tools.prepare', 'prepare training data: `prepare subimages` and `prepare lmdb`'),
    'evaluate': ('gsr.tools.evaluate', 'models x datasets x eight settings -> PSNR/SSIM/LPIPS tables'),
    'infer': ('gsr.tools.infer', 'super-resolve a folder of images (tiled)'),
    'analyze': ('gsr.tools.analyze', 'analyses: ddr, freq, dct, cossim, variance, leakage, spectrum'),
    'export': ('gsr.tools.export', 'checkpoint -> ONNX (dynamic size), checked against PyTorch with onnxruntime'),
    'repro': ('gsr.tools.repro', 'the reproduction study: train variants x seeds, benchmark, test the claims'),
    'profile': ('gsr.tools.profile', 'parameters, FLOPs, inference time and peak memory of an option file\'s network'),
}


def usage() -> str:
    lines = ['usage: gsr <subcommand> [options] | gsr --version   (also installed as `basicsr`)', '', 'subcommands:']
    lines += [f'  {name:<10} {text}' for name, (_, text) in SUBCOMMANDS.items()]
    return '\n'.join(lines + ['', 'Run `gsr <subcommand> -h` for its options.'])


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ['--version']:
        from importlib.metadata import version
        print(f'gsr {version("gsr")} (BasicSR {version("basicsr")}, torch {version("torch")})')
        return 0
    if not argv or argv[0] in ('-h', '--help'):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f'gsr: error: unknown subcommand {name!r}\n\n{usage()}', file=sys.stderr)
        return 2
    try:
        import gsr  # noqa: F401  (compatibility fixes and registration before any subcommand)
        return importlib.import_module(SUBCOMMANDS[name][0]).main(rest) or 0
    except GsrError as e:
        print(f'gsr: error: {one_line(e)}', file=sys.stderr)
        return 2
    except TrainingStopped as e:  # a stop request (SIGTERM / SIGUSR1) honoured: progress saved, not an error
        print(f'gsr: stopped: {e}', file=sys.stderr)
        return STOPPED_EXIT_CODE
    except KeyboardInterrupt:  # Ctrl-C: what was written is complete (atomic writes, staged folders)
        print(f'gsr: interrupted: {name} stopped; files already written are complete, partial ones removed',
              file=sys.stderr)
        return 130


def one_line(error: GsrError) -> str:
    """The message of ``error``; for one re-raised by a DataLoader worker (whose text is the worker's traceback),
    the original message, which is its last line."""
    text = str(error).strip()
    if 'Original Traceback' not in text:
        return text
    last = text.splitlines()[-1]
    return last.split(': ', 1)[1] if last.startswith(('gsr.utils.errors.', 'GsrError')) else last


if __name__ == '__main__':
    sys.exit(main())
