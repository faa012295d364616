"""The local runner leaves the process as it found it."""

from __future__ import annotations

import builtins
from types import SimpleNamespace

from kubeloop.local_run import run_pipeline


def test_a_run_that_leaks_an_indenting_print_leaves_print_as_it_was(tmp_path, capsys):
    # kfp.local swaps builtins.print for an indenting one around each task; tasks of a
    # ParallelFor run at once, their swaps interleave, and one can outlive the run. This
    # stands-in pipeline leaves such a print behind, as the interleaving does.
    original = builtins.print

    def leaky_pipeline() -> SimpleNamespace:
        inner = builtins.print

        def indented(*args, **kwargs):
            inner("    ", end="")
            return inner(*args, **kwargs)

        builtins.print = indented
        return SimpleNamespace(output=None)

    try:
        run_pipeline(leaky_pipeline, {}, work_dir=tmp_path)
        assert builtins.print is original
        print("summary")
        assert capsys.readouterr().out == "summary\n"
    finally:
        builtins.print = original
