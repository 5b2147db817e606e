"""Does SAVL's mutual-information suppression keep image content out of the degradation representation? Tiny
stage-A runs (``options/tiny/train_savl_a.yml``, seed 0, the embedded training photos) of four variants — the
ELBO's KL alone (beta 1e-3, lambda_mis 0), with the MI-suppression lane (lambda_mis 9, the file's), a deterministic
code without MI term ("no SAVL") and a
deterministic code with CLUB — then ``gsr analyze leakage`` (scene-ID and noise-level linear probes on the pooled
posterior mean) on the HR folder given (48-px LR crops, 6 per image, 5 noise levels).

    python benchmarks/savl_leakage.py --hr ../shared/data/Set14 [--iterations 600]
"""
import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from savl_variance import tiny_stage_a, trained  # noqa: E402

CLUB = {'type': 'CLUBConditional', 'num_feat': 16, 'latent_dim': 8, 'num_layers': 3}
VARIANTS = {
    'kl (beta 1e-3)': ({}, {'l_kl': {'lambda_mis': 0.0}}),
    'kl x10 (lambda_mis 9)': ({}, {'l_kl': {'lambda_mis': 9.0}}),
    'deterministic, no MI term': ({'posterior': 'deterministic'}, {'l_kl': None}),
    'deterministic + CLUB': ({'posterior': 'deterministic', 'network_club': CLUB},
                             {'l_kl': None, 'l_club': {'type': 'SAVLCLUBLoss', 'loss_weight': 1e-3}}),
}


def variant_options(changes, regularizers):
    opt = tiny_stage_a(**changes)
    losses = opt['train']['regularizers']
    for name, update in regularizers.items():
        if update is None:
            losses.pop(name)
        else:
            losses[name] = dict(losses.get(name, {}), **update)
    if 'network_club' in changes:
        opt['train']['optim_club'] = dict(opt['train']['optim_g'])
    return opt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--hr', required=True, help='HR folder for the probes (e.g. ../shared/data/Set14)')
    parser.add_argument('--iterations', type=int, default=600)
    args = parser.parse_args()
    from gsr.analysis.savl import leakage_probes, leakage_samples
    from gsr.archs.network_checkpoint import checkpoint_entries, load_network
    from gsr.tools.analyze import leakage_table
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = []
        for name, (changes, regularizers) in VARIANTS.items():
            start = time.time()
            model = trained(variant_options(changes, regularizers), args.iterations)
            path = os.path.join(tmp, name.replace(' ', '_').replace('/', '') + '.pth')
            torch.save(checkpoint_entries(model.get_bare_model(model.net_g), 'params'), path)
            checkpoints.append(path)
            print(f'{name}: {args.iterations} iterations in {time.time() - start:.0f} s, last losses '
                  f'{ {k: round(float(v), 5) for k, v in model.log_dict.items()} }', flush=True)
        samples = leakage_samples(args.hr, scale=4, noise_sigma=20, seed=0, crop=48, crops_per_image=6)
        nets = [load_network({'network_g': tiny_stage_a()['network_g']}, path, 'params', torch.device('cpu'))
                for path in checkpoints]
        rows = [[os.path.basename(path), *leakage_probes(net, samples), len({s.scene for s in samples})]
                for path, net in zip(checkpoints, nets)]
        print(leakage_table(rows))


if __name__ == '__main__':
    main()
