"""Does SAVL's inferred variance follow the true local noise after a short training? A tiny stage-A run
(``options/tiny/train_savl_a.yml``, GT 64, batch 4, the embedded training photos, gsr's second-order pipeline), and
``gsr analyze variance``'s measures on the embedded validation photos under the spatial protocol, at initialisation
and after ``iterations`` steps (same seed).

    python benchmarks/savl_variance.py [--iterations 600]
"""
import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iterations', type=int, default=600)
    args = parser.parse_args()
    import gsr  # noqa: F401
    from basicsr.models import build_model
    from basicsr.utils import set_random_seed
    from gsr.data.paired_degradation_dataset import PairedDegradationDataset
    from gsr.tools.analyze import run_variance
    from gsr.utils.default_data import materialize
    from gsr.utils.option_check import load_option_file
    opt = load_option_file(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'options',
                                        'tiny', 'train_savl_a.yml'))
    folders = materialize()
    opt['datasets']['train']['dataroot_gt'] = folders['train']
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    set_random_seed(0)
    model = build_model(opt)
    dataset = PairedDegradationDataset(dict(opt['datasets']['train'], phase='train', scale=4))
    loader = torch.utils.data.DataLoader(dataset, batch_size=opt['datasets']['train']['batch_size_per_gpu'],
                                         shuffle=True)
    measure = argparse.Namespace(sets=None, hr=folders['val'], scale=4, seed=0)
    with tempfile.TemporaryDirectory() as out:
        print('at initialisation\n' + run_variance(model.net_g, None, measure, out))
        it = 0
        while it < args.iterations:
            for data in loader:
                it += 1
                model.feed_data(data)
                model.optimize_parameters(it)
                if it == args.iterations:
                    break
        print(f'after {it} iterations (last losses: {dict(model.log_dict)})\n' +
              run_variance(model.net_g, None, measure, out))


if __name__ == '__main__':
    main()
