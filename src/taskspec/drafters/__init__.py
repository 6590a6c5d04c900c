"""Drafters: everything that proposes tokens for the engine to verify (the protocol is engine/drafter.py).

    kinds.py        what `--drafter` accepts and build_drafter(spec, target)
    strategies.py   what `--compose` accepts: how a drafter set (drafter_set.py) becomes one drafter
    registry.py     the table both register in: names, arguments, options, help

The package imports nothing itself, so `taskspec --help` lists the kinds and strategies without loading torch.
"""
