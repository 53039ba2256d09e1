"""Bad input at every public entry point: a specific exception whose message names the argument and the fix.

One table row per case: the entry point, the call, the exception type and a pattern the message
must match (it names the argument and says what to do). Covered: the kernels and sets, the
targets, ``strategies.get``, ``attach``, ``loss``, ``after_step``, ``report``,
``load_state_dict``, and the ``constrain`` command line (``experiments.cli.main`` in-process and
the console script in a subprocess: no traceback, non-zero exit). ``tests/constrain`` covers the
kernels and sets in more depth; the rows here make sure every entry point is in one table.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import strategies
from constrain import (
    Affine,
    L1Ball,
    NonNegative,
    Simplex,
    l1_ball_threshold,
    on_output,
    on_parameter,
    project_affine,
    project_l1_ball,
    project_nonnegative,
    project_simplex,
)
from strategies import NotAttachedError, UnsupportedConstraint
from strategies._penalty import InfeasibleStartError

ROOT = Path(__file__).resolve().parents[1]
X = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
NAN = torch.tensor([[1.0, math.nan]])
INF = torch.tensor([[1.0, math.inf]])


@dataclass(frozen=True)
class Case:
    call: Callable[[], object]
    error: type[BaseException]
    match: str  # regex on the message: the argument and the fix


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(3, 2)
        self.layer = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(torch.tanh(self.hidden(x)))


def attached(name: str = "lagrangian", constraints=None, **options):
    torch.manual_seed(0)  # Net's weights: some negative (a 2x2 layer has none with probability 1/16)
    strategy = strategies.get(name, **options)
    model = strategy.attach(Net(), constraints or [on_output(L1Ball(1.0))])
    return strategy, model


def loss_of(objective=None, outputs="model", sample_ids=None, name="lagrangian", constraints=None, **options):
    strategy, model = attached(name, constraints, **options)
    out = model(torch.randn(4, 3))
    objective = out.square().mean() if objective is None else objective
    return strategy.loss(objective, out if isinstance(outputs, str) else outputs, sample_ids)


def frozen_attach():
    net = Net()
    net.layer.weight.requires_grad_(False)
    return strategies.get("projected").attach(net, on_parameter("layer.weight", NonNegative()))


def load(state, name: str = "lagrangian", constraints=None):
    strategy, _ = attached(name, constraints)
    strategy.load_state_dict(state)


def after_step_with_nan_weight(name: str):
    strategy, model = attached(name, [on_parameter("layer.weight", L1Ball(1.0))])
    with torch.no_grad():
        model.layer.weight[0, 0] = math.nan
    strategy.after_step()


def report_of(outputs):
    strategy, _ = attached("projected")
    return strategy.report(outputs)


def not_attached(method: str):
    strategy = strategies.get("lagrangian")
    return {
        "loss": lambda: strategy.loss(torch.zeros(())),
        "after_step": strategy.after_step,
        "report": strategy.report,
        "load_state_dict": lambda: strategy.load_state_dict({"steps": 0}),
    }[method]()


def per_sample(**kw):
    return loss_of(name="lagrangian", multipliers="per-sample", num_samples=10, **kw)


def barrier_infeasible_outputs():
    strategy, model = attached("log-barrier", [on_output(L1Ball(1e-3))])
    out = model(torch.randn(4, 3) * 10)
    return strategy.loss(out.square().mean(), out)


def changed_output_width():
    strategy, model = attached("lagrangian", [on_output(NonNegative())])
    strategy.loss(torch.zeros(()), torch.randn(4, 2))
    strategy.after_step()
    return strategy.loss(torch.zeros(()), torch.randn(4, 3))


CASES: dict[str, Case] = {
    # ---- kernels and sets
    "kernel: x a list": Case(lambda: project_l1_ball([1.0, 2.0]), TypeError, r"x must be a torch\.Tensor.*torch\.as_tensor"),
    "kernel: x integer": Case(
        lambda: project_simplex(torch.ones(2, 3, dtype=torch.long)), TypeError, r"x has dtype torch\.int64.*\.float\(\)"
    ),
    "kernel: x NaN": Case(lambda: project_l1_ball(NAN), ValueError, r"x contains NaN or Inf.*nan_to_num"),
    "kernel: x Inf": Case(lambda: project_simplex(INF), ValueError, r"x contains NaN or Inf"),
    "kernel: orthant NaN": Case(lambda: project_nonnegative(NAN), ValueError, r"x contains NaN or Inf"),
    "kernel: threshold NaN": Case(lambda: l1_ball_threshold(NAN), ValueError, r"x contains NaN or Inf"),
    "kernel: x 0-d": Case(lambda: project_l1_ball(torch.tensor(1.0)), ValueError, r"x must have at least one dimension"),
    "kernel: dim out of range": Case(lambda: project_l1_ball(X, 1.0, dim=5), IndexError, r"dim=5 is out of range"),
    "kernel: radius 0": Case(lambda: project_l1_ball(X, 0.0), ValueError, r"radius must be positive.*radius=1\.0"),
    "kernel: radius negative": Case(lambda: project_simplex(X, -1.0), ValueError, r"radius must be positive"),
    "kernel: radius NaN": Case(lambda: project_l1_ball(X, math.nan), ValueError, r"radius must be positive and finite"),
    "kernel: radius a string": Case(lambda: project_l1_ball(X, "1"), TypeError, r"radius must be a positive float or a tensor"),
    "kernel: radius wrong shape": Case(
        lambda: project_l1_ball(X, torch.ones(3)), ValueError, r"radius of shape \(3,\) does not broadcast.*one radius per row"
    ),
    "kernel: radius tensor with 0": Case(
        lambda: project_l1_ball(X, torch.tensor([1.0, 0, 1, 1])), ValueError, r"every entry of radius must be positive"
    ),
    "kernel: affine x wrong width": Case(
        lambda: project_affine(X, torch.ones(1, 4), torch.ones(1)), ValueError, r"last dimension of x must be 4"
    ),
    "kernel: affine inconsistent": Case(
        lambda: project_affine(X, torch.ones(2, 5), torch.tensor([0.0, 1.0])),
        ValueError,
        r"A w = c is inconsistent.*Remove or fix",
    ),
    "set: L1Ball(0)": Case(lambda: L1Ball(0.0), ValueError, r"radius must be positive"),
    "set: Simplex(-1)": Case(lambda: Simplex(-1), ValueError, r"radius must be positive"),
    "set: L1Ball('a')": Case(lambda: L1Ball("a"), TypeError, r"radius must be a positive float"),
    "set: Affine inconsistent": Case(lambda: Affine([[1.0, 1.0], [1.0, 1.0]], [0.0, 1.0]), ValueError, r"inconsistent"),
    "set: Affine A NaN": Case(lambda: Affine([[1.0, math.nan]], [0.0]), ValueError, r"A contains NaN or Inf"),
    "set: Affine A 3-d": Case(lambda: Affine(torch.ones(2, 2, 2), [0.0, 0.0]), ValueError, r"A must be a matrix"),
    "set: Affine c wrong size": Case(
        lambda: Affine(torch.ones(2, 3), torch.ones(3)), ValueError, r"c must be a vector with one entry per row of A"
    ),
    "set: violation of a list": Case(lambda: L1Ball(1.0).violation([1.0]), TypeError, r"x must be a torch\.Tensor"),
    "target: on_output(None)": Case(lambda: on_output(None), TypeError, r"expected a constraint set such as L1Ball"),
    "target: on_parameter(3, ...)": Case(lambda: on_parameter(3, NonNegative()), TypeError, r"names must be a parameter name"),
    "target: on_parameter('', ...)": Case(lambda: on_parameter("", NonNegative()), ValueError, r"names must be a parameter name"),
    "target: row set on two names": Case(
        lambda: on_parameter(["a", "b"], L1Ball(1.0)), ValueError, r"only a flat-vector set such as Affine"
    ),
    # ---- strategies.get
    "get: unknown name": Case(
        lambda: strategies.get("lagrangain"), KeyError, r"unknown strategy 'lagrangain'\. Did you mean 'lagrangian'"
    ),
    "get: name not a string": Case(lambda: strategies.get(3), TypeError, r"strategy name must be a string"),
    "get: unknown option": Case(
        lambda: strategies.get("lagrangian", dual_rl=0.1), TypeError, r"no option 'dual_rl'\. Did you mean 'dual_lr'.*options are"
    ),
    "get: option of a wrong type": Case(
        lambda: strategies.get("lagrangian", dual_lr="0.1"), TypeError, r"option 'dual_lr'.*must be float"
    ),
    "get: option not in a Literal": Case(
        lambda: strategies.get("lagrangian", multipliers="each"),
        ValueError,
        r"option 'multipliers'.*one of 'shared', 'mean', 'per-sample'",
    ),
    "get: on_nonfinite unknown": Case(
        lambda: strategies.get("projected", on_nonfinite="ignore"), ValueError, r"option 'on_nonfinite'.*'raise', 'skip'"
    ),
    "get: negative step": Case(lambda: strategies.get("lagrangian", dual_lr=-1.0), ValueError, r"dual_lr must be positive"),
    "get: NaN option": Case(
        lambda: strategies.get("quadratic-penalty", weight=math.nan), ValueError, r"weight must be positive and finite"
    ),
    "get: zero weight": Case(lambda: strategies.get("log-barrier", weight=0.0), ValueError, r"weight must be positive"),
    "get: num_samples 0": Case(
        lambda: strategies.get("lagrangian", num_samples=0), ValueError, r"num_samples must be a positive int"
    ),
    "get: period 0": Case(lambda: strategies.get("l1-truncated", period=0), ValueError, r"period must be a positive number"),
    "get: eps out of range": Case(
        lambda: strategies.get("reparameterization", eps=0.7), ValueError, r"eps must be in \(0, 0\.5\)"
    ),
    "get: output_width 0": Case(
        lambda: strategies.get("slack-lagrangian", output_width=0), ValueError, r"output_width must be a positive int"
    ),
    # ---- attach
    "attach: model not a module": Case(
        lambda: strategies.get("projected").attach("net", on_output(L1Ball(1.0))), TypeError, r"model must be a torch\.nn\.Module"
    ),
    "attach: a bare set": Case(
        lambda: strategies.get("projected").attach(Net(), [L1Ball(1.0)]),
        TypeError,
        r"constraints\[0\] is a L1Ball; wrap the set with on_output",
    ),
    "attach: no constraints": Case(lambda: strategies.get("projected").attach(Net(), []), ValueError, r"constraints is empty"),
    "attach: constraints None": Case(
        lambda: strategies.get("projected").attach(Net(), None), TypeError, r"constraints must be a target or a list"
    ),
    "attach: unknown parameter": Case(
        lambda: strategies.get("projected").attach(Net(), on_parameter("layer.wieght", NonNegative())),
        KeyError,
        r"no parameter 'layer\.wieght'; its parameters are: .*layer\.weight",
    ),
    "attach: frozen parameter": Case(frozen_attach, ValueError, r"'layer\.weight' is frozen.*requires_grad_\(True\)"),
    "attach: A of the wrong width": Case(
        lambda: strategies.get("projected").attach(Net(), on_parameter("layer.weight", Affine(torch.ones(1, 5), [0.0]))),
        ValueError,
        r"A has 5 columns but the parameters layer\.weight: \(2, 2\) have 4",
    ),
    "attach: twice": Case(
        lambda: (lambda s: (s.attach(Net(), on_output(L1Ball(1.0))), s.attach(Net(), on_output(L1Ball(1.0)))))(
            strategies.get("projected")
        ),
        RuntimeError,
        r"already attached; build a new one",
    ),
    "attach: unsupported cell": Case(
        lambda: attached("log-barrier", [on_parameter("layer.weight", Affine.tie((2, 2), [[(0, 0), (1, 1)]]))]),
        UnsupportedConstraint,
        r"cannot enforce .*use quadratic-penalty",
    ),
    "attach: barrier from an infeasible start": Case(
        lambda: attached("log-barrier", [on_parameter("layer.weight", NonNegative())]),
        InfeasibleStartError,
        r"not strictly satisfied at attach.*extended-log-barrier",
    ),
    "attach: per-sample without num_samples": Case(
        lambda: attached("lagrangian", multipliers="per-sample"), ValueError, r"needs num_samples="
    ),
    "attach: gradient mode on a non-affine set": Case(
        lambda: attached("projected", [on_parameter("layer.weight", NonNegative())], mode="gradient"),
        ValueError,
        r"mode='gradient'.*Use mode='weights'",
    ),
    # ---- loss
    "loss: not attached": Case(lambda: not_attached("loss"), NotAttachedError, r"call model = strategy\.attach"),
    "loss: objective a vector": Case(
        lambda: loss_of(objective=torch.ones(3)), TypeError, r"objective must be a scalar tensor.*loss\.mean\(\)"
    ),
    "loss: objective a float": Case(lambda: loss_of(objective=1.0), TypeError, r"objective must be a scalar tensor"),
    "loss: objective NaN": Case(
        lambda: loss_of(objective=torch.tensor(math.nan)),
        FloatingPointError,
        r"not finite at step 0: the objective is nan.*on_nonfinite='skip'",
    ),
    "loss: outputs missing": Case(lambda: loss_of(outputs=None), ValueError, r"pass them, strategy\.loss\(objective, outputs\)"),
    "loss: outputs a list": Case(lambda: loss_of(outputs=[1.0]), TypeError, r"outputs must be the model's output tensor"),
    "loss: outputs integer": Case(
        lambda: loss_of(outputs=torch.ones(4, 2, dtype=torch.long)), TypeError, r"outputs has dtype torch\.int64.*floating-point"
    ),
    "loss: outputs empty": Case(
        lambda: loss_of(outputs=torch.empty(0, 2)), ValueError, r"outputs has shape \(0, 2\).*drop_last=True"
    ),
    "loss: outputs 0-d": Case(
        lambda: loss_of(outputs=torch.tensor(1.0)), ValueError, r"outputs has shape \(\).*\(batch, \.\.\.\)"
    ),
    "loss: outputs NaN": Case(
        lambda: loss_of(outputs=torch.full((4, 2), math.nan)),
        FloatingPointError,
        r"step 0: the outputs of output in L1Ball\(radius=1\.0\) contain NaN",
    ),
    "loss: penalty outputs Inf": Case(
        lambda: loss_of(outputs=torch.full((4, 2), math.inf), name="quadratic-penalty"),
        FloatingPointError,
        r"step 0.*output in L1Ball",
    ),
    "loss: sample_ids missing": Case(lambda: per_sample(), ValueError, r"pass the batch's indices.*sample_ids=idx"),
    "loss: sample_ids out of range": Case(
        lambda: per_sample(sample_ids=torch.arange(4) + 20), IndexError, r"sample_ids must lie in \[0, num_samples=10\)"
    ),
    "loss: sample_ids float": Case(
        lambda: per_sample(sample_ids=torch.arange(4.0)), TypeError, r"sample_ids must be integer indices"
    ),
    "loss: sample_ids wrong count": Case(
        lambda: per_sample(sample_ids=torch.arange(3)), ValueError, r"sample_ids has 3 entries but the batch has 4"
    ),
    "loss: barrier from infeasible outputs": Case(
        barrier_infeasible_outputs,
        InfeasibleStartError,
        r"not strictly satisfied at the first batch's outputs.*extended-log-barrier",
    ),
    "loss: output width changed": Case(
        changed_output_width, ValueError, r"multipliers .* have shape .*the model or the constraint changed"
    ),
    # ---- after_step
    "after_step: not attached": Case(lambda: not_attached("after_step"), NotAttachedError, r"strategy\.attach"),
    "after_step: NaN weights before a projection": Case(
        lambda: after_step_with_nan_weight("projected"),
        FloatingPointError,
        r"after optimizer step 0, layer\.weight.*clip_grad_norm_",
    ),
    "after_step: NaN weights before a shrink": Case(
        lambda: after_step_with_nan_weight("l1-proximal"), FloatingPointError, r"after optimizer step 0, layer\.weight"
    ),
    # ---- report
    "report: not attached": Case(lambda: not_attached("report"), NotAttachedError, r"strategy\.attach"),
    "report: outputs a list": Case(lambda: report_of([1.0]), TypeError, r"outputs must be the model's output tensor"),
    "report: outputs NaN": Case(
        lambda: report_of(torch.full((2, 2), math.nan)), FloatingPointError, r"outputs of output in L1Ball.*contain NaN or Inf"
    ),
    # ---- load_state_dict
    "load: not attached": Case(lambda: not_attached("load_state_dict"), NotAttachedError, r"strategy\.attach"),
    "load: None": Case(lambda: load(None), TypeError, r"state must be the dict returned by strategy\.state_dict\(\)"),
    "load: no steps": Case(lambda: load({}), KeyError, r"state has no 'steps'.*strategy\.state_dict\(\)"),
    "load: steps a string": Case(
        lambda: load({"steps": "x", "multipliers": {}}), ValueError, r"state\['steps'\] must be a non-negative int"
    ),
    "load: negative steps": Case(
        lambda: load({"steps": -1, "multipliers": {}}), ValueError, r"state\['steps'\] must be a non-negative int"
    ),
    "load: another strategy's state": Case(
        lambda: load({"steps": 1, "weight": 1.0}), KeyError, r"no 'multipliers'; it comes from another strategy"
    ),
    "load: NaN multiplier": Case(
        lambda: load({"steps": 1, "multipliers": {"0:inequality": torch.tensor([math.nan])}}),
        ValueError,
        r"multiplier '0:inequality' in the state is not finite",
    ),
    "load: negative multiplier": Case(
        lambda: load({"steps": 1, "multipliers": {"0:inequality": torch.tensor([-1.0])}}),
        ValueError,
        r"multiplier '0:inequality' in the state is negative",
    ),
    "load: multiplier of another constraint": Case(
        lambda: load({"steps": 1, "multipliers": {"3:inequality": torch.zeros(1)}}),
        KeyError,
        r"does not fit the 1 attached constraint",
    ),
    "load: penalty without weight": Case(
        lambda: load({"steps": 1}, "quadratic-penalty"), KeyError, r"lacks 'weight'.*another strategy"
    ),
    "load: penalty with extra entries": Case(
        lambda: load({"steps": 1, "weight": 1.0, "t": 2.0}, "quadratic-penalty"), KeyError, r"unknown entries 't'"
    ),
    "load: penalty weight negative": Case(
        lambda: load({"steps": 1, "weight": -1.0}, "quadratic-penalty"),
        ValueError,
        r"state\['weight'\] must be a positive finite number",
    ),
    "load: projected with entries": Case(
        lambda: load({"steps": 1, "weight": 1.0}, "projected"), KeyError, r"has no state entries \['weight'\]"
    ),
    "load: l1-cumulative without total": Case(
        lambda: load({"steps": 1}, "l1-cumulative", [on_parameter("layer.weight", L1Ball(1.0))]),
        KeyError,
        r"expected 'total' and 'applied'",
    ),
    "load: augmented penalty 0": Case(
        lambda: load({"steps": 1, "multipliers": {}, "penalty": 0.0}, "augmented-lagrangian"),
        ValueError,
        r"state\['penalty'\] must be a positive number",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_gets_a_specific_error_naming_the_argument_and_the_fix(case: Case) -> None:
    with pytest.raises(case.error) as info:
        case.call()
    message = info.value.args[0] if isinstance(info.value, KeyError) else str(info.value)
    assert re.search(case.match, message, re.S), f"message {message!r} does not match {case.match!r}"


def test_empty_inputs_give_empty_results() -> None:
    for kernel in (project_l1_ball, project_simplex, project_nonnegative):
        assert kernel(torch.empty(0, 5)).shape == (0, 5)
    assert project_l1_ball(torch.empty(3, 0)).shape == (3, 0)
    assert L1Ball(1.0).violation(torch.empty(0, 3)).shape == (0,)
    assert Affine(torch.ones(1, 3), [1.0]).project(torch.empty(0, 3)).shape == (0, 3)


# ----------------------------------------------------------------------------- the command line
def _cli_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    blocker = tmp / "a-file"
    blocker.write_text("not a folder")
    quick = [
        "study",
        "--quick",
        "--problems",
        "lin-weight-nonneg",
        "--strategies",
        "projected",
        "--steps",
        "2",
        "--workers",
        "1",
        "--no-progress",
    ]
    return {
        "no command": ([], r"the following arguments are required: COMMAND"),
        "unknown command": (["bogus"], r"invalid choice: 'bogus'"),
        "unknown option": (["list", "--bogus"], r"unrecognized arguments: --bogus"),
        "unknown problem": (
            ["study", "--problems", "nope", "--no-progress", "--no-figures", "--out", str(tmp)],
            r"unknown problem\(s\) nope; problems: lin-output-l1",
        ),
        "unknown strategy": (
            ["study", "--strategies", "nope", "--no-progress", "--no-figures", "--out", str(tmp)],
            r"no strategy entry matches nope; labels: ",
        ),
        "zero seeds": (["study", "--seeds", "0"], r"--seeds 0 would run nothing"),
        "negative steps": (["study", "--steps", "-1"], r"--steps: expected a positive integer"),
        "--out is a file": (
            [*quick, "--no-figures", "--out", str(blocker / "out")],
            r"--out .*a-file.out: cannot write there \(Not a directory\)",
        ),
        "--figures is a file": (
            [*quick, "--out", str(tmp / "out"), "--figures", str(blocker)],
            r"--figures .*a-file: cannot write there \(it is a file, not a folder\)",
        ),
    }


CLI_NAMES = [
    "no command",
    "unknown command",
    "unknown option",
    "unknown problem",
    "unknown strategy",
    "zero seeds",
    "negative steps",
    "--out is a file",
    "--figures is a file",
]


@pytest.mark.parametrize("name", CLI_NAMES)
def test_cli_main_prints_the_error_without_a_traceback_and_exits_non_zero(name: str, tmp_path, capsys) -> None:
    from experiments.cli import main

    argv, pattern = _cli_cases(tmp_path)[name]
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    err = capsys.readouterr().err
    assert status not in (0, None), err
    assert "Traceback" not in err and re.search(pattern, err, re.S), err


def _console() -> list[str]:
    script = shutil.which("constrain")
    return [script] if script else [sys.executable, "-m", "experiments.cli"]


@pytest.mark.parametrize("name", ["unknown problem", "--out is a file"])
def test_the_console_script_prints_the_error_without_a_traceback_and_exits_non_zero(name: str, tmp_path) -> None:
    argv, pattern = _cli_cases(tmp_path)[name]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([*_console(), *argv], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and re.search(pattern, done.stderr, re.S), done.stderr
