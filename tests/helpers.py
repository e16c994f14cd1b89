"""Helpers shared by the test modules (the tests directory is on sys.path under pytest)."""

import numpy as np

from asprof.cli import main


def run_cli(capsys, *argv):
    """Run ``asprof ARGV`` in-process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_simulate(capsys, *args):
    return run_cli(capsys, "simulate", *args)


def make_torch_net(mx_model):
    """A float64 torch copy of a test MLP (``layers`` of biased nn.Linear, an unbiased
    ``lm_head``) with the same weights: the optimizer oracles train it side by side."""
    import torch

    net = torch.nn.Module()
    net.hidden = torch.nn.ModuleList(
        [torch.nn.Linear(lin.weight.shape[1], lin.weight.shape[0]).double() for lin in mx_model.layers])
    head = mx_model.lm_head.weight
    net.head = torch.nn.Linear(head.shape[1], head.shape[0], bias=False).double()
    with torch.no_grad():
        for tl, ml in zip(net.hidden, mx_model.layers):
            tl.weight.copy_(torch.tensor(np.array(ml.weight), dtype=torch.float64))
            tl.bias.copy_(torch.tensor(np.array(ml.bias), dtype=torch.float64))
        net.head.weight.copy_(torch.tensor(np.array(head), dtype=torch.float64))
    return net
