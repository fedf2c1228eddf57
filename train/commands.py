"""The trainer's commands for the ``actionstream`` command line (entry points of the ``actionstream.commands``
group). Importing this module is cheap; torch loads when a command runs."""

from __future__ import annotations


def train(argv: list[str]) -> int:
    """train a model from the zoo (needs the `train` extra)"""
    from train.cli import main

    return main(argv)


def evaluate(argv: list[str]) -> int:
    """evaluate a checkpoint on a list file or class folders (needs the `train` extra)"""
    from train.cli import main

    return main(argv)
