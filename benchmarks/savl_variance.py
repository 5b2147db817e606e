"""Does SAVL's inferred variance follow the true local noise after a short training? A tiny stage-A run
(``options/tiny/train_savl_a.yml``, GT 64, batch 4, the embedded training photos, gsr's second-order pipeline), and
``gsr analyze variance``'s measures on the embedded validation photos under the spatial protocol, at initialisation
and after ``iterations`` steps (same seed).

    python benchmarks/savl_variance.py [--iterations 600]
"""
import argparse
import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def tiny_stage_a(**changes):
    """``options/tiny/train_savl_a.yml`` on the embedded training photos as a runtime dict, with ``changes``."""
    import gsr  # noqa: F401
    from gsr.models.option_check import load_option_file
    from gsr.utils.default_data import materialize
    opt = load_option_file(os.path.join(REPO, 'options', 'tiny', 'train_savl_a.yml'))
    opt['datasets']['train']['dataroot_gt'] = materialize()['train']
    opt.update(is_train=True, dist=False, rank=0, world_size=1, **changes)
    return opt


def trained(opt, iterations: int, before=None):
    """The model of ``opt`` (seed 0) after ``iterations`` steps; ``before(model)`` is called at initialisation."""
    from basicsr.models import build_model
    from basicsr.utils import set_random_seed

    from gsr.data.paired_degradation_dataset import PairedDegradationDataset
    set_random_seed(0)
    model = build_model(opt)
    if before is not None:
        before(model)
    dataset = PairedDegradationDataset(dict(opt['datasets']['train'], phase='train', scale=4))
    loader = torch.utils.data.DataLoader(dataset, batch_size=opt['datasets']['train']['batch_size_per_gpu'],
                                         shuffle=True)
    it = 0
    while it < iterations:
        for data in loader:
            it += 1
            model.feed_data(data)
            model.optimize_parameters(it)
            if it == iterations:
                break
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iterations', type=int, default=600)
    parser.add_argument('--lambda-mis', type=float, default=0.0, help='SAVLKLLoss.lambda_mis (0: the ELBO\'s KL, as '
                        'in docs/SAVL.md\'s measurement; the tiny file\'s is 9)')
    args = parser.parse_args()
    from gsr.analysis.savl import spatial_samples, variance_statistics
    from gsr.tools.analyze import variance_table
    from gsr.utils.default_data import materialize

    def measure(net) -> str:
        return variance_table(variance_statistics(net, spatial_samples(materialize()['val'], scale=4, seed=0)))

    opt = tiny_stage_a()
    opt['train']['regularizers']['l_kl']['lambda_mis'] = args.lambda_mis
    model = trained(opt, args.iterations, lambda m: print('at initialisation\n' + measure(m.net_g)))
    print(f'after {args.iterations} iterations (last losses: {dict(model.log_dict)})\n' + measure(model.net_g))


if __name__ == '__main__':
    main()
